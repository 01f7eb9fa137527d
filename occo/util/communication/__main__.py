# SPDX-License-Identifier: Apache-2.0
"""Command line: ``python -m occo.util.communication demo [--config FILE]``."""

import argparse
import logging
import sys

from ..config import DefaultYAMLConfig
from ..exceptions import CommunicationError, ConfigurationError
from . import __version__
from .demo import run_demo

#: Exit codes: usage or configuration error, communication error.
EXIT_CONFIG, EXIT_COMMUNICATION = 2, 3


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m occo.util.communication',
        description='OCCO component communication.')
    parser.add_argument('--version', action='version', version=__version__)
    parser.add_argument('-v', '--verbose', action='store_true',
                        help='debug logging and tracebacks')
    commands = parser.add_subparsers(dest='command', required=True)
    demo = commands.add_parser('demo', help='run all three roles once')
    demo.add_argument('--config', metavar='FILE',
                      help='YAML file whose mqconfig section configures the '
                           'broker (default: the in-process memory backend)')
    demo.add_argument('--section', default='mqconfig',
                      help='section of the config file (default: mqconfig)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.CRITICAL,
                        format='%(levelname)s %(name)s: %(message)s')
    try:
        mqconfig = None
        if args.config:
            with open(args.config) as stream:
                mqconfig = getattr(DefaultYAMLConfig(stream), args.section, None)
            if not isinstance(mqconfig, dict):
                raise ConfigurationError('{} has no {!r} section'.format(
                    args.config, args.section))
        return run_demo(mqconfig)
    except (ConfigurationError, OSError) as e:
        return _fail(args, e, EXIT_CONFIG)
    except CommunicationError as e:
        return _fail(args, e, EXIT_COMMUNICATION)


def _fail(args, error, code):
    if args.verbose:
        logging.exception('failed')
    print('error: {}'.format(error), file=sys.stderr)
    return code


if __name__ == '__main__':
    sys.exit(main())
