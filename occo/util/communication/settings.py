# SPDX-License-Identifier: Apache-2.0
"""The configuration keys, their defaults, and their validation.

Every backend reads its keyword arguments through :class:`Settings`, so a bad
value raises :class:`~occo.util.exceptions.ConfigurationError` naming the
key and its range, at construction, on every backend alike: a value outside
its range never reaches the broker, where it would fail later with a
misleading error.

======================== =============== =========================================
key                      default         meaning and range
======================== =============== =========================================
``protocol``             (required)      ``amqp`` or ``memory``
``url``                  ``None``        ``amqp://user:password@host:port/vhost``
                                         (``amqps://`` for TLS; ``%2F`` is
                                         ``/``; query: ``heartbeat``,
                                         ``connect_timeout``,
                                         ``connection_attempts``,
                                         ``retry_delay``), or a list of URLs;
                                         overrides the separate keys below.
                                         The user information runs to the
                                         last ``@``, so a password may hold
                                         ``/?#@``; write an ``@`` in the
                                         vhost or query as ``%40``
``host``                 ``localhost``   broker host, or a list of hosts
                                         (``name`` or ``name:port``) tried in
                                         turn
``host_selection``       ``ordered``     ``ordered`` or ``shuffle``: the order
                                         in which a list of hosts is tried
``port``                 ``5672``        broker port (``5671`` with ``ssl``):
                                         an integer from 1 to 65535
``vhost``                ``/``           virtual host (*)
``user``                 ``guest``       user name (*)
``password``             ``guest``       password (never logged nor shown)
``ssl``                  ``False``       connect with TLS
``ssl_options``          ``{}``          ``ca_file``, ``cert_file``,
                                         ``key_file``, ``server_hostname``,
                                         ``verify`` (default ``true``)
``exchange``             ``''``          exchange to publish to (``''``: the
                                         default exchange, routing key =
                                         queue) (*)
``routing_key``          ``queue``       where messages go (*)
``queue``                ``routing_key`` queue to consume (and declare) (*)
``durable``              ``True``        durable queues, persistent messages
``queue_type``           ``classic``     ``classic`` or ``quorum`` (replicated)
``delivery_limit``       ``None``        quorum queues: deliveries before a
                                         message is dead-lettered; 0 to
                                         2147483647
``heartbeat``            broker's        heartbeat interval in seconds; 0
                                         (off) to 65535
``prefetch_count``       ``100``         unacknowledged messages per
                                         consumer; 0 (no limit) to 65535
``rpc_timeout``          ``None``        seconds to wait for a reply (for
                                         ever); 0.001 to
                                         :data:`MAX_RPC_TIMEOUT`
``confirm``              ``True``        publisher confirms
``confirm_timeout``      ``60``          seconds ``close()`` waits for
                                         confirms; 0.001 to 315360000
``max_in_flight``        ``1000``        unconfirmed messages before
                                         ``push_message`` blocks; 1 to
                                         1000000
``max_in_flight_bytes``  ``32 MiB``      unconfirmed bytes of bodies
                                         before ``push_message`` blocks
                                         (one message always goes); 1 to
                                         2 GiB
``rpc_max_in_flight``    ``64``          RPC calls made with ``submit``
                                         or ``map`` in flight before
                                         ``submit`` blocks; 1 to 1000000
``connect_timeout``      ``10``          seconds to open a connection; 0.001
                                         to 315360000
``connection_attempts``  ``3``           tries per (re)connection; 1 to 1000
``retry_delay``          ``0.25``        seconds before the 2nd try, doubling;
                                         0 to 315360000
``dead_letter_exchange`` ``None``        where rejected messages go (*)
``max_message_size``     ``4 MiB``       larger messages are refused; 1 to
                                         536870912 (512 MiB, RabbitMQ's
                                         limit)
``max_workers``          ``1``           consumers: messages processed at
                                         once, each in a worker thread (1:
                                         in the consuming thread); 1 to 1000
``shutdown_grace``       ``30``          consumers with ``max_workers`` > 1:
                                         seconds a stop waits for running
                                         messages; 0 to 315360000
======================== =============== =========================================

(*) An AMQP short string: at most 255 bytes in UTF-8.

Integers may be given as integral floats (``5672.0``) or digit strings
(``'5672'``, as in URL queries), never as fractions (``5672.9``). Seconds
must be finite: ``inf`` and ``nan`` are refused, as is ``True`` for any
number.
"""

