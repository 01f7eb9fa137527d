# SPDX-License-Identifier: Apache-2.0
"""The RabbitMQ backend, ``protocol: amqp``, on pika.

Each object owns one connection, opened by ``__enter__`` and closed (channel
and connection) by ``__exit__``. The connection runs on an I/O thread of its
own (:class:`~occo.util.communication.amqp_loop.AmqpLoop`); the methods
below block the calling thread only as long as their contract says.

* :class:`MQAsynchronProducer` publishes with pipelined publisher confirms:
  ``push_message`` returns at once (it blocks only while ``max_in_flight``
  messages wait for their confirm), :meth:`~MQAsynchronProducer.flush` and
  ``__exit__`` wait until every message is confirmed, republishing nacked
  ones and those unconfirmed when a connection died (at-least-once: a
  consumer may see a message twice, never zero times).
* :class:`MQRPCProducer` sends requests with RabbitMQ's direct reply-to and
  matches replies by correlation id; threads may share it.
* :class:`MQEventDrivenConsumer` runs the processor in the thread that calls
  :meth:`~MQEventDrivenConsumer.start_consuming` while the I/O thread keeps
  the connection alive, so a processor may run longer than the heartbeat.

A lost connection is reopened by the next call (producers) or by the
consuming loop (consumers), with ``connection_attempts`` tries spaced by
``retry_delay`` doubling.
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import queue
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Optional, Union, cast

import pika
import pika.channel
import pika.frame
import pika.spec

from ..exceptions import CommunicationError, ConfigurationError, CriticalError
from ..exceptions import RPCTimeoutError, TransientError
from . import codec, dispatch
from .amqp_loop import AmqpLoop, Operation, Step, publish, run_steps
from .amqp_role import AmqpRole
from .comm import AsynchronProducer, EventDrivenConsumer, Message, RPCProducer
from .comm import register
from .failures import CoalescedLog, is_permanent
from .reply_slot import ReplySlot
from .settings import check_timeout

__all__ = ['MQAsynchronProducer', 'MQRPCProducer', 'MQEventDrivenConsumer',
           'NACK_RETRIES', 'NACK_BACKOFF', 'MAX_NACK_BACKOFF']

log = logging.getLogger(__name__)

#: The pseudo queue of RabbitMQ's direct reply-to.
DIRECT_REPLY_TO = 'amq.rabbitmq.reply-to'
#: Longest wait between two looks at a consumer's cancel event, in seconds.
POLL_INTERVAL = 0.25
#: While more messages wait, a consumer acknowledges at least every this
#: many messages...
ACK_BATCH = 20
#: ... and at most this many seconds after processing one. When no message
#: waits it acknowledges at once.
ACK_DELAY = 0.05

#: A delivery as the I/O thread hands it to the consuming thread.
_Delivery = tuple[pika.channel.Channel, int, pika.BasicProperties, bytes]
#: How often a nacked message is published again before flush gives up.
#: With :data:`NACK_BACKOFF` and :data:`MAX_NACK_BACKOFF` that spans 6 to 11
#: seconds: a full queue may drain, a quorum queue may elect a new leader.
NACK_RETRIES = 10
#: Seconds before the first republish of a nacked message (doubling, with
#: jitter, up to :data:`MAX_NACK_BACKOFF`).
NACK_BACKOFF = 0.05
#: Longest pause before republishing a nacked message, in seconds.
MAX_NACK_BACKOFF = 2.0


class _Record:
    """A message as the producer publishes it, and how often it was nacked."""

    __slots__ = ('routing_key', 'body', 'properties', 'nacks')

    def __init__(self, routing_key: str, body: bytes,
                 properties: pika.BasicProperties) -> None:
        self.routing_key = routing_key
        self.body = body
        self.properties = properties
        self.nacks = 0


@register(AsynchronProducer, 'amqp')
class MQAsynchronProducer(AmqpRole, AsynchronProducer):
    """:class:`~.comm.AsynchronProducer` on RabbitMQ.

    Constructed as ``AsynchronProducer(protocol='amqp', **config)`` or
    directly as ``MQAsynchronProducer(**config)``; see
    :mod:`~occo.util.communication.settings` for the keys.

    Only the configured ``queue`` is declared (on enter); a message whose
    routing key no queue takes is reported by :meth:`flush`
    (:class:`~occo.util.exceptions.CriticalError` 404). A message the
    broker nacks is published again up to :data:`NACK_RETRIES` times,
    :data:`NACK_BACKOFF` seconds apart (doubling, with jitter).
    """

    _kind = 'producer'

    def __init__(self, **config: Any) -> None:
        self._configure(config)
        s = self.settings
        self._exchange = s.exchange
        self._delivery_mode: Literal[1, 2] = 2 if s.durable else 1
        #: Guards _pending, _unroutable and _refused, which the I/O side
        #: changes and callers read; notified when _pending falls or the
        #: loop dies.
        self._state = threading.Condition()
        #: Messages pushed and not yet confirmed nor given up (_state).
        self._pending = 0
        #: Unroutable messages, as text, until flush reports them (_state).
        self._unroutable: list[str] = []
        #: Records given up after NACK_RETRIES nacks, until flush (_state).
        self._refused = 0
        #: Owned by the loop's turn (the I/O thread, or the caller holding
        #: the turn); taken over by a caller in _live_loop once the loop is
        #: stopped. Delivery tag -> record published on the current channel.
        self._unconfirmed: dict[int, _Record] = {}
        #: Last delivery tag of the current channel (turn).
        self._tag = 0
        #: Nacked records waiting for their republish timer (turn).
        self._delayed: dict[int, _Record] = {}
        #: Records to publish again after a reconnect (caller's thread).
        self._carry: list[_Record] = []
        #: The dead loop whose permanent error was reported (caller's thread).
        self._reported_failure: Optional[AmqpLoop] = None
        self._nack_log = CoalescedLog(log)

    def _setup(self, channel: pika.channel.Channel, done: Callable[[], None]) -> None:
        self._tag = 0
        channel.add_on_return_callback(self._on_return)
        steps = self._declare_steps(channel, [self.settings.queue])
        if self.settings.confirm:
            steps.insert(0, lambda done: channel.confirm_delivery(
                self._on_confirm, callback=done))
        run_steps(steps, done)

    def push_message(self, message: Message,
                     routing_key: Optional[str] = None) -> None:
        """Publish ``message``; see :meth:`.comm.AsynchronProducer.push_message`.

        :raises CriticalError: (413) when the message exceeds
            ``max_message_size``; with the broker's code and text when the
            broker closed the channel on earlier messages (they are counted
            in the error and not published again; the next call
            reconnects).
        :raises CommunicationError: when the connection cannot be reopened.
        """
        self._check_open()
        assert self._loop is not None  # opened
        body, content_type = codec.encode(message)
        self._check_size(body)
        record = _Record(self._target(routing_key), body, pika.BasicProperties(
            content_type=content_type, delivery_mode=self._delivery_mode,
            message_id=self._next_id()))
        if self.settings.confirm:
            with self._state:
                while self._pending >= self.settings.max_in_flight:
                    if self._loop is None or not self._loop.alive:
                        break
                    self._state.wait(POLL_INTERVAL)
                self._pending += 1
        try:
            self._submit(functools.partial(self._publish, record))
        except CommunicationError:
            if self.settings.confirm:
                with self._state:
                    self._pending -= 1  # not sent: the caller has the error
            raise

    def _submit(self, operation: Operation) -> None:
        """Hand ``operation`` to a live loop; a loop that dies between
        :meth:`_live_loop` and the hand-over is replaced, not reported."""
        while True:
            loop = self._live_loop()
            try:
                loop.submit(operation)
                return
            except CommunicationError:
                if loop.alive:
                    raise

    def _live_loop(self) -> AmqpLoop:
        """Return a working loop, reconnecting and republishing if needed.

        :raises CriticalError: once for a loop the broker closed with a
            permanent error: its messages are given up, not republished.
        """
        assert self._loop is not None  # opened
        if self._loop.alive:
            return self._loop
        with self._reconnecting:
            if self._loop.alive:   # another thread reconnected meanwhile
                return self._loop
            return self._replace(self._loop)

    def _replace(self, dead: AmqpLoop) -> AmqpLoop:
        """Take over what ``dead`` did not deliver, reconnect, republish
        (``_reconnecting`` held)."""
        dead.stop(timeout=2)
        with dead.holding_turn():   # its callbacks own these until now
            records = (self._carry + list(self._unconfirmed.values())
                       + list(self._delayed.values()) + self._unsent(dead))
            self._carry, self._unconfirmed, self._delayed = [], {}, {}
        if (dead.error is not None and is_permanent(dead.error)
                and dead is not self._reported_failure):
            self._reported_failure = dead
            self._settled(len(records))
            raise CriticalError(dead.error.http_code, '{} message(s) not '
                                'delivered, not published again: {}'.format(
                                    len(records), dead.error.reason)) from dead.error
        self._carry = records
        loop = self._reconnect()
        carry, self._carry = self._carry, []
        if carry:
            log.warning('Publishing %d unconfirmed message(s) again to %s',
                        len(carry), self.settings.endpoint)
        for record in carry:
            loop.submit(functools.partial(self._publish, record))
        return loop

    def _unsent(self, dead: AmqpLoop) -> list[_Record]:
        """The records of publish operations a dead loop did not run."""
        return [cast('functools.partial[None]', op).args[0]
                for op in dead.take_unsent()
                if getattr(op, 'func', None) == self._publish]

    def _settled(self, count: int) -> None:
        """``count`` pushed messages were confirmed or given up."""
        if self.settings.confirm and count:
            with self._state:
                self._pending -= count
                self._state.notify_all()

    def _publish(self, record: _Record, channel: pika.channel.Channel) -> None:
        publish(channel, self._exchange, record.routing_key, record.body,
                record.properties, mandatory=True)
        if self.settings.confirm:
            self._tag += 1
            self._unconfirmed[self._tag] = record

    def _on_confirm(
            self,
            frame: pika.frame.Method[Union[pika.spec.Basic.Ack, pika.spec.Basic.Nack]],
    ) -> None:
        method = frame.method
        tag = method.delivery_tag
        if method.multiple:
            done = list(itertools.takewhile(lambda t: t <= tag, self._unconfirmed))
        else:
            done = [tag] if tag in self._unconfirmed else []
        records = [self._unconfirmed.pop(t) for t in done]
        if isinstance(method, pika.spec.Basic.Nack):
            records = self._retry_nacked(records)
        self._settled(len(records))

    def _retry_nacked(self, records: list[_Record]) -> list[_Record]:
        """Schedule nacked records for republishing; return those given up."""
        retry = [r for r in records if r.nacks < NACK_RETRIES]
        given_up = [r for r in records if r.nacks >= NACK_RETRIES]
        with self._state:
            self._refused += len(given_up)
        self._nack_log.warning(
            'nack', 'Broker refused %d message(s) (basic.nack: a queue is '
            'full, or the broker cannot store them); publishing %d again, '
            'giving up %d', len(records), len(retry), len(given_up))
        if retry:
            attempt = max(r.nacks for r in retry)
            for r in retry:
                r.nacks += 1
                self._delayed[id(r)] = r
            loop = self._loop
            assert loop is not None  # confirms arrive on an opened loop
            delay = random.uniform(0.5, 1) * min(MAX_NACK_BACKOFF,
                                                 NACK_BACKOFF * 2 ** attempt)
            loop.call_later(delay, functools.partial(
                self._republish, retry, loop))
        return given_up

    def _republish(self, records: list[_Record], loop: AmqpLoop) -> None:
        """Timer on the I/O thread: publish nacked records again, unless the
        loop died meanwhile (then :meth:`_live_loop` took them over)."""
        if loop is not self._loop or loop.channel is None or not loop.channel.is_open:
            return
        for record in records:
            if self._delayed.pop(id(record), None) is not None:
                self._publish(record, loop.channel)

    def _on_return(self, channel: pika.channel.Channel,
                   method: pika.spec.Basic.Return,
                   properties: pika.BasicProperties, body: bytes) -> None:
        with self._state:
            self._unroutable.append('{} {} (exchange {!r}, routing key {!r})'.format(
                method.reply_code, method.reply_text, method.exchange,
                method.routing_key))

    def _on_lost(self, loop: AmqpLoop, error: CommunicationError) -> None:
        with self._state:
            self._state.notify_all()   # waiters look at the loop again

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until the broker confirmed every message pushed so far.

        A lost connection is reopened and the unconfirmed messages are
        published again.

        :param timeout: seconds; ``None`` waits for ever.
        :raises CriticalError: (404) naming the messages the broker could
            not route; with the broker's code and text when it closed the
            channel (those messages are not published again).
        :raises TransientError: naming how many messages were not
            confirmed (504), or were refused by ``basic.nack``
            :data:`NACK_RETRIES` times (503).
        """
        self._check_open()
        self._flush(timeout)

    def _flush(self, timeout: Optional[float]) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.settings.confirm:
            self._wait_confirmed(deadline)
        else:
            self._wait_written(deadline)
        with self._state:
            unroutable, self._unroutable = self._unroutable, []
            refused, self._refused = (0, self._refused) if unroutable else (
                self._refused, 0)   # reported by the next flush
        if unroutable:
            raise CriticalError(404, '{} message(s) could not be routed: {}'
                                .format(len(unroutable), unroutable[0]))
        if refused:
            raise TransientError(503, '{} message(s) refused by the broker '
                                 '{} times (basic.nack: a queue is full, e.g. '
                                 'x-overflow reject-publish, or the broker '
                                 'cannot store them)'.format(
                                     refused, NACK_RETRIES + 1))

    def _wait_confirmed(self, deadline: Optional[float]) -> None:
        while True:
            try:
                self._live_loop()
            except CriticalError:
                raise
            except CommunicationError as e:
                raise TransientError(503, '{} message(s) not confirmed: {}'
                                     .format(self._pending, e)) from e
            with self._state:
                if self._pending <= 0:
                    return
                remaining = POLL_INTERVAL if deadline is None else min(
                    POLL_INTERVAL, deadline - time.monotonic())
                if remaining <= 0:
                    raise TransientError(504, '{} message(s) not confirmed '
                                         'in time'.format(self._pending))
                assert self._loop is not None  # _live_loop() returned
                if self._loop.alive:
                    self._state.wait(remaining)

    def _wait_written(self, deadline: Optional[float]) -> None:
        """Without confirms: wait until what was pushed is written."""
        written = threading.Event()
        mark: Operation = lambda channel: written.set()  # noqa: E731
        self._submit(mark)
        while not written.wait(POLL_INTERVAL):
            if deadline is not None and time.monotonic() >= deadline:
                raise TransientError(504, 'messages not sent in time')
            if self._loop is not None and not self._loop.alive:
                self._submit(mark)   # reconnects, publishing the unsent again

    def _close(self) -> None:
        try:
            if self._loop is not None and (self._loop.alive or self._pending):
                self._flush(self.settings.confirm_timeout)
        finally:
            super()._close()


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
        self._drop_log = CoalescedLog(log)

    def _setup(self, channel: pika.channel.Channel, done: Callable[[], None]) -> None:
        channel.add_on_return_callback(self._on_return)
        steps: list[Step] = [lambda done: channel.basic_consume(
            DIRECT_REPLY_TO, self._on_reply, auto_ack=True, callback=done)]
        steps += self._declare_steps(channel, [self.settings.queue])
        run_steps(steps, done)

    def push_message(self, message: Message, routing_key: Optional[str] = None,
                     timeout: Optional[float] = None) -> Message:
        """Send ``message`` and return the result; see
        :meth:`.comm.RPCProducer.push_message`.

        :raises ValueError: when ``timeout`` is not a finite number of
            seconds within :data:`~.settings.MAX_RPC_TIMEOUT`.
        """
        self._check_open()
        assert self._loop is not None  # opened
        body, content_type = codec.encode(message)
        self._check_size(body)
        timeout = (self.settings.rpc_timeout if timeout is None
                   else check_timeout(timeout, 'timeout'))
        routing_key = self._target(routing_key)
        correlation_id = secrets.token_hex(16)
        properties = pika.BasicProperties(
            content_type=content_type, correlation_id=correlation_id,
            reply_to=DIRECT_REPLY_TO, delivery_mode=1,
            expiration=None if timeout is None else str(max(1, int(timeout * 1000))))
        loop, slot = self._register(correlation_id)
        try:
            loop.run_now(functools.partial(self._publish, routing_key, body,
                                           properties))
            if not _wait_driving(loop, slot, timeout):
                raise RPCTimeoutError(reason='no reply from {!r} within {} s'
                                      .format(routing_key, timeout))
        finally:
            with self._lock:
                self._waiting.pop(correlation_id, None)
        if slot.error is not None:
            raise slot.error
        assert slot.body is not None  # settled with a body or an error
        return codec.result_from_reply(slot.body)

    def _register(self, correlation_id: str) -> tuple[AmqpLoop, ReplySlot]:
        """A slot for the call, on an open loop (reconnecting if needed).

        The slot is registered only while its loop is alive, under
        ``_lock``, which :meth:`_on_lost` takes too: so either the loop's
        death fails the slot, or the slot is never registered on a dead loop.
        """
        while True:
            loop = self._open_loop()
            slot = ReplySlot(owner=loop)
            with self._lock:
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


