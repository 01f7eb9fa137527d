# SPDX-License-Identifier: Apache-2.0
"""OCCO utilities: the error names, and helpers that locate configuration files.

The original components imported these from ``occo.util``::

    import occo.util as util
    cfg = config.DefaultYAMLConfig(util.rel_to_file('test.yaml'))
    raise util.ConfigurationError('protocol', 'Missing protocol specification')

so they are here too. Every error of :mod:`occo.util.exceptions` is
re-exported. Importing this package imports neither pika nor
:mod:`occo.util.communication`.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Union

from .exceptions import (ApplicationError, ClosedError, CommunicationError,
                         ConfigurationError, CriticalError, MessageDecodeError,
                         MissingConfigurationError, OccoError, RPCTimeoutError,
                         TransientError)

__all__ = [
    'OccoError', 'ConfigurationError', 'MissingConfigurationError',
    'CommunicationError', 'TransientError', 'CriticalError',
    'RPCTimeoutError', 'ApplicationError', 'ClosedError', 'MessageDecodeError',
    'rel_to_file', 'path_coalesce',
]

_PathName = Union[str, 'os.PathLike[str]']


def rel_to_file(path: _PathName, basefile: Optional[_PathName] = None,
                d_stack_frame: int = 0, relative_cwd: bool = False) -> str:
    """Resolve *path* against the directory of a file: by default, the
    module that calls this function.

    Tests locate their configuration next to themselves with it:
    ``rel_to_file('test.yaml')`` in ``tests/test_x.py`` is the absolute
    path of ``tests/test.yaml``, whatever the current directory.

    :param path: the path to resolve; an absolute path is returned as it is
        (normalized).
    :param basefile: the file whose directory *path* is relative to; by
        default the ``__file__`` of the calling module.
    :param d_stack_frame: without *basefile*, how many callers further up
        the stack to look: ``0`` is the direct caller, ``1`` its caller
        (for a helper that resolves paths for its own caller).
    :param relative_cwd: return the path relative to the current directory
        instead of absolute.
    :returns: the resolved path.
    :raises ValueError: when *basefile* is not given and the calling module
        has no ``__file__`` (an interactive session).
    """
    if basefile is None:
        caller = sys._getframe(d_stack_frame + 1)
        basefile = caller.f_globals.get('__file__')
        if basefile is None:
            raise ValueError('rel_to_file: the calling module has no '
                             '__file__; pass basefile')
    resolved = os.path.abspath(os.path.join(
        os.path.dirname(os.fspath(basefile)), os.fspath(path)))
    return os.path.relpath(resolved) if relative_cwd else resolved


def path_coalesce(*paths: Optional[_PathName]) -> Optional[str]:
    """Return the first of *paths* that exists, e.g. to choose a
    configuration file among default places.

    :param paths: candidate paths; ``None`` and ``''`` are skipped.
    :returns: the first existing path, or ``None`` when none exists.
    """
    for path in paths:
        if path and os.path.exists(path):
            return os.fspath(path)
    return None
