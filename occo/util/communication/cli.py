# SPDX-License-Identifier: Apache-2.0
"""The ``occo-comm`` command line (also ``python -m occo.util.communication``).

Commands
--------

``occo-comm demo``
    A tour of the three roles, on the in-process ``memory`` backend unless a
    broker is configured (``--url``, ``--config`` or ``OCCO_AMQP_URL``).
``occo-comm push [MESSAGE ...]``
    Send each ``MESSAGE`` (or each line of standard input, empty lines
    skipped) to the queue, as a string; ``--as-json`` parses each one as JSON
    first. Returns once the broker confirmed every message.
``occo-comm rpc MESSAGE``
    Send ``MESSAGE`` as an RPC request and print the result (strings as they
    are, other values as JSON); ``--timeout S`` (default 10) bounds the wait.
``occo-comm consume``
    Print each message as it arrives, one a line (``--json``: one JSON object
    a line, with the fields ``n``, ``queue``, ``message`` and, when
    answering, ``result`` or ``error``). ``--echo`` sends each message back
    to its RPC caller; ``--processor module:function`` calls
    ``function(message)`` for every message (the current directory is
    importable) and sends its result, or its exception, to RPC callers.
    Without either, it only prints: an RPC caller gets a
    :class:`~occo.util.exceptions.CriticalError` (405) saying so, not a
    ``None`` that looks like an answer.
    ``--count N`` stops after N messages; messages received ahead go back to
    the queue. Ctrl-C and SIGTERM stop it cleanly (status 0). It writes
    ``consuming QUEUE ...`` on standard error once the queue is declared:
    from then on nothing sent to the queue is lost.
``occo-comm check``
    Connect, declare, publish and consume step by step and report each step
    (``dns``, ``tcp``, ``tls``, ``auth``, ``vhost``, ``declare``,
    ``publish``, ``consume``) as ``ok``, ``FAIL`` with the reason, or
    ``skip``; see :mod:`~occo.util.communication.diagnose`. With a queue
    (``--queue`` or the configuration's), it declares it like any producer,
    creating it if missing; without one, the ``declare`` step uses a
    temporary queue, so the check leaves nothing on the broker. The probe
    message goes through a temporary queue. ``--timeout S`` (default 5)
    bounds each step. Status 0 when no step failed, else 3.
``occo-comm bench``
    Throughput (``-n`` messages pushed, then consumed) and RPC latency
    (p50/p99 of ``--calls`` sequential calls against an echo consumer in the
    same process); see :mod:`~occo.util.communication.bench`.

Broker selection
----------------

The options every command shares (``--url``, ``--config``, ``--section``,
``--queue``, ``--json``, ``-v``) go before or after the command:
``occo-comm --url URL push x`` and ``occo-comm push --url URL x`` are the
same. The options of one command (``--timeout``, ``--count``...) go after it.

``--url URL`` (``amqp://user:password@host:port/vhost?heartbeat=30``, or
``amqps://`` for TLS) wins; then ``--config FILE`` (its ``--section``,
``mqconfig`` by default; with ``--url`` too, the URL replaces only the
connection keys of the section); then the ``OCCO_AMQP_URL`` environment
variable; then, for ``demo`` the ``memory`` backend, for the others
``amqp://guest:guest@127.0.0.1:5672/``. ``--queue NAME`` names the queue
(default: the section's ``queue``, else ``occo-comm``; for ``check``, a
temporary queue). Passwords are never printed.

Output and exit status
----------------------

``--json`` prints results as JSON for scripts. Errors are one line on
standard error, ``error: ...``. The command quiets pika's log (about 15 INFO
lines per connection) and the consumer's own report of a failed processor,
which ``consume`` prints itself; ``-v`` shows both, logs at DEBUG level and
shows tracebacks.

=== ==========================================================================
0   success
1   unexpected: an internal error, or the demo saw results it did not expect
2   usage or configuration error (bad option, config file, URL, processor)
3   communication error: broker unreachable, refused, timeout; a failed check
4   remote application error: the RPC processor raised
130 interrupted (Ctrl-C), except ``consume``, for which Ctrl-C is the way out
=== ==========================================================================
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal, Optional, TypeVar, overload

from ..config import DefaultYAMLConfig
from ..exceptions import ApplicationError, CommunicationError
from ..exceptions import ConfigurationError
from . import __version__, bench, diagnose
from .comm import AsynchronProducer, EventDrivenConsumer, Message, Response
from .comm import RPCProducer
from .demo import run_demo

__all__ = ['main', 'build_parser', 'broker_config', 'UsageError',
           'DEFAULT_URL', 'DEFAULT_QUEUE', 'ENV_URL']

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE = 0, 1, 2
EXIT_COMMUNICATION, EXIT_REMOTE, EXIT_INTERRUPTED = 3, 4, 130

#: The broker of every command but ``demo`` when nothing else is configured.
DEFAULT_URL = 'amqp://guest:guest@127.0.0.1:5672/'
#: The queue when neither ``--queue`` nor the configuration names one.
DEFAULT_QUEUE = 'occo-comm'
#: The environment variable holding the broker URL.
ENV_URL = 'OCCO_AMQP_URL'


#: What ``--processor`` or ``--echo`` selects: called with each message.
_Function = Callable[[Message], Message]
_Number = TypeVar('_Number', int, float)


class UsageError(Exception):
    """The command line cannot be carried out as given (exit status 2)."""


def main(argv: Optional[list[str]] = None) -> int:
    """Run the command line; return the exit status.

    :param argv: the arguments without the program name; ``None`` means
        ``sys.argv[1:]``.
    """
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        status: int = args.run(args)
        return status
    except (UsageError, ConfigurationError) as e:
        return _fail(args, e, EXIT_USAGE)
    except ApplicationError as e:
        if args.verbose and e.remote_traceback:
            sys.stderr.write(e.remote_traceback)
        # ApplicationError's own wording, 'Type: message': str() of a remote
        # builtin rebuilt as its class (a ValueError too) is the message alone.
        return _fail(args, 'remote {}'.format(ApplicationError.__str__(e)),
                     EXIT_REMOTE)
    except CommunicationError as e:
        return _fail(args, e, EXIT_COMMUNICATION)
    except KeyboardInterrupt:
        return _fail(args, 'interrupted', EXIT_INTERRUPTED)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    except Exception as e:
        return _fail(args, 'unexpected {}: {}'.format(type(e).__name__, e),
                     EXIT_UNEXPECTED)


def _fail(args: argparse.Namespace, error: object, code: int) -> int:
    """Report ``error`` in one line (after its traceback with ``-v``)."""
    if args.verbose:
        logging.getLogger(__name__).debug('failed', exc_info=True)
    print('error: {}'.format(error), file=sys.stderr)
    return code


class _OneLine(logging.Formatter):
    """``warning: message``, without tracebacks (those need ``-v``)."""

    def format(self, record: logging.LogRecord) -> str:
        return '{}: {}'.format(record.levelname.lower(), record.getMessage())


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if verbose:
        handler.setFormatter(logging.Formatter(
            '%(asctime)s %(levelname)s %(name)s: %(message)s'))
    else:
        handler.setFormatter(_OneLine())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        handlers=[handler], force=True)
    for name in ('pika', 'occo.util.communication.dispatch'):
        # pika repeats our errors; processor failures are reported by consume.
        logging.getLogger(name).setLevel(
            logging.NOTSET if verbose else logging.CRITICAL)


# -- the parser ---------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The :class:`argparse.ArgumentParser` of ``occo-comm``."""
    parser = argparse.ArgumentParser(
        prog='occo-comm', description='OCCO component communication: send, '
        'receive and diagnose messages over RabbitMQ.',
        parents=list(_shared_parsers(before_command=True)),
        epilog='The options shared by every command (--url, --config, '
        '--section, --queue, --json, -v) go before or after COMMAND; the '
        'options of one command go after it. Exit status: 0 ok, 2 usage or '
        'configuration error, 3 communication error, 4 remote application '
        'error.')
    parser.add_argument('--version', action='version',
                        version='%(prog)s ' + __version__)
    broker, queue, output = _shared_parsers(before_command=False)
    commands = parser.add_subparsers(dest='command', required=True,
                                     metavar='COMMAND')

    def command(name: str, run: Callable[[argparse.Namespace], int], help: str,
                parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help,
                                  parents=parents)
        sub.set_defaults(run=run)
        return sub

    command('demo', _cmd_demo, 'run a tour of the three roles (memory backend '
            'unless a broker is configured)', [broker])

    push = command('push', _cmd_push, 'send messages (arguments, or lines of '
                   'standard input)', [broker, queue, output])
    push.add_argument('message', nargs='*', metavar='MESSAGE')
    push.add_argument('--as-json', action='store_true',
                      help='parse each message as JSON before sending it')

    rpc = command('rpc', _cmd_rpc, 'send an RPC request and print the result',
                  [broker, queue, output])
    rpc.add_argument('message', metavar='MESSAGE')
    rpc.add_argument('--as-json', action='store_true',
                     help='parse MESSAGE as JSON before sending it')
    rpc.add_argument('--timeout', type=_positive(float), default=10.0,
                     metavar='S', help='seconds to wait for the reply '
                     '(default: 10)')

    consume = command('consume', _cmd_consume, 'print messages as they '
                      'arrive; --echo or --processor answers RPC requests',
                      [broker, queue, output])
    consume.add_argument('--count', type=_positive(int), metavar='N',
                         help='stop after N messages')
    answer = consume.add_mutually_exclusive_group()
    answer.add_argument('--echo', action='store_true',
                        help='answer RPC requests with the message')
    answer.add_argument('--processor', metavar='MODULE:FUNCTION',
                        help='answer RPC requests with FUNCTION(message)')

    check = command('check', _cmd_check, 'diagnose the connection to the '
                    'broker step by step', [broker, queue, output])
    check.add_argument('--timeout', type=_positive(float), default=5.0,
                       metavar='S', help='seconds per step (default: 5)')

    bench_cmd = command('bench', _cmd_bench, 'measure throughput and RPC latency',
                        [broker, queue, output])
    bench_cmd.add_argument('-n', '--messages', type=_positive(int), default=5000,
                           metavar='N', help='messages to push and consume '
                           '(default: 5000)')
    bench_cmd.add_argument('--calls', type=_positive(int), default=500,
                           metavar='M', help='sequential RPC calls (default: 500)')
    bench_cmd.add_argument('--size', type=_positive(int), default=64,
                           metavar='BYTES', help='message size (default: 64)')
    return parser