from __future__ import annotations

import math
import numbers
import re
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Any, Optional, cast, overload

from ..exceptions import ConfigurationError
from .amqp_frames import MAX_SHORTSTR

__all__ = ['Settings', 'Secret', 'check_timeout', 'MAX_RPC_TIMEOUT']

#: The longest ``rpc_timeout`` (and per-call ``timeout``), in seconds: ten
#: years. A request carries its timeout as the message ``expiration`` in
#: milliseconds, and RabbitMQ (3.10.8, measured) closes the channel with
#: ``406 PRECONDITION_FAILED - invalid expiration '315360000001':
#: {value_too_large,...}`` above 315360000000 ms.
MAX_RPC_TIMEOUT = 315360000.0

#: The most worker threads one consumer may run (``max_workers``).
MAX_WORKERS = 1000

#: The shortest timeout, in seconds: the expiration's unit, one millisecond.
_MIN_TIMEOUT = 0.001
#: The longest of the other waits, in seconds: as long as an RPC may wait,
#: and far below :data:`threading.TIMEOUT_MAX`, above which a wait overflows.
_MAX_WAIT = MAX_RPC_TIMEOUT

_MAX_PORT = 65535
_MAX_SHORT = 65535          # an AMQP short: prefetch_count, heartbeat
_MAX_LONG = 2 ** 31 - 1     # an AMQP signed long: x-delivery-limit
#: RabbitMQ's hard limit on a message body (``max_message_size``).
_MAX_BODY = 512 * 1024 * 1024

_SHORT_STRING_KEYS = ('vhost', 'user', 'exchange', 'queue', 'routing_key',
                      'dead_letter_exchange')
_URL_QUERY_KEYS = {'heartbeat', 'connect_timeout', 'connection_attempts',
                   'retry_delay'}
_SSL_OPTION_KEYS = {'ca_file', 'cert_file', 'key_file', 'server_hostname',
                    'verify'}

_SCHEME = re.compile(r'[a-z][a-z0-9+.-]*')
_MISSING = object()


