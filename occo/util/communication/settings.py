# SPDX-License-Identifier: Apache-2.0
"""The configuration keys, their defaults, and their validation.

Every backend reads its keyword arguments through :class:`Settings`, so a bad
value raises :class:`~occo.util.exceptions.ConfigurationError` naming the
key, at construction, on every backend alike.

======================== =============== =========================================
key                      default         meaning
======================== =============== =========================================
``protocol``             (required)      ``amqp`` or ``memory``
``url``                  ``None``        ``amqp://user:password@host:port/vhost``
                                         (``amqps://`` for TLS; ``%2F`` is
                                         ``/``; query: ``heartbeat``,
                                         ``connect_timeout``,
                                         ``connection_attempts``,
                                         ``retry_delay``), or a list of URLs;
                                         overrides the separate keys below
``host``                 ``localhost``   broker host, or a list of hosts
                                         (``name`` or ``name:port``) tried in
                                         turn
``host_selection``       ``ordered``     ``ordered`` or ``shuffle``: the order
                                         in which a list of hosts is tried
``port``                 ``5672``        broker port (``5671`` with ``ssl``)
``vhost``                ``/``           virtual host
``user``                 ``guest``       user name
``password``             ``guest``       password (never logged nor shown)
``ssl``                  ``False``       connect with TLS
``ssl_options``          ``{}``          ``ca_file``, ``cert_file``,
                                         ``key_file``, ``server_hostname``,
                                         ``verify`` (default ``true``)
``exchange``             ``''``          exchange to publish to (``''``: the
                                         default exchange, routing key = queue)
``routing_key``          ``queue``       where messages go
``queue``                ``routing_key``  queue to consume (and declare)
``durable``              ``True``        durable queues, persistent messages
``queue_type``           ``classic``     ``classic`` or ``quorum`` (replicated)
``delivery_limit``       ``None``        quorum queues: deliveries before a
                                         message is dead-lettered
``heartbeat``            broker's        heartbeat interval in seconds
``prefetch_count``       ``100``         unacknowledged messages per consumer
``rpc_timeout``          ``None``        seconds to wait for a reply (for ever)
``confirm``              ``True``        publisher confirms
``confirm_timeout``      ``60``          seconds ``close()`` waits for confirms
``max_in_flight``        ``1000``        unconfirmed messages before
                                         ``push_message`` blocks
``connect_timeout``      ``10``          seconds to open a connection
``connection_attempts``  ``3``           tries per (re)connection
``retry_delay``          ``0.25``        seconds before the 2nd try, doubling
``dead_letter_exchange`` ``None``        where rejected messages go
``max_message_size``     ``4 MiB``       larger messages are refused
======================== =============== =========================================
"""

from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Any, Optional, TypeVar, cast, overload

from ..exceptions import ConfigurationError

__all__ = ['Settings']

_URL_QUERY_KEYS = {'heartbeat', 'connect_timeout', 'connection_attempts',
                   'retry_delay'}
_SSL_OPTION_KEYS = {'ca_file', 'cert_file', 'key_file', 'server_hostname',
                    'verify'}

_MISSING = object()

_Number = TypeVar('_Number', int, float)


