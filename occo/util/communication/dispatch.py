# SPDX-License-Identifier: Apache-2.0
"""What a consumer does with one message, whatever the backend.

:func:`handle` decodes the body, calls the processor and builds the RPC reply.
Both backends call it, so a processor sees the same behaviour on RabbitMQ and
in memory:

* the processor returned: the message is acknowledged; an RPC caller gets
  the result;
* the processor raised: the error is logged with its traceback; an RPC
  caller gets an :class:`~occo.util.exceptions.ApplicationError` and the
  message is acknowledged (it was answered); a one-way message is rejected
  without requeue (dead-lettered where configured), so it never loops;
* the body cannot be decoded safely, or exceeds ``max_message_size``: the
  message is rejected without requeue and logged; an RPC caller gets a
  :class:`~occo.util.exceptions.CriticalError` (400).

Log lines name the message id, content type and size, never the body: the
body may hold secrets.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

from . import codec

__all__ = ['Outcome', 'handle']

log = logging.getLogger(__name__)


class Outcome:
    """The result of handling one message.

    :param ack: ``True`` to acknowledge, ``False`` to reject without requeue.
    :param reply: the RPC reply body, or ``None`` when there is no caller.
    """

    __slots__ = ('ack', 'reply')

    def __init__(self, ack: bool, reply: Optional[bytes] = None) -> None:
        self.ack = ack
        self.reply = reply


def handle(processor: Callable[..., Any], pargs: Sequence[Any],
           pkwargs: Mapping[str, Any], body: bytes, content_type: Optional[str],
           wants_reply: bool, message_id: object = None,
           max_size: Optional[int] = None) -> Outcome:
    """Decode ``body``, run ``processor`` on it and build the outcome.

    :param wants_reply: ``True`` for an RPC request.
    :param message_id: shown in log lines to identify the message.
    :param max_size: bodies longer than this are rejected unprocessed.
    """
    try:
        if max_size is not None and len(body) > max_size:
            raise codec.MessageDecodeError(
                'exceeds max_message_size ({} bytes)'.format(max_size))
        message = codec.decode(body, content_type)
    except codec.MessageDecodeError as e:
        log.warning('Rejected message %s (content type %r, %d bytes): %s',
                    message_id, content_type, len(body), e)
        reply = codec.failure_reply(400, 'cannot decode request: {}'.format(e))
        return Outcome(False, reply if wants_reply else None)
    try:
        result = processor(message, *pargs, **pkwargs)
    except Exception as e:
        log.error('Processor failed on message %s: %s: %s', message_id,
                  type(e).__name__, e, exc_info=True)
        if not wants_reply:
            return Outcome(False)
        return Outcome(True, codec.error_reply(e, traceback.format_exc()))
    if not wants_reply:
        return Outcome(True)
    try:
        return Outcome(True, codec.encode_reply(result))
    except TypeError as e:
        log.error('Cannot send the result for message %s: %s', message_id, e)
        return Outcome(True, codec.error_reply(e))