class Secret:
    """A string kept out of ``repr``, ``str`` and ``vars``-based dumps.

    ``repr()`` and ``str()`` show ``***``; it has no ``__dict__``, so the
    value shows only where :meth:`reveal` is called.

    >>> secret = Secret('hunter2')
    >>> secret, str(secret), secret.reveal()
    (***, '***', 'hunter2')
    """

    __slots__ = ('_value',)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: pass it on, never show it."""
        return self._value

    def __repr__(self) -> str:
        return '***'

    __str__ = __repr__


class Settings:
    """Validated configuration of one communication object.

    :param config: the keyword arguments given to the role.
    :raises ConfigurationError: naming the key whose value is invalid, and
        the range of that key.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.protocol: Optional[str] = config.get('protocol')
        if config.get('url') is not None:
            config = dict(config, **_from_urls(config['url']))
        self.ssl = _flag(config, 'ssl', False)
        self.ssl_options = _ssl_options(config)
        self.port = _integer(config, 'port', 5671 if self.ssl else 5672,
                             1, _MAX_PORT)
        #: ``[(host, port), ...]``, in the order to try them.
        self.hosts = _hosts(config, self.port)
        self.host = self.hosts[0][0]
        self.host_selection = _choice(config, 'host_selection', 'ordered',
                                      ('ordered', 'shuffle'))
        self.vhost = _text(config, 'vhost', '/')
        self.user = _text(config, 'user', 'guest')
        self._password = Secret(_text(config, 'password', 'guest'))
        self.exchange = _text(config, 'exchange', '')
        self.queue = _text(config, 'queue', None)
        self.routing_key = _text(config, 'routing_key', None) or self.queue
        self.queue = self.queue or self.routing_key
        self.durable = _flag(config, 'durable', True)
        self.queue_type = _choice(config, 'queue_type', 'classic',
                                  ('classic', 'quorum'))
        if self.queue_type == 'quorum' and not self.durable:
            raise ConfigurationError(
                "configuration key 'durable' must be true for queue_type "
                "'quorum': quorum queues are always durable")
        self.delivery_limit = _integer(config, 'delivery_limit', None, 0,
                                       _MAX_LONG)
        self.heartbeat = _integer(config, 'heartbeat', None, 0, _MAX_SHORT)
        self.prefetch_count = _integer(config, 'prefetch_count', 100, 0,
                                       _MAX_SHORT)
        rpc_timeout = _get(config, 'rpc_timeout', None)
        self.rpc_timeout = None if rpc_timeout is None else check_timeout(
            rpc_timeout, "configuration key 'rpc_timeout'")
        self.confirm = _flag(config, 'confirm', True)
        self.confirm_timeout = _seconds(config, 'confirm_timeout', 60.0,
                                        _MIN_TIMEOUT)
        self.max_in_flight = _integer(config, 'max_in_flight', 1000, 1,
                                      1000000)
        self.max_in_flight_bytes = _integer(config, 'max_in_flight_bytes',
                                            32 * 1024 * 1024, 1, 2 ** 31)
        self.rpc_max_in_flight = _integer(config, 'rpc_max_in_flight', 64, 1,
                                          1000000)
        self.connect_timeout = _seconds(config, 'connect_timeout', 10.0,
                                        _MIN_TIMEOUT)
        self.connection_attempts = _integer(config, 'connection_attempts', 3,
                                            1, 1000)
        self.retry_delay = _seconds(config, 'retry_delay', 0.25, 0)
        self.dead_letter_exchange = _text(config, 'dead_letter_exchange', None)
        self.max_message_size = _integer(config, 'max_message_size',
                                         4 * 1024 * 1024, 1, _MAX_BODY)
        self.max_workers = _integer(config, 'max_workers', 1, 1, MAX_WORKERS)
        self.shutdown_grace = _seconds(config, 'shutdown_grace', 30.0, 0)

    def queue_arguments(self) -> Optional[dict[str, Any]]:
        """The ``x-`` arguments every declaration of the queue carries."""
        arguments: dict[str, Any] = {}
        if self.queue_type == 'quorum':
            arguments['x-queue-type'] = 'quorum'
        if self.delivery_limit is not None:
            arguments['x-delivery-limit'] = self.delivery_limit
        if self.dead_letter_exchange is not None:
            arguments['x-dead-letter-exchange'] = self.dead_letter_exchange
        return arguments or None

    def ssl_context(self) -> ssl.SSLContext:
        """The :class:`ssl.SSLContext` that ``ssl_options`` describe.

        Certificates are verified unless ``verify`` is false.
        """
        options = self.ssl_options
        context = ssl.create_default_context(cafile=options.get('ca_file'))
        if not options.get('verify', True):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if options.get('cert_file'):
            context.load_cert_chain(options['cert_file'], options.get('key_file'))
        return context

    @property
    def password(self) -> str:
        """The password; held in a :class:`Secret`, so ``repr``, ``str``
        and ``vars`` of these settings never show it."""
        return self._password.reveal()

    @property
    def endpoint(self) -> str:
        """Text naming user, host, port and vhost, for error messages."""
        return "user {!r} at {}, vhost {!r}".format(
            self.user, ', '.join('{}:{}'.format(*h) for h in self.hosts),
            self.vhost)

    def __repr__(self) -> str:
        return '<Settings {}://{}:***@{}:{}/{} queue={!r}>'.format(
            'amqps' if self.ssl else 'amqp', self.user, self.host, self.port,
            urllib.parse.quote(self.vhost, safe=''), self.queue)


def check_timeout(value: object, what: str) -> float:
    """``value`` as a timeout in seconds, checked against its range.

    One check for the ``rpc_timeout`` key and for the ``timeout`` argument
    of ``push_message``: a finite number from 0.001 (the unit of the
    message ``expiration``) to :data:`MAX_RPC_TIMEOUT`. ``None`` (wait for
    ever) is for the caller to handle.

    >>> check_timeout(2, 'timeout')
    2.0

    :param value: the timeout: a number, or a string holding one.
    :param what: how the error names the value (``'timeout'``).
    :returns: the timeout as a :class:`float`.
    :raises ConfigurationError: (a :class:`ValueError`) naming ``what`` and
        the range, when ``value`` is not such a number (``nan``, ``inf``,
        0, negative, too large, ``True``...).
    """
    return _check_seconds(value, what, _MIN_TIMEOUT, MAX_RPC_TIMEOUT)


def _check_seconds(value: object, what: str, minimum: float,
                   maximum: float) -> float:
    number = _as_float(value)
    # Written so that nan fails it too: every comparison with nan is False.
    if number is None or not minimum <= number <= maximum:
        raise ConfigurationError(
            '{} must be a finite number of seconds from {} to {}, got {!r}'
            .format(what, _show(minimum), _show(maximum), value))
    return number