class Settings:
    """Validated configuration of one communication object.

    :param config: the keyword arguments given to the role.
    :raises ConfigurationError: naming the key whose value is invalid.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.protocol: Optional[str] = config.get('protocol')
        if config.get('url') is not None:
            config = dict(config, **_from_urls(config['url']))
        self.ssl = _flag(config, 'ssl', False)
        self.ssl_options = _ssl_options(config)
        self.port = _number(config, 'port', 5671 if self.ssl else 5672, int,
                            minimum=1)
        #: ``[(host, port), ...]``, in the order to try them.
        self.hosts = _hosts(config, self.port)
        self.host = self.hosts[0][0]
        self.host_selection = _choice(config, 'host_selection', 'ordered',
                                      ('ordered', 'shuffle'))
        self.vhost = _text(config, 'vhost', '/')
        self.user = _text(config, 'user', 'guest')
        self._password = _text(config, 'password', 'guest')
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
        self.delivery_limit = _number(config, 'delivery_limit', None, int,
                                      minimum=0)
        self.heartbeat = _number(config, 'heartbeat', None, int, minimum=0)
        self.prefetch_count = _number(config, 'prefetch_count', 100, int,
                                      minimum=0)
        self.rpc_timeout = _number(config, 'rpc_timeout', None, float,
                                   minimum=0.001)
        self.confirm = _flag(config, 'confirm', True)
        self.confirm_timeout = _number(config, 'confirm_timeout', 60.0, float,
                                       minimum=0.001)
        self.max_in_flight = _number(config, 'max_in_flight', 1000, int,
                                     minimum=1)
        self.connect_timeout = _number(config, 'connect_timeout', 10.0, float,
                                       minimum=0.001)
        self.connection_attempts = _number(config, 'connection_attempts', 3,
                                           int, minimum=1)
        self.retry_delay = _number(config, 'retry_delay', 0.25, float,
                                   minimum=0)
        self.dead_letter_exchange = _text(config, 'dead_letter_exchange', None)
        self.max_message_size = _number(config, 'max_message_size',
                                        4 * 1024 * 1024, int, minimum=1)

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
        """The password; kept out of ``repr`` and ``vars``-based dumps."""
        return self._password

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


def _from_urls(urls: object) -> dict[str, Any]:
    """The keys an ``amqp://`` URL (or a list of them) stands for."""
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, (list, tuple)) or not urls:
        raise ConfigurationError(
            "configuration key 'url' must be a URL or a list of URLs")
    parsed = [_parse_url(url) for url in urls]
    keys = dict(parsed[0])
    keys['host'] = ['{}:{}'.format(p['host'], p['port']) for p in parsed]
    return keys


def _parse_url(url: object) -> dict[str, Any]:
    if not isinstance(url, str):
        raise ConfigurationError("configuration key 'url' must be a string")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ('amqp', 'amqps') or not parts.hostname:
        raise ConfigurationError(
            "configuration key 'url' must look like amqp://user:password@host:"
            "port/vhost, got scheme {!r}".format(parts.scheme))
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(
            "configuration key 'url' has an invalid port") from None
    ssl = parts.scheme == 'amqps'
    keys: dict[str, Any] = {
        'host': parts.hostname, 'port': port or (5671 if ssl else 5672),
        'ssl': ssl}
    if parts.username is not None:
        keys['user'] = urllib.parse.unquote(parts.username)
    if parts.password is not None:
        keys['password'] = urllib.parse.unquote(parts.password)
    if parts.path not in ('', '/'):
        keys['vhost'] = urllib.parse.unquote(parts.path[1:])
    for key, values in urllib.parse.parse_qs(parts.query).items():
        if key not in _URL_QUERY_KEYS:
            raise ConfigurationError(
                "configuration key 'url' has an unknown query parameter {!r} "
                "(known: {})".format(key, ', '.join(sorted(_URL_QUERY_KEYS))))
        keys[key] = values[-1]
    return keys


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
        result.append((name.strip('[]'), int(port) if port else default_port))
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
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(
            'configuration key {!r} must be a string, got {}'.format(
                key, type(value).__name__))
    return value


def _flag(config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = _get(config, key, default)
    if not isinstance(value, bool):
        raise ConfigurationError(
            'configuration key {!r} must be true or false, got {!r}'.format(
                key, value))
    return value


@overload
def _number(config: Mapping[str, Any], key: str, default: _Number,
            kind: type[_Number], minimum: float) -> _Number: ...
@overload
def _number(config: Mapping[str, Any], key: str, default: None,
            kind: type[_Number], minimum: float) -> Optional[_Number]: ...
def _number(config: Mapping[str, Any], key: str, default: Optional[_Number],
            kind: type[_Number], minimum: float) -> Optional[_Number]:
    value = _get(config, key, default)
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigurationError(
            'configuration key {!r} must be a number, got {!r}'.format(
                key, value))
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            'configuration key {!r} must be a number, got {!r}'.format(
                key, value)) from None
    if number < minimum:
        raise ConfigurationError(
            'configuration key {!r} must be at least {}, got {!r}'.format(
                key, minimum, value))
    return number