@register(EventDrivenConsumer, 'amqp')
class MQEventDrivenConsumer(AmqpRole, EventDrivenConsumer):
    """:class:`~.comm.EventDrivenConsumer` on RabbitMQ.

    The processor runs in the thread that calls :meth:`start_consuming`;
    the I/O thread receives up to ``prefetch_count`` messages ahead and
    answers heartbeats meanwhile. A message is acknowledged after its
    processor returned; acknowledgements are batched. When
    :meth:`start_consuming` returns, messages received but not processed go
    back to the queue.
    """

    _kind = 'consumer'

    def __init__(self, processor: Callable[..., Any], pargs: Iterable[Any] = (),
                 pkwargs: Optional[Mapping[str, Any]] = None,
                 cancel_event: Optional[threading.Event] = None,
                 **config: Any) -> None:
        super().__init__(processor, pargs, pkwargs, cancel_event)
        self._configure(config)
        if not self.settings.queue:
            raise ConfigurationError(
                'missing configuration key \'queue\': what should be consumed?')
        #: Deliveries from the reading thread to the consuming thread
        #: (thread-safe queue).
        self._inbox: queue.SimpleQueue[_Delivery] = queue.SimpleQueue()
        #: Whether start_consuming runs: written by the consuming thread,
        #: read by the turn (a bool: a stale read only delays one message,
        #: which is then returned to the queue).
        self._consuming = False
        #: The broker's tag of our consumer on the current channel (turn).
        self._consumer_tag: Optional[str] = None
        # Acknowledgements not sent yet (turn held): the highest tag, how
        # many messages, since when.
        self._ack_upto: Optional[int] = None
        self._ack_count = 0
        self._ack_since = 0.0
        self._ack_timer = False   # an _ack_due call is scheduled
        self._ack_batch = max(1, min(ACK_BATCH, self.settings.prefetch_count // 2))
        #: Rejected messages: ten lines a second at most (thread-safe).
        self._reject_log = CoalescedLog(log, interval=1.0, burst=10)

    def _setup(self, channel: pika.channel.Channel, done: Callable[[], None]) -> None:
        s = self.settings
        channel.add_on_cancel_callback(self._on_broker_cancel)
        steps: list[Step] = [lambda done: channel.basic_qos(
            prefetch_count=s.prefetch_count, callback=done)]
        steps += self._declare_steps(channel, [s.queue])
        self._ack_upto, self._ack_count, self._ack_timer = None, 0, False
        if self._consuming:
            steps.append(functools.partial(self._consume, channel))
        run_steps(steps, done)

    def _consume(self, channel: pika.channel.Channel,
                 done: Optional[Callable[..., None]] = None) -> None:
        assert self.settings.queue is not None  # checked by __init__
        self._consumer_tag = channel.basic_consume(
            self.settings.queue, self._on_delivery, callback=done)

    def _on_broker_cancel(self, frame: pika.frame.Method[pika.spec.Basic.Cancel]) -> None:
        """The broker cancelled the consumer (I/O thread): the queue was
        deleted, or its node went away. Declare it again and resume; if that
        fails, the broker closes the channel and :meth:`start_consuming`
        reconnects, or raises when the queue cannot be declared."""
        loop = self._loop
        self._consumer_tag = None
        if not self._consuming or loop is None or loop.channel is None:
            return
        log.warning('The broker cancelled consuming %r (was the queue '
                    'deleted?); declaring it again and resuming',
                    self.settings.queue)
        channel = loop.channel
        run_steps(self._declare_steps(channel, [self.settings.queue])
                  + [functools.partial(self._consume, channel)], _nothing)

    def _on_delivery(self, channel: pika.channel.Channel,
                     method: pika.spec.Basic.Deliver,
                     properties: pika.BasicProperties, body: bytes) -> None:
        assert method.delivery_tag is not None  # the broker numbers deliveries
        if self._consuming:
            self._inbox.put((channel, method.delivery_tag, properties, body))
        else:
            channel.basic_nack(method.delivery_tag, requeue=True)

    def start_consuming(self) -> None:
        """Process messages until ``cancel_event`` is set, or Ctrl-C.

        A lost connection is reopened (logged once at WARNING with its
        cause) and consuming resumes, until ``cancel_event`` is set.
        """
        self._check_open()
        assert self._loop is not None  # opened
        self._consuming = True
        try:
            with self._consuming_session(self.settings.queue):
                if self._loop.alive:
                    self._loop.submit(self._consume)
                while self._keep_consuming():
                    if not self._loop.alive:
                        self._resume()
                        continue
                    item = self._next_delivery(self._loop)
                    if item is not None:
                        self._handle(*item)
        finally:
            self._stop_consuming()

    def _next_delivery(self, loop: AmqpLoop) -> Optional[_Delivery]:
        """The next delivery, waiting at most :data:`POLL_INTERVAL` for it
        (reading the connection in this thread while the inbox is empty)."""
        inbox = self._inbox
        try:
            return inbox.get_nowait()
        except queue.Empty:
            pass
        waited = loop.drive(lambda: not inbox.empty(), POLL_INTERVAL)
        try:
            return inbox.get(timeout=0 if waited else POLL_INTERVAL)
        except queue.Empty:
            return None

    def _resume(self) -> None:
        """Reconnect after a loss; raise when that cannot work (permanent)."""
        try:
            self._reconnect(self.cancel_event)
        except CriticalError as e:
            raise CriticalError(e.http_code, 'cannot consume {!r} any more: {}'
                                .format(self.settings.queue, e.reason)) from e
        except CommunicationError as e:
            log.debug('Cannot reconnect to %s yet: %s', self.settings.endpoint, e)
            self.cancel_event.wait(self.settings.retry_delay or POLL_INTERVAL)
        else:
            log.info('Consuming %r again', self.settings.queue)

    def _handle(self, channel: pika.channel.Channel, tag: int,
                properties: pika.BasicProperties, body: bytes) -> None:
        loop = self._loop
        assert loop is not None  # opened
        if channel is not loop.channel:
            return  # from a dead connection: the broker delivers it again
        message_id = properties.message_id or properties.correlation_id or tag
        if properties.reply_to is not None and not isinstance(properties.reply_to, str):
            self._reject_log.warning(
                'reply_to', 'Rejected message %r unprocessed: its reply_to %r '
                'is not UTF-8 text, so it cannot be answered', message_id,
                properties.reply_to)
            outcome = dispatch.Outcome(False)
        else:
            outcome = dispatch.handle(
                self.processor, self.pargs, self.pkwargs, body,
                properties.content_type, properties.reply_to is not None,
                message_id, self.settings.max_message_size, self._reject_log)
        try:
            loop.run_now(functools.partial(self._settle, tag, outcome, properties))
        except CommunicationError as e:
            log.warning('Cannot settle message %s, the broker will deliver it '
                        'again: %s', message_id, e)

    def _settle(self, tag: int, outcome: dispatch.Outcome,
                properties: pika.BasicProperties,
                channel: pika.channel.Channel) -> None:
        """Send the reply, if any, then acknowledge or reject the message.

        Acknowledgements are batched (one ``multiple`` ack) while more
        messages wait in the inbox, for at most :data:`ACK_BATCH` messages
        or :data:`ACK_DELAY` seconds; the frames leave in one write.
        """
        if outcome.reply is not None:
            assert properties.reply_to is not None  # only requests get a reply
            publish(channel, '', properties.reply_to, outcome.reply,
                    pika.BasicProperties(
                        content_type=codec.REPLY_CONTENT_TYPE,
                        correlation_id=properties.correlation_id))
        if outcome.ack:
            if self._ack_upto is None:
                self._ack_since = time.monotonic()
            self._ack_upto = tag
            self._ack_count += 1
        else:
            self._send_ack(channel)
            channel.basic_reject(tag, requeue=False)

    def _after_drain(self, channel: pika.channel.Channel) -> None:
        """Send the batched acknowledgement when it is due (turn held)."""
        if self._ack_upto is None:
            return
        loop = self._loop
        if (self._inbox.empty() or self._ack_count >= self._ack_batch
                or time.monotonic() - self._ack_since >= ACK_DELAY
                or loop is None or channel is not loop.channel):  # a dying loop's
            self._send_ack(channel)
        elif not self._ack_timer:
            self._ack_timer = True
            loop.call_later(ACK_DELAY, functools.partial(self._ack_due, channel))

    def _ack_due(self, channel: pika.channel.Channel) -> None:
        """Timer on the I/O thread: the held acknowledgement is due."""
        loop = self._loop
        if loop is not None and channel is loop.channel:  # not a dead one's
            self._ack_timer = False
            self._send_ack(channel)

    def _send_ack(self, channel: pika.channel.Channel) -> None:
        if self._ack_upto is not None and channel.is_open:
            tag, self._ack_upto, self._ack_count = self._ack_upto, None, 0
            channel.basic_ack(tag, multiple=True)

    def _stop_consuming(self) -> None:
        self._consuming = False
        loop = self._loop
        if loop is None or not loop.alive:
            return
        try:
            loop.submit(self._cancel_consumer)
            while True:
                channel, tag, _, _ = self._inbox.get_nowait()
                if channel is loop.channel:
                    loop.submit(functools.partial(_requeue, tag))
        except queue.Empty:
            pass
        except CommunicationError as e:
            log.debug('Connection lost while stopping: %s', e)


    def _cancel_consumer(self, channel: pika.channel.Channel) -> None:
        # Runs after _consume (operations run in order), unless consuming
        # never started on this channel.
        if self._consumer_tag is not None:
            channel.basic_cancel(self._consumer_tag)
            self._consumer_tag = None


def _nothing() -> None:
    pass


def _requeue(tag: int, channel: pika.channel.Channel) -> None:
    channel.basic_nack(tag, requeue=True)

