# SPDX-License-Identifier: Apache-2.0
"""Message metadata: headers a producer sends, and what a processor can see
of the message it is processing.

A producer adds headers to a message with ``push_message(message,
headers={...})``; a processor reads them, and the message's id, correlation
id, routing key and redelivered flag, through :func:`current_message`::

    def process(message):
        info = comm.current_message()
        tenant = info.headers.get('tenant')
        if info.redelivered:
            ...   # processed before, maybe: make it idempotent

Header values are what AMQP tables carry (as pika writes them): ``None``,
``bool``, ``int`` (64 bits), ``str``, ``bytes``, :class:`decimal.Decimal`
(at most 9 significant digits), :class:`datetime.datetime` (from 1970),
and lists and mappings of these (a tuple arrives as a list); not
``float``: send a ``Decimal`` or a ``str``. A ``datetime`` travels as an
AMQP timestamp: it arrives as an aware UTC ``datetime`` to the second (a
naive one is taken as UTC). Keys are ``str`` of at most 255 bytes in
UTF-8. Both backends give the processor an equal mapping (the
``memory`` backend copies it at ``push_message``).
"""

from __future__ import annotations

import contextvars
import datetime
import decimal
import types
from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

__all__ = ['MessageInfo', 'current_message', 'check_headers', 'NO_HEADERS']

#: The headers of a message sent without any.
NO_HEADERS: Mapping[str, Any] = types.MappingProxyType({})

_LONG_MIN, _LONG_MAX = -2 ** 63, 2 ** 63 - 1
_MAX_KEY = 255
_MAX_NESTING = 32
_SCALARS = (bool, bytes, type(None))
_INT32_MIN, _INT32_MAX = -2 ** 31, 2 ** 31 - 1
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class MessageInfo(NamedTuple):
    """What a processor can see of the message it is processing (read-only).

    Fields that the message did not carry are ``None`` (``headers``: an
    empty mapping).
    """

    #: The message's headers, a read-only mapping.
    headers: Mapping[str, Any]
    #: The message id the producer gave it, if any.
    message_id: Optional[object]
    #: The correlation id of an RPC request.
    correlation_id: Optional[object]
    #: The routing key it was published with.
    routing_key: Optional[str]
    #: Whether the broker delivered it before (to this consumer or another)
    #: without an acknowledgement: it may have been processed already.
    redelivered: bool


def message_info(headers: Optional[Mapping[str, Any]], message_id: object,
                 correlation_id: object, routing_key: Optional[str],
                 redelivered: bool) -> MessageInfo:
    """A :class:`MessageInfo` whose headers cannot be changed through it."""
    return MessageInfo(
        types.MappingProxyType(dict(headers)) if headers else NO_HEADERS,
        message_id, correlation_id, routing_key, bool(redelivered))


#: The message the processor on this thread (or task) is processing.
_current: contextvars.ContextVar[Optional[MessageInfo]] = contextvars.ContextVar(
    'occo_current_message', default=None)


def current_message() -> MessageInfo:
    """The message being processed, from inside a processor.

    Works in the processor's own thread (each worker of a consumer with
    ``max_workers`` sees its own message), not in threads the processor
    starts.

    :raises LookupError: outside a processor.
    """
    info = _current.get()
    if info is None:
        raise LookupError('current_message() is only available inside a '
                          'processor, while it processes a message')
    return info


def enter(info: MessageInfo) -> contextvars.Token[Optional[MessageInfo]]:
    """Make ``info`` the current message; give the token to :func:`leave`."""
    return _current.set(info)


def leave(token: contextvars.Token[Optional[MessageInfo]]) -> None:
    """Restore the current message that was before :func:`enter`."""
    _current.reset(token)


def check_headers(headers: Optional[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """Validate headers before anything is sent; return a copy.

    :returns: a new :class:`dict` (so changing the caller's mapping later
        changes nothing sent), or ``None`` for ``None`` or an empty mapping.
    :raises TypeError: naming the key whose value AMQP cannot carry.
    :raises ValueError: for a key longer than 255 bytes, or an ``int``
        beyond 64 bits.
    """
    if not headers:
        if headers is None or isinstance(headers, Mapping):
            return None
        raise TypeError('headers must be a mapping, not {}'.format(
            type(headers).__name__))
    if not isinstance(headers, Mapping):
        raise TypeError('headers must be a mapping, not {}'.format(
            type(headers).__name__))
    return _table(headers, 'headers', 0)


def _table(table: Mapping[Any, Any], where: str, depth: int) -> dict[str, Any]:
    copy: dict[str, Any] = {}
    for key, value in table.items():
        if not isinstance(key, str):
            raise TypeError('{}: a header key must be a str, not {!r}'.format(
                where, key))
        if len(_utf8(key, where)) > _MAX_KEY:
            raise ValueError('{}: header key {!r}... is longer than {} bytes'
                             .format(where, key[:40], _MAX_KEY))
        copy[key] = _value(value, '{}[{!r}]'.format(where, key), depth)
    return copy


def _value(value: Any, where: str, depth: int) -> Any:
    if depth >= _MAX_NESTING:
        raise ValueError('{}: headers nest deeper than {} levels'.format(
            where, _MAX_NESTING))
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, str):
        _utf8(value, where)
        return value
    if isinstance(value, datetime.datetime):   # as AMQP carries it
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        value = value.astimezone(datetime.timezone.utc).replace(microsecond=0)
        if value < _EPOCH:
            raise ValueError('{}: {} is before 1970, which an AMQP timestamp '
                             'cannot carry'.format(where, value))
        return value
    if isinstance(value, decimal.Decimal):
        return _decimal(value, where)
    if isinstance(value, int):
        if not _LONG_MIN <= value <= _LONG_MAX:
            raise ValueError('{}: {} does not fit in 64 bits'.format(where, value))
        return value
    if isinstance(value, (list, tuple)):
        return [_value(item, '{}[{}]'.format(where, n), depth + 1)
                for n, item in enumerate(value)]
    if isinstance(value, Mapping):
        return _table(value, where, depth + 1)
    hint = ' (send a Decimal or a str)' if isinstance(value, float) else ''
    raise TypeError('{}: a header value must be None, bool, int, str, bytes, '
                    'Decimal, datetime, or a list or mapping of these, not '
                    '{}{}'.format(where, type(value).__name__, hint))


def _decimal(value: decimal.Decimal, where: str) -> decimal.Decimal:
    """A decimal AMQP carries: a 32-bit integer and up to 255 decimals."""
    if value.is_finite():
        sign, digits, exponent = value.normalize().as_tuple()
        assert isinstance(exponent, int)  # finite
        scaled = int(''.join(map(str, digits))) * 10 ** max(exponent, 0)
        if _INT32_MIN <= (-scaled if sign else scaled) <= _INT32_MAX and -exponent <= 255:
            return value
    raise ValueError('{}: AMQP carries a Decimal as a 32-bit integer of '
                     'decimals, which {} does not fit'.format(where, value))


def _utf8(text: str, where: str) -> bytes:
    try:
        return text.encode('utf-8')
    except UnicodeEncodeError as e:
        raise ValueError('{}: {!r} is not UTF-8 text (a lone surrogate at '
                         'index {})'.format(where, text[:40], e.start)) from None
