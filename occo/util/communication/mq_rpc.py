# SPDX-License-Identifier: Apache-2.0
"""The RabbitMQ RPC producer: requests over direct reply-to, matched by
correlation id (see :mod:`~occo.util.communication.mq`)."""

from __future__ import annotations

import copy
import functools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, Optional

import pika
import pika.channel
import pika.frame
import pika.spec

from ..exceptions import ClosedError, CommunicationError, CriticalError
from ..exceptions import RPCTimeoutError, TransientError
from . import codec, telemetry
from .amqp_loop import AmqpLoop, Step, publish, run_steps
from .amqp_role import AmqpRole
from .comm import Message, RPCProducer
from .comm import register
from .failures import CoalescedLog, is_permanent
from .reply_slot import CallWindow, ReplySlot
from .message_context import check_headers
from .settings import check_timeout

#: The backend's logger: one name for its three roles.
log = logging.getLogger('occo.util.communication.mq')

__all__ = ['MQRPCProducer', 'DIRECT_REPLY_TO']

#: The pseudo queue of RabbitMQ's direct reply-to.
DIRECT_REPLY_TO = 'amq.rabbitmq.reply-to'

@register(RPCProducer, 'amqp')
class MQRPCProducer(AmqpRole, RPCProducer):
    """:class:`~.comm.RPCProducer` on RabbitMQ, shareable by threads.

    Requests carry an unguessable correlation id and RabbitMQ's direct
    reply-to address; with a timeout they also carry an ``expiration``, so a
    request nobody waits for any more is dropped from the queue instead of
    processed. Requests are not persistent: no caller waits for them across
    a broker restart. Only the configured ``queue`` is declared (on enter):
    a request whose routing key no queue takes fails at once with
    :class:`~occo.util.exceptions.CriticalError` 404. If the connection dies
    while a call waits, the call raises
    :class:`~occo.util.exceptions.TransientError` at once (the request may
    or may not have been processed) and the next call reconnects; if the
    broker closed the channel on the request (no such exchange, access
    refused), the call raises :class:`~occo.util.exceptions.CriticalError`
    with the broker's code and text.

    :meth:`submit` and :meth:`~.comm.RPCProducer.map` send requests the same way and complete
    each call's future from the same callbacks (see
    :class:`~.reply_slot.CallWindow`); with many calls in flight nobody
    borrows the socket, and the I/O thread reads the replies in batches.
    """

    _kind = 'rpc'

    def __init__(self, **config: Any) -> None:
        self._configure(config)
        self._exchange = self.settings.exchange
        #: Guards _waiting; held for a few statements, never while waiting,
        #: reconnecting or running pika code.
        self._lock = threading.Lock()
        #: Correlation id -> the slot of the call waiting for it (_lock).
        #: Looked up with a reply's correlation id, which may be missing.
        self._waiting: dict[Optional[str], ReplySlot] = {}
        #: close() has begun: no call registers any more (_lock).
        self._closing = False
        self.rpc_max_in_flight = self.settings.rpc_max_in_flight
        #: The calls of submit(): their bound, futures and deadlines; it
        #: removes expired calls from _waiting under _lock.
        self._calls = CallWindow(self.rpc_max_in_flight, self._name,
                                 self._lock, self._waiting)
        self._drop_log = CoalescedLog(log)

    def _setup(self, channel: pika.channel.Channel, done: Callable[[], None]) -> None:
        channel.add_on_return_callback(self._on_return)
        steps: list[Step] = [lambda done: channel.basic_consume(
            DIRECT_REPLY_TO, self._on_reply, auto_ack=True, callback=done)]
        steps += self._declare_steps(channel, [self.settings.queue])
        run_steps(steps, done)

    def push_message(self, message: Message, routing_key: Optional[str] = None,
                     timeout: Optional[float] = None,
                     headers: Optional[Mapping[str, Any]] = None) -> Message:
        """Send ``message`` and return the result; see
        :meth:`.comm.RPCProducer.push_message`.

        :raises ValueError: when ``timeout`` is not a finite number of
            seconds within :data:`~.settings.MAX_RPC_TIMEOUT`.
        """
        if telemetry.enabled:
            return self._traced_call(message, routing_key, timeout, headers)
        return self._call(message, routing_key, timeout, headers,
                          secrets.token_hex(16))

    def _traced_call(self, message: Message, routing_key: Optional[str],
                     timeout: Optional[float],
                     headers: Optional[Mapping[str, Any]]) -> Message:
        """:meth:`push_message` in a ``call`` span, the request in its
        ``send`` span (whose context the request's headers carry)."""
        self._check_open()
        target, correlation_id = self._target(routing_key), secrets.token_hex(16)
        peer = self._telemetry_peer()
        with telemetry.rpc_call(target, exchange=self._exchange,
                                correlation_id=correlation_id, **peer):
            with telemetry.publishing(target, headers, exchange=self._exchange,
                                      conversation_id=correlation_id,
                                      **peer) as traced:
                sent = self._send(message, target, timeout, traced, correlation_id)
            return self._result(*sent)

    def _call(self, message: Message, routing_key: Optional[str],
              timeout: Optional[float], headers: Optional[Mapping[str, Any]],
              correlation_id: str) -> Message:
        return self._result(*self._send(message, routing_key, timeout, headers,
                                        correlation_id))

    def _send(self, message: Message, routing_key: Optional[str],
              timeout: Optional[float], headers: Optional[Mapping[str, Any]],
              correlation_id: str,
              ) -> tuple[AmqpLoop, ReplySlot, str, Optional[float], str]:
        """Send the request of a call that waits for its reply."""
        body, routing_key, timeout, properties = self._request(
            message, routing_key, timeout, headers, correlation_id)
        loop, slot = self._register(correlation_id)
        try:
            loop.run_now(functools.partial(self._publish, routing_key, body,
                                           properties))
        except BaseException:
            with self._lock:
                self._waiting.pop(correlation_id, None)
            raise
        return loop, slot, routing_key, timeout, correlation_id

    def _result(self, loop: AmqpLoop, slot: ReplySlot, routing_key: str,
                timeout: Optional[float], correlation_id: str) -> Message:
        """Wait for the reply of a sent request, and return its result."""
        try:
            if not _wait_driving(loop, slot, timeout):
                raise RPCTimeoutError(reason='no reply from {!r} within {} s'
                                      .format(routing_key, timeout))
        finally:
            with self._lock:
                self._waiting.pop(correlation_id, None)
        return slot.result()

    def submit(self, message: Message, routing_key: Optional[str] = None,
               timeout: Optional[float] = None,
               headers: Optional[Mapping[str, Any]] = None) -> Future[Message]:
        """submit(message, routing_key=None, timeout=None, headers=None)

        Send ``message`` and return a future of its result; see
        :meth:`.comm.RPCProducer.submit`.

        The request goes out as ``push_message``'s does, written by the
        calling thread when the connection is free, else by the thread
        that holds it, in its next batch. A lost connection fails the
        future at once, and the next call reconnects.

        :rtype: concurrent.futures.Future
        """
        correlation_id = secrets.token_hex(16)
        if telemetry.enabled:   # a send span: no caller waits for a call span
            self._check_open()
            target = self._target(routing_key)
            with telemetry.publishing(target, headers, exchange=self._exchange,
                                      conversation_id=correlation_id,
                                      **self._telemetry_peer()) as traced:
                return self._submit(message, target, timeout, traced, correlation_id)
        return self._submit(message, routing_key, timeout, headers, correlation_id)

    def _submit(self, message: Message, routing_key: Optional[str],
                timeout: Optional[float], headers: Optional[Mapping[str, Any]],
                correlation_id: str) -> Future[Message]:
        body, routing_key, timeout, properties = self._request(
            message, routing_key, timeout, headers, correlation_id)
        future: Future[Message] = Future()
        future.set_running_or_notify_cancel()   # a sent request stays sent
        self._calls.enter()
        try:
            loop, slot = self._register(correlation_id, functools.partial(
                self._calls.complete, future))
        except BaseException:
            self._calls.leave()
            raise
        if timeout is not None:
            self._calls.expire_at(time.monotonic() + timeout, correlation_id,
                                  slot, routing_key, timeout)
        try:
            loop.run_now(functools.partial(self._publish, routing_key, body,
                                           properties))
        except CommunicationError as e:
            # The loop died: _on_lost failed the slot already, normally.
            with self._lock:
                if self._waiting.get(correlation_id) is slot:
                    del self._waiting[correlation_id]
            slot.settle(error=e)
        return future

    def _request(self, message: Message, routing_key: Optional[str],
                 timeout: Optional[float], headers: Optional[Mapping[str, Any]],
                 correlation_id: str,
                 ) -> tuple[bytes, str, Optional[float], pika.BasicProperties]:
        """Check and encode one call: body, routing key, timeout and the
        properties, or raise what the caller did wrong before anything is
        sent."""
        self._check_open()
        body, content_type = codec.encode(message)
        self._check_size(body)
        timeout = (self.settings.rpc_timeout if timeout is None
                   else check_timeout(timeout, 'timeout'))
        routing_key = self._target(routing_key)
        properties = pika.BasicProperties(
            content_type=content_type, correlation_id=correlation_id,
            reply_to=DIRECT_REPLY_TO, delivery_mode=1,
            expiration=None if timeout is None else str(max(1, int(timeout * 1000))),
            headers=None if headers is None else check_headers(headers))
        return body, routing_key, timeout, properties

    def _register(self, correlation_id: str,
                  on_settle: Optional[Callable[[ReplySlot], object]] = None,
                  ) -> tuple[AmqpLoop, ReplySlot]:
        """A slot for the call, on an open loop (reconnecting if needed).

        The slot is registered only while its loop is alive, under
        ``_lock``, which :meth:`_on_lost` takes too: so either the loop's
        death fails the slot, or the slot is never registered on a dead loop.
        Likewise with ``close()``, which sets ``_closing`` under ``_lock``
        before it fails the waiting calls.

        :raises ClosedError: when ``close()`` has begun.
        """
        while True:
            if self._closing:   # stale reads are caught below, under _lock
                raise ClosedError('{} is closed'.format(type(self).__name__))
            loop = self._open_loop()
            slot = ReplySlot(loop, on_settle)
            with self._lock:
                if self._closing:
                    raise ClosedError('{} is closed'.format(type(self).__name__))
                if loop.alive:
                    self._waiting[correlation_id] = slot
                    return loop, slot

    def _publish(self, routing_key: str, body: bytes,
                 properties: pika.BasicProperties,
                 channel: pika.channel.Channel) -> None:
        publish(channel, self._exchange, routing_key, body, properties,
                mandatory=True)

    def _on_reply(self, channel: pika.channel.Channel,
                  method: pika.spec.Basic.Deliver,
                  properties: pika.BasicProperties, body: bytes) -> None:
        with self._lock:
            slot = self._waiting.pop(properties.correlation_id, None)
        if slot is None:
            self._drop_log.warning(
                'unknown', 'Dropped a reply for unknown correlation id %r (its '
                'call timed out or it was never made)', properties.correlation_id)
            return
        slot.settle(body=body)

    def _on_return(self, channel: pika.channel.Channel,
                   method: pika.spec.Basic.Return,
                   properties: pika.BasicProperties, body: bytes) -> None:
        with self._lock:
            slot = self._waiting.pop(properties.correlation_id, None)
        if slot is not None:
            slot.settle(error=CriticalError(404, 'request not routed: {} {} '
                                         '(exchange {!r}, routing key {!r})'
                                         .format(method.reply_code,
                                                 method.reply_text,
                                                 method.exchange,
                                                 method.routing_key)))

    def _on_lost(self, loop: AmqpLoop, error: CommunicationError) -> None:
        """Fail the calls whose requests went out on ``loop``."""
        self._fail_waiting(_call_failure(error), loop)

    def _fail_waiting(self, error: CommunicationError,
                      loop: Optional[AmqpLoop] = None) -> None:
        """Settle the waiting calls (those on ``loop``, or all) with ``error``."""
        with self._lock:
            failed = [cid for cid, slot in self._waiting.items()
                      if loop is None or slot.owner is loop]
            slots = [self._waiting.pop(cid) for cid in failed]
        for slot in slots:
            slot.settle(error=copy.copy(error))

    def _close(self) -> None:
        with self._lock:
            self._closing = True
        self._calls.close()
        self._fail_waiting(TransientError(503, 'the producer was closed'))
        super()._close()


def _call_failure(error: CommunicationError) -> CommunicationError:
    """What a waiting call raises when its loop died of ``error``."""
    if is_permanent(error):
        # The broker closed the channel on a request (no such exchange,
        # access refused): it was not delivered, and neither were the others
        # waiting, which went to the same exchange.
        return CriticalError(error.http_code, 'request refused by the broker: '
                             '{}'.format(error.reason))
    return TransientError(503, 'connection lost while waiting for the reply; '
                          'the request may or may not have been processed: '
                          '{}'.format(error.reason))


def _wait_driving(loop: AmqpLoop, slot: ReplySlot, timeout: Optional[float]) -> bool:
    """Wait for ``slot``, reading the reply in this thread when it can
    (:meth:`AmqpLoop.drive`); ``False`` on timeout."""
    started = time.monotonic()
    if loop.drive(slot.is_set, timeout):
        return slot.is_set()
    if timeout is not None:
        timeout = max(0.0, timeout - (time.monotonic() - started))
    return slot.wait(timeout)
