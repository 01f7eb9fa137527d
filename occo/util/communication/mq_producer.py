# SPDX-License-Identifier: Apache-2.0
"""The RabbitMQ asynchronous producer: publishing with pipelined publisher
confirms (see :mod:`~occo.util.communication.mq`)."""

from __future__ import annotations

import functools
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, Optional, Union, cast

import pika
import pika.channel
import pika.frame
import pika.spec

from ..exceptions import CommunicationError, CriticalError
from ..exceptions import TransientError
from . import codec, telemetry
from .amqp_loop import AmqpLoop, Operation, publish, run_steps
from .amqp_role import POLL_INTERVAL, AmqpRole
from .comm import AsynchronProducer, Message
from .comm import register
from .failures import CoalescedLog, is_permanent
from .message_context import check_headers

#: The backend's logger: one name for its three roles.
log = logging.getLogger('occo.util.communication.mq')

__all__ = ['MQAsynchronProducer', 'NACK_RETRIES', 'NACK_BACKOFF', 'MAX_NACK_BACKOFF']

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
        #: Messages pushed and not yet confirmed nor given up, and the bytes
        #: of their bodies (_state).
        self._pending = 0
        self._pending_bytes = 0
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

    def push_message(self, message: Message, routing_key: Optional[str] = None,
                     headers: Optional[Mapping[str, Any]] = None) -> None:
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
        target, message_id = self._target(routing_key), self._next_id()
        if telemetry.enabled:   # the span's trace context goes in the headers
            with telemetry.publishing(
                    target, headers, exchange=self._exchange, message_id=message_id,
                    body_size=len(body), **self._telemetry_peer()) as traced:
                self._send(body, content_type, target, message_id, traced)
            return
        self._send(body, content_type, target, message_id, headers)

    def _send(self, body: bytes, content_type: str, target: str, message_id: str,
              headers: Optional[Mapping[str, Any]]) -> None:
        record = _Record(target, body, pika.BasicProperties(
            content_type=content_type, delivery_mode=self._delivery_mode,
            message_id=message_id,
            headers=None if headers is None else check_headers(headers)))
        if self.settings.confirm:
            self._wait_for_room(len(body))
        try:
            self._submit(functools.partial(self._publish, record))
        except CommunicationError:
            self._settled([record])   # not sent: the caller has the error
            raise

    def _wait_for_room(self, size: int) -> None:
        """Block while ``max_in_flight`` messages, or ``max_in_flight_bytes``
        of bodies, wait for their confirms (one message always goes), then
        count this one."""
        s = self.settings
        with self._state:
            while self._pending and (
                    self._pending >= s.max_in_flight
                    or self._pending_bytes + size > s.max_in_flight_bytes):
                if self._loop is None or not self._loop.alive:
                    break
                self._state.wait(POLL_INTERVAL)
            self._pending += 1
            self._pending_bytes += size

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
            self._settled(records)
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

    def _settled(self, records: list[_Record]) -> None:
        """These pushed messages were confirmed or given up."""
        if self.settings.confirm and records:
            size = sum(len(record.body) for record in records)
            with self._state:
                self._pending -= len(records)
                self._pending_bytes -= size
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
        self._settled(records)

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