def _as_float(value: object) -> Optional[float]:
    """``value`` as a finite float, or ``None`` when it is not one."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]  # checked here
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _as_int(value: object) -> Optional[int]:
    """``value`` as an int, or ``None`` when it is not a whole number.

    Digit strings (from URL queries) and integral floats are whole
    numbers; ``5672.9`` is not, rather than being truncated to 5672.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    number = _as_float(value)
    return int(number) if number is not None and number.is_integer() else None


def _show(number: float) -> str:
    """``number`` for an error message: 315360000, not 315360000.0."""
    return str(int(number)) if float(number).is_integer() else str(number)


def _check_port(value: object, what: str) -> int:
    port = _as_int(value)
    if port is None or not 1 <= port <= _MAX_PORT:
        raise ConfigurationError(
            '{} must be an integer from 1 to {}, got {!r}'.format(
                what, _MAX_PORT, value))
    return port


def _check_short_string(key: str, value: str) -> None:
    size = len(value.encode('utf-8', 'surrogatepass'))
    if size > MAX_SHORTSTR:
        raise ConfigurationError(
            'configuration key {!r} must be at most {} bytes in UTF-8 (an AMQP '
            'short string), got {} bytes'.format(key, MAX_SHORTSTR, size))


def _from_urls(urls: object) -> dict[str, Any]:
    """The keys an ``amqp://`` URL (or a list of them) stands for."""
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, (list, tuple)) or not urls:
        raise ConfigurationError(
            "configuration key 'url' must be a URL or a list of URLs")
    parsed = [_parse_url(url) for url in urls]
    keys = dict(parsed[0])
    keys['host'] = ['[{}]:{}'.format(p['host'], p['port']) if ':' in p['host']
                    else '{}:{}'.format(p['host'], p['port']) for p in parsed]
    return keys


def _parse_url(url: object) -> dict[str, Any]:
    """The keys of one URL; no error message shows any part of its user
    information, where the password is."""
    if not isinstance(url, str):
        raise ConfigurationError("configuration key 'url' must be a string")
    scheme, separator, rest = url.partition('://')
    scheme = scheme.lower()
    if scheme not in ('amqp', 'amqps') or not separator:
        # What precedes '://' is shown only if it is a scheme: it may be a
        # password when the scheme is missing ('user:pw@host/x://y').
        got = ', got scheme {!r}'.format(scheme) if separator and (
            _SCHEME.fullmatch(scheme)) else ''
        raise ConfigurationError(
            "configuration key 'url' must look like amqp://user:password@host:"
            "port/vhost" + got)
    # As in mask_secrets: the user information runs to the last '@', so a
    # password may hold an unescaped '/', '?', '#' or '@'.
    userinfo, at, rest = rest.rpartition('@')
    try:
        parts = urllib.parse.urlsplit('//' + rest)
    except ValueError as e:  # e.g. an unclosed '[' (no user information)
        raise ConfigurationError(
            "configuration key 'url' is not a valid URL: {}".format(e)) from None
    ssl = scheme == 'amqps'
    host, port = _url_host_port(parts.netloc, 5671 if ssl else 5672)
    keys: dict[str, Any] = {'host': host, 'port': port, 'ssl': ssl}
    if at:
        user, colon, password = userinfo.partition(':')
        if any(char in user for char in '/?#'):
            # 'amqp://host/vhost@x': the '@' belongs to the vhost or query.
            raise ConfigurationError(
                "configuration key 'url' has '/', '?' or '#' in its user name: "
                "write an '@' in the vhost or query as %40")
        keys['user'] = urllib.parse.unquote(user)
        if colon:
            keys['password'] = urllib.parse.unquote(password)
    if parts.path not in ('', '/'):
        keys['vhost'] = urllib.parse.unquote(parts.path[1:])
    for key, values in urllib.parse.parse_qs(parts.query).items():
        if key not in _URL_QUERY_KEYS:
            raise ConfigurationError(
                "configuration key 'url' has an unknown query parameter {!r} "
                "(known: {})".format(key, ', '.join(sorted(_URL_QUERY_KEYS))))
        keys[key] = values[-1]
    return keys


