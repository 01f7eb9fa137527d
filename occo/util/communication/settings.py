# SPDX-License-Identifier: Apache-2.0
"""The configuration keys, their defaults, and their validation.

Every backend reads its keyword arguments through :class:`Settings`, so a bad
value raises :class:`~occo.util.exceptions.ConfigurationError` naming the
key, at construction, on every backend alike.

======================== ============= =========================================
key                      default       meaning
======================== ============= =========================================
``protocol``             (required)    ``amqp`` or ``memory``
``host``                 ``localhost`` broker host
``port``                 ``5672``      broker port
``vhost``                ``/``         virtual host
``user``                 ``guest``     user name
``password``             ``guest``     password (never logged nor shown)
``exchange``             ``''``        exchange to publish to (``''``: the
                                       default exchange, routing key = queue)
``routing_key``          ``queue``     where messages go
``queue``                ``routing_key`` queue to consume (and declare)
``durable``              ``True``      durable queues, persistent messages
``heartbeat``            broker's      heartbeat interval in seconds
``prefetch_count``       ``100``       unacknowledged messages per consumer
``rpc_timeout``          ``None``      seconds to wait for a reply (for ever)
``confirm``              ``True``      publisher confirms
``confirm_timeout``      ``60``        seconds ``close()`` waits for confirms
``max_in_flight``        ``1000``      unconfirmed messages before
                                       ``push_message`` blocks
``connect_timeout``      ``10``        seconds to open a connection
``connection_attempts``  ``3``         tries per (re)connection
``retry_delay``          ``0.25``      seconds before the 2nd try, doubling
``dead_letter_exchange`` ``None``      where rejected messages go
``max_message_size``     ``4 MiB``     larger messages are refused
======================== ============= =========================================
"""

from ..exceptions import ConfigurationError

__all__ = ['Settings']

_MISSING = object()


class Settings:
    """Validated configuration of one communication object.

    :param config: the keyword arguments given to the role.
    :raises ConfigurationError: naming the key whose value is invalid.
    """

    def __init__(self, config):
        self.protocol = config.get('protocol')
        self.host = _text(config, 'host', 'localhost')
        self.port = _number(config, 'port', 5672, int, minimum=1)
        self.vhost = _text(config, 'vhost', '/')
        self.user = _text(config, 'user', 'guest')
        self._password = _text(config, 'password', 'guest')
        self.exchange = _text(config, 'exchange', '')
        self.queue = _text(config, 'queue', None)
        self.routing_key = _text(config, 'routing_key', None) or self.queue
        self.queue = self.queue or self.routing_key
        self.durable = _flag(config, 'durable', True)
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

    @property
    def password(self):
        """The password; kept out of ``repr`` and ``vars``-based dumps."""
        return self._password

    @property
    def endpoint(self):
        """Text naming user, host, port and vhost, for error messages."""
        return "user {!r} at {}:{}, vhost {!r}".format(
            self.user, self.host, self.port, self.vhost)

    def __repr__(self):
        return '<Settings amqp://{}:***@{}:{}/{} queue={!r}>'.format(
            self.user, self.host, self.port, self.vhost, self.queue)


def _get(config, key, default):
    value = config.get(key, _MISSING)
    return default if value is _MISSING or value is None else value


def _text(config, key, default):
    value = _get(config, key, default)
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(
            'configuration key {!r} must be a string, got {}'.format(
                key, type(value).__name__))
    return value


def _flag(config, key, default):
    value = _get(config, key, default)
    if not isinstance(value, bool):
        raise ConfigurationError(
            'configuration key {!r} must be true or false, got {!r}'.format(
                key, value))
    return value


def _number(config, key, default, kind, minimum):
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