def _shared_parsers(before_command: bool) -> tuple[
        argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    """The options every command shares: broker (and ``-v``), queue, output.

    Each is accepted before the command (``occo-comm --url URL push x``) and
    after it (``occo-comm push --url URL x``). The main parser holds the
    defaults. A command's parser leaves an option it was not given unset
    (:data:`argparse.SUPPRESS`): argparse copies everything a command's parser
    sets over the main parser's values, so a default there would erase a value
    given before the command. Given on both sides, the one after wins.

    :param before_command: ``True`` for the main parser, ``False`` for the
        parents of the commands' parsers.
    """
    def default(value: object) -> object:
        return value if before_command else argparse.SUPPRESS

    broker = argparse.ArgumentParser(add_help=False)
    group = broker.add_argument_group('broker')
    group.add_argument('--url', default=default(None), metavar='URL',
                       help='amqp://user:password@host:port/vhost (amqps:// '
                       'for TLS); default: $' + ENV_URL)
    group.add_argument('--config', default=default(None), metavar='FILE',
                       help='YAML configuration file')
    group.add_argument('--section', default=default('mqconfig'),
                       metavar='NAME',
                       help='section of --config (default: mqconfig)')
    broker.add_argument('-v', '--verbose', action='store_true',
                        default=default(False),
                        help='debug logging and tracebacks')
    queue = argparse.ArgumentParser(add_help=False)
    queue.add_argument('--queue', default=default(None), metavar='NAME',
                       help='queue (default: the configured one, else {}; '
                       'check: a temporary one)'.format(DEFAULT_QUEUE))
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument('--json', action='store_true', default=default(False),
                        help='print results as JSON')
    return broker, queue, output


def _positive(kind: Callable[[str], _Number]) -> Callable[[str], _Number]:
    def convert(text: str) -> _Number:
        try:
            value = kind(text)
        except ValueError:
            value = kind('0')
        if not value > 0:
            raise argparse.ArgumentTypeError(
                'must be a positive number, got {!r}'.format(text))
        return value
    convert.__name__ = getattr(kind, '__name__', 'number')
    return convert


# -- configuration --------------------------------------------------------------
@overload
def broker_config(args: argparse.Namespace,
                  memory_default: Literal[False] = False,
                  default_queue: Optional[str] = DEFAULT_QUEUE) -> dict[str, Any]: ...
@overload
def broker_config(args: argparse.Namespace, memory_default: bool,
                  default_queue: Optional[str] = DEFAULT_QUEUE
                  ) -> Optional[dict[str, Any]]: ...
def broker_config(args: argparse.Namespace, memory_default: bool = False,
                  default_queue: Optional[str] = DEFAULT_QUEUE
                  ) -> Optional[dict[str, Any]]:
    """The library configuration the options and environment select.

    :param args: the parsed options (``url``, ``config``, ``section`` and,
        when present, ``queue``).
    :param memory_default: return ``None`` (the caller's memory backend)
        rather than :data:`DEFAULT_URL` when nothing is configured.
    :param default_queue: the queue when neither ``--queue`` nor the
        configuration names one; ``None`` leaves the configuration without a
        queue (``check`` then declares nothing that outlives it).
    :returns: a new mapping, or ``None``.
    :raises UsageError: when the configuration file cannot be read.
    :raises ConfigurationError: when it has no such section.
    """
    config = _read_section(args.config, args.section) if args.config else None
    url = args.url or (os.environ.get(ENV_URL) if config is None else None)
    if url:
        config = dict(config or {}, protocol='amqp', url=url)
    elif config is None:
        if memory_default:
            return None
        config = {'protocol': 'amqp', 'url': DEFAULT_URL}
    name = getattr(args, 'queue', None)
    if name:
        config.update(queue=name, routing_key=name)
    elif default_queue and not (config.get('queue') or config.get('routing_key')):
        config.update(queue=default_queue, routing_key=default_queue)
    return config


def _read_section(path: str, section: str) -> dict[str, Any]:
    try:
        with open(path, encoding='utf-8') as stream:
            values = DefaultYAMLConfig(stream).as_dict()
    except OSError as e:
        raise UsageError('cannot read {}: {}'.format(
            path, e.strerror or e)) from e
    if not isinstance(values.get(section), dict):
        raise ConfigurationError('{} has no section {!r} (a mapping of '
                                 'configuration keys)'.format(path, section))
    return dict(values[section])


def _queue_name(config: Mapping[str, Any]) -> Optional[str]:
    return config.get('queue') or config.get('routing_key')


# -- output -----------------------------------------------------------------
def _silence_stdout() -> None:
    """The reader went away (``| head``): send what is left to nowhere."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _print_line(line: str) -> None:
    """``print``, quiet once the reader of standard output went away."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        _silence_stdout()


def _json_default(value: object) -> object:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {'base64': base64.b64encode(bytes(value)).decode('ascii')}
    if isinstance(value, Response):
        return {'http_code': value.http_code, 'data': value.data}
    return repr(value)


def _to_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def _as_text(value: object) -> str:
    """A string as it is, bytes as ``b'...'``, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return repr(bytes(value))
    return _to_json(value)


def _parse(text: str, as_json: bool, where: str) -> Message:
    if not as_json:
        return text
    try:
        return json.loads(text)
    except ValueError as e:
        raise UsageError('{} is not JSON: {}'.format(where, e)) from e


# -- commands ---------------------------------------------------------------
def _cmd_demo(args: argparse.Namespace) -> int:
    if args.queue or args.json:
        raise UsageError('demo takes neither --queue nor --json: it prints '
                         'its tour, on a queue of its own')
    config = broker_config(args, memory_default=True)
    if config is None or config.get('protocol') != 'amqp':
        return run_demo(config, out=_print_line)
    queue = 'occo-demo-' + os.urandom(4).hex()
    try:
        return run_demo(config, out=_print_line, queue=queue)
    finally:
        diagnose.delete_queues(config, [queue])


def _cmd_push(args: argparse.Namespace) -> int:
    messages: Iterable[Message]
    if args.message:
        messages = [_parse(text, args.as_json, 'MESSAGE {}'.format(n))
                    for n, text in enumerate(args.message, 1)]
    else:
        messages = _stdin_messages(args.as_json)
    config = broker_config(args)
    pushed = 0
    with AsynchronProducer(**config) as producer:
        for message in messages:
            producer.push_message(message)
            pushed += 1
        producer.flush()
    queue = _queue_name(config)
    if args.json:
        print(_to_json({'pushed': pushed, 'queue': queue}))
    else:
        print('pushed {} message(s) to {!r}'.format(pushed, queue),
              file=sys.stderr)
    return EXIT_OK


def _stdin_messages(as_json: bool) -> Iterator[Message]:
    for number, line in enumerate(sys.stdin, 1):
        line = line.rstrip('\r\n')
        if line:
            yield _parse(line, as_json, 'line {} of standard input'.format(
                number))


def _cmd_rpc(args: argparse.Namespace) -> int:
    message = _parse(args.message, args.as_json, 'MESSAGE')
    with RPCProducer(**broker_config(args)) as rpc:
        result = rpc.push_message(message, timeout=args.timeout)
    print(_to_json(result) if args.json else _as_text(result))
    return EXIT_OK


def _cmd_consume(args: argparse.Namespace) -> int:
    function = _message_function(args)
    config = broker_config(args)
    cancel = threading.Event()
    printer = _Printer(function, _queue_name(config), args.json, args.count,
                       cancel)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: cancel.set())
    try:
        with EventDrivenConsumer(printer, cancel_event=cancel,
                                 **config) as consumer:
            print('consuming {!r} on {} (Ctrl-C to stop){}'.format(
                printer.queue, config['protocol'],
                '' if function else '; RPC requests are refused: --echo or '
                '--processor answers them'), file=sys.stderr, flush=True)
            consumer.start_consuming()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not printer.output_closed:
        print('consumed {} message(s)'.format(printer.received),
              file=sys.stderr)
    return EXIT_OK


def _message_function(args: argparse.Namespace) -> Optional[_Function]:
    """What answers RPC requests: ``--processor``, ``--echo``, or nothing."""
    if args.processor:
        return load_processor(args.processor)
    if args.echo:
        return lambda message: message
    return None


def load_processor(spec: str) -> _Function:
    """Import the function that ``module:function`` names.

    The current directory is searched first, as ``python -m`` does.

    :param spec: ``package.module:function`` (``function`` may be dotted:
        ``module:Class.method``).
    :returns: the callable.
    :raises UsageError: when it cannot be imported or is not callable.
    """
    module_name, colon, attribute = spec.partition(':')
    if not colon or not module_name or not attribute:
        raise UsageError('--processor {!r} must look like module:function'
                         .format(spec))
    if os.getcwd() not in sys.path and '' not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target = importlib.import_module(module_name)
    except Exception as e:  # the user's module may raise anything
        raise UsageError('--processor {!r}: cannot import {!r}: {}: {}'.format(
            spec, module_name, type(e).__name__, e)) from e
    for name in attribute.split('.'):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise UsageError('--processor {!r}: {!r} has no attribute {!r}'
                             .format(spec, module_name, attribute)) from None
    if not callable(target):
        raise UsageError('--processor {!r} is not callable'.format(spec))
    return target


class _OutputClosed(KeyboardInterrupt):
    """Standard output is gone: stop consuming, leave the message unacked."""


#: The status RPC callers get from ``consume`` without ``--echo`` or
#: ``--processor``: 4xx, so the caller's :class:`CriticalError` says that
#: asking again will not help.
_REFUSED_RPC_CODE = 405


def _refused_rpc(queue: Optional[str]) -> Response:
    """The answer of ``consume`` without ``--echo`` or ``--processor``.

    Such a consumer only prints messages, so it refuses an RPC request
    clearly rather than answering ``None``. A one-way message gets no answer:
    the return value of a processor is dropped for it, and the message is
    acknowledged like any processed one.

    :param queue: the queue consumed, named in the reason.
    :returns: a 4xx response: the caller gets a
        :class:`~occo.util.exceptions.CriticalError` with this reason.
    """
    return Response(_REFUSED_RPC_CODE, 'occo-comm consume on {!r} prints '
                    'messages and does not answer RPC requests: start it with '
                    '--echo or --processor MODULE:FUNCTION'.format(queue))


class _Printer:
    """The consumer's processor: answer with ``function``, print, count."""

    def __init__(self, function: Optional[_Function], queue: Optional[str],
                 as_json: bool, count: Optional[int],
                 cancel: threading.Event) -> None:
        self.function = function
        self.queue = queue
        self.as_json = as_json
        self.count = count
        self.cancel = cancel
        self.received = 0
        self.output_closed = False

    def __call__(self, message: Message) -> Message:
        self.received += 1
        record = {'n': self.received, 'queue': self.queue, 'message': message}
        try:
            if self.function is None:
                return _refused_rpc(self.queue)
            record['result'] = self.function(message)
            return record['result']
        except Exception as e:
            record['error'] = {'type': type(e).__name__, 'message': str(e)}
            raise
        finally:
            self._print(record)
            if self.count and self.received >= self.count:
                self.cancel.set()

    def _print(self, record: dict[str, Any]) -> None:
        try:
            if self.as_json:
                print(_to_json(record), flush=True)
            else:
                print(_as_text(record['message']), flush=True)
        except BrokenPipeError:
            self.output_closed = True
            self.cancel.set()
            _silence_stdout()
            raise _OutputClosed() from None
        if 'error' in record and not self.as_json:
            print('warning: processor failed on message {}: {}: {}'.format(
                record['n'], record['error']['type'],
                record['error']['message']), file=sys.stderr, flush=True)


def _cmd_check(args: argparse.Namespace) -> int:
    # Without a queue named, check declares only temporary queues: a check
    # must not leave a queue on the broker that nobody asked for.
    config = broker_config(args, default_queue=None)

    def report(step: diagnose.Step) -> None:
        if not args.json:
            print('{:<4} {:<8} {}'.format(*step), flush=True)

    steps = diagnose.run_check(config, timeout=args.timeout, report=report)
    ok = all(step.status != diagnose.FAIL for step in steps)
    if args.json:
        print(_to_json({'ok': ok, 'steps': [step._asdict() for step in steps]}))
    return EXIT_OK if ok else EXIT_COMMUNICATION


def _cmd_bench(args: argparse.Namespace) -> int:
    config = broker_config(args)
    progress = bench.Progress(sys.stderr)
    try:
        result = bench.run_bench(config, messages=args.messages,
                                 calls=args.calls, size=args.size,
                                 progress=progress)
    finally:
        progress.clear()
    if args.json:
        print(_to_json(result))
        return EXIT_OK
    for line in bench.summary(result):
        print(line)
    return EXIT_OK