def _url_host_port(netloc: str, default_port: int) -> tuple[str, int]:
    """Host and port of a URL's ``host:port`` (``[::1]:port`` for IPv6)."""
    if netloc.startswith('['):
        host, bracket, port = netloc[1:].partition(']')
        if not bracket or (port and not port.startswith(':')):
            raise ConfigurationError(
                "configuration key 'url' has an invalid IPv6 host")
        port = port[1:]
    else:
        host, _, port = netloc.partition(':')
    host = host.lower()  # as urllib.parse.SplitResult.hostname
    if not host:
        raise ConfigurationError(
            "configuration key 'url' must look like amqp://user:password@host:"
            "port/vhost, and name a host")
    if not port:
        return host, default_port
    if not port.isdigit():
        raise ConfigurationError(
            "configuration key 'url' must have a port that is an integer from "
            "1 to {}".format(_MAX_PORT))
    return host, _check_port(port, "the port of configuration key 'url'")


def _hosts(config: Mapping[str, Any], default_port: int) -> list[tuple[str, int]]:
    hosts = _get(config, 'host', 'localhost')
    if isinstance(hosts, str):
        hosts = [hosts]
    if not isinstance(hosts, (list, tuple)) or not hosts:
        raise ConfigurationError(
            "configuration key 'host' must be a host name or a list of them")
    result = []
    for entry in hosts:
        if not isinstance(entry, str) or not entry:
            raise ConfigurationError(
                "configuration key 'host' has an invalid entry {!r}".format(entry))
        name, colon, port = entry.rpartition(':')
        if not colon or not port.isdigit() or (':' in name and not name.endswith(']')):
            name, port = entry, ''
        result.append((name.strip('[]'), _check_port(
            port, 'the port in {!r} of configuration key '
            "'host'".format(entry)) if port else default_port))
    return result


def _ssl_options(config: Mapping[str, Any]) -> dict[str, Any]:
    options = _get(config, 'ssl_options', {})
    if not isinstance(options, dict):
        raise ConfigurationError(
            "configuration key 'ssl_options' must be a mapping")
    unknown = set(options) - _SSL_OPTION_KEYS
    if unknown:
        raise ConfigurationError(
            "configuration key 'ssl_options' has unknown keys {} (known: {})"
            .format(', '.join(sorted(unknown)), ', '.join(sorted(_SSL_OPTION_KEYS))))
    return dict(options)


def _choice(config: Mapping[str, Any], key: str, default: str,
            choices: tuple[str, ...]) -> str:
    value = _get(config, key, default)
    if value not in choices:
        raise ConfigurationError(
            'configuration key {!r} must be one of {}, got {!r}'.format(
                key, ', '.join(choices), value))
    return cast(str, value)  # one of choices


def _get(config: Mapping[str, Any], key: str, default: Any) -> Any:
    value = config.get(key, _MISSING)
    return default if value is _MISSING or value is None else value


@overload
def _text(config: Mapping[str, Any], key: str, default: str) -> str: ...
@overload
def _text(config: Mapping[str, Any], key: str, default: None) -> Optional[str]: ...
def _text(config: Mapping[str, Any], key: str,
          default: Optional[str]) -> Optional[str]:
    value = _get(config, key, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(
            'configuration key {!r} must be a string, got {}'.format(
                key, type(value).__name__))
    if key in _SHORT_STRING_KEYS:
        _check_short_string(key, value)
    return value


def _flag(config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = _get(config, key, default)
    if not isinstance(value, bool):
        raise ConfigurationError(
            'configuration key {!r} must be true or false, got {!r}'.format(
                key, value))
    return value


@overload
def _integer(config: Mapping[str, Any], key: str, default: int,
             minimum: int, maximum: int) -> int: ...
@overload
def _integer(config: Mapping[str, Any], key: str, default: None,
             minimum: int, maximum: int) -> Optional[int]: ...
def _integer(config: Mapping[str, Any], key: str, default: Optional[int],
             minimum: int, maximum: int) -> Optional[int]:
    value = _get(config, key, default)
    if value is None:
        return None
    number = _as_int(value)
    if number is None or not minimum <= number <= maximum:
        raise ConfigurationError(
            'configuration key {!r} must be an integer from {} to {}, got {!r}'
            .format(key, minimum, maximum, value))
    return number


def _seconds(config: Mapping[str, Any], key: str, default: float,
             minimum: float) -> float:
    return _check_seconds(_get(config, key, default),
                          'configuration key {!r}'.format(key), minimum, _MAX_WAIT)
