# SPDX-License-Identifier: Apache-2.0
"""What a consumer does with one message, whatever the backend.

:func:`handle` decodes the body, calls the processor and builds the RPC reply.
Both backends call it, so a processor sees the same behaviour on RabbitMQ and
in memory. Whatever the body and properties hold, it returns an
:class:`Outcome` and never raises (except :exc:`KeyboardInterrupt` and
:exc:`SystemExit`): a message can neither kill the consumer nor come back
forever.

* the processor returned: the message is acknowledged; an RPC caller gets
  the result (a result that is not JSON-able: an
  :class:`~occo.util.exceptions.ApplicationError` naming the ``TypeError``);
* the processor raised: the error is logged with its traceback; an RPC
  caller gets an :class:`~occo.util.exceptions.ApplicationError` and the
  message is acknowledged (it was answered); a one-way message is rejected
  without requeue (dead-lettered where configured), so it never loops;
* the body exceeds ``max_message_size``: the message is rejected without
  requeue; an RPC caller gets a :class:`~occo.util.exceptions.CriticalError`
  (413);
* the body cannot be decoded safely (see :mod:`~.codec`: invalid, too deep,
  a YAML body whose aliases expand beyond ``max_message_size``, a content
  type that is unknown or not text): the message is rejected without
  requeue; an RPC caller gets a :class:`~occo.util.exceptions.CriticalError`
  (400);
* anything else fails (a bug, a result that breaks the JSON encoder): the
  message is rejected without requeue, logged with the traceback; an RPC
  caller gets an :class:`~occo.util.exceptions.ApplicationError` (500).

Each rejected message is logged once, naming its id (``%r``: ids may be
bytes), content type and size, never the body: the body may hold secrets.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

from . import codec, message_context
from .failures import CoalescedLog
from .message_context import MessageInfo
from ..exceptions import CriticalError

__all__ = ['Outcome', 'handle']

log = logging.getLogger(__name__)

#: What :func:`handle` lets through: the process is being stopped.
_FATAL = (KeyboardInterrupt, SystemExit)


class Outcome:
    """The result of handling one message.

    :param ack: ``True`` to acknowledge, ``False`` to reject without requeue.
    :param reply: the RPC reply body, or ``None`` when there is no caller.
    :param error: why handling failed, for telemetry: the exception's class
        name (``'ValueError'``, ``'MessageDecodeError'``); ``None`` when the
        processor returned.
    """

    __slots__ = ('ack', 'reply', 'error')

    def __init__(self, ack: bool, reply: Optional[bytes] = None,
                 error: Optional[str] = None) -> None:
        self.ack = ack
        self.reply = reply
        self.error = error


def handle(processor: Callable[..., Any], pargs: Sequence[Any],
           pkwargs: Mapping[str, Any], body: bytes, content_type: Optional[str],
           wants_reply: bool, message_id: object = None,
           max_size: Optional[int] = None,
           rejections: Optional[CoalescedLog] = None,
           info: Optional[MessageInfo] = None) -> Outcome:
    """Decode ``body``, run ``processor`` on it and build the outcome.

    Never raises, except :exc:`KeyboardInterrupt` and :exc:`SystemExit`.

    :param content_type: the ``content_type`` property as the backend got
        it: ``None``, or ``bytes`` when it was not UTF-8.
    :param wants_reply: ``True`` for an RPC request.
    :param message_id: shown in log lines (``%r``) to identify the message.
    :param max_size: bodies longer than this are rejected unprocessed (413),
        and YAML bodies that expand beyond it (400).
    :param rejections: where the consumer logs rejected messages, so that a
        flood of them makes one line per interval, with their number;
        ``None`` logs each.
    :param info: what :func:`~.message_context.current_message` returns
        while the processor runs.
    """
    delivery = _Delivery(body, content_type, wants_reply, message_id)
    if rejections is not None:
        delivery.warn = functools.partial(rejections.warning, 'rejected')
    try:
        return _handle(delivery, processor, pargs, pkwargs, max_size, info)
    except _FATAL:
        raise
    except BaseException as e:   # a bug must not kill the consumer either
        return _unexpected(delivery, e)


class _Delivery:
    """A message as it came, and how log lines name it."""

    __slots__ = ('body', 'content_type', 'wants_reply', 'message_id', 'warn')

    def __init__(self, body: bytes, content_type: Optional[str],
                 wants_reply: bool, message_id: object) -> None:
        self.body = body
        self.content_type = content_type
        self.wants_reply = wants_reply
        self.message_id = message_id
        #: Logs a warning about this message.
        self.warn: Callable[..., None] = log.warning

    def __str__(self) -> str:
        """``message 'id' (content type 'x', 12 bytes)``; never raises."""
        try:
            size = '{} bytes'.format(len(self.body))
        except Exception:
            size = 'size unknown'
        return 'message {} (content type {}, {})'.format(
            _shown(self.message_id), _shown(self.content_type), size)


def _shown(value: object) -> str:
    """``repr(value)``, at most 200 characters; never raises."""
    try:
        text = repr(value)
    except Exception:
        return '<unprintable {}>'.format(type(value).__name__)
    return text if len(text) <= 200 else text[:197] + '...'


def _described(exc: BaseException) -> str:
    return '{}: {}'.format(type(exc).__name__, codec.exception_text(exc))


def _handle(delivery: _Delivery, processor: Callable[..., Any],
            pargs: Sequence[Any], pkwargs: Mapping[str, Any],
            max_size: Optional[int], info: Optional[MessageInfo]) -> Outcome:
    try:
        if max_size is not None:
            codec.check_size(delivery.body, max_size)
        value = codec.decode(delivery.body, delivery.content_type, max_size=max_size)
    except CriticalError as e:   # too large
        return _refuse(delivery, e.http_code, str(e.reason), 'CriticalError')
    except codec.MessageDecodeError as e:
        return _refuse(delivery, 400, 'cannot decode request: {}'.format(e),
                       'MessageDecodeError')
    token = message_context.enter(info) if info is not None else None
    try:
        result = processor(value, *pargs, **pkwargs)
    except _FATAL:
        raise
    except BaseException as e:
        return _failed(delivery, e)
    finally:
        if token is not None:
            message_context.leave(token)
    if not delivery.wants_reply:
        return Outcome(True)
    try:
        return Outcome(True, codec.encode_reply(result))
    except TypeError as e:
        log.error('Cannot send the result for %s: %s', delivery, _described(e))
        return Outcome(True, codec.error_reply(e), 'TypeError')


def _refuse(delivery: _Delivery, http_code: int, reason: str, error: str) -> Outcome:
    """Reject a message that was not processed; tell an RPC caller why."""
    delivery.warn('Rejected %s: %s', delivery, reason)
    if not delivery.wants_reply:
        return Outcome(False, error=error)
    return Outcome(False, codec.failure_reply(http_code, reason), error)


def _failed(delivery: _Delivery, exc: BaseException) -> Outcome:
    """The processor raised: answer an RPC caller, reject a one-way message."""
    error = type(exc).__qualname__
    if not delivery.wants_reply:
        log.error('Rejected %s: the processor raised %s', delivery,
                  _described(exc), exc_info=exc)
        return Outcome(False, error=error)
    log.error('Processor failed on %s: %s', delivery, _described(exc), exc_info=exc)
    trace = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return Outcome(True, codec.error_reply(exc, trace), error)


def _unexpected(delivery: _Delivery, exc: BaseException) -> Outcome:
    """The last resort: reject, and answer with a 500 if that can be encoded."""
    with contextlib.suppress(Exception):   # a broken handler: the outcome matters more
        log.error('Rejected %s: unexpected %s', delivery, _described(exc), exc_info=exc)
    error = type(exc).__qualname__
    if not delivery.wants_reply:
        return Outcome(False, error=error)
    try:
        return Outcome(False, codec.error_reply(exc), error)
    except Exception:
        return Outcome(False, error=error)
