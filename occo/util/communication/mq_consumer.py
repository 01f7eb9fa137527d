# SPDX-License-Identifier: Apache-2.0
"""The RabbitMQ consumer: the processor in the consuming thread, the
connection on the I/O thread (see :mod:`~occo.util.communication.mq`)."""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional

import pika
import pika.channel
import pika.frame
import pika.spec

from ..exceptions import CommunicationError, ConfigurationError, CriticalError
from . import codec, dispatch, telemetry
from .amqp_loop import AmqpLoop, Step, publish, run_steps
from .amqp_role import POLL_INTERVAL, AmqpRole
from .comm import EventDrivenConsumer
from .comm import register
from .failures import CoalescedLog
from .message_context import message_info
from .pika_internals import received_headers
from .workers import WorkerPool

#: The backend's logger: one name for its three roles.
log = logging.getLogger('occo.util.communication.mq')

__all__ = ['MQEventDrivenConsumer', 'ACK_BATCH', 'ACK_DELAY']

#: While more messages wait, a consumer acknowledges at least every this
#: many messages...
ACK_BATCH = 20
#: ... and at most this many seconds after processing one. When no message
#: waits it acknowledges at once.
ACK_DELAY = 0.05

#: A delivery as the I/O thread hands it to the consuming thread.
_Delivery = tuple[pika.channel.Channel, pika.spec.Basic.Deliver,
                  pika.BasicProperties, bytes]

@register(EventDrivenConsumer, 'amqp')
class MQEventDrivenConsumer(AmqpRole, EventDrivenConsumer):
    """:class:`~.comm.EventDrivenConsumer` on RabbitMQ.

    The processor runs in the thread that calls :meth:`start_consuming`;
    the I/O thread receives up to ``prefetch_count`` messages ahead and
    answers heartbeats meanwhile. A message is acknowledged after its
    processor returned; acknowledgements are batched. When
    :meth:`start_consuming` returns, messages received but not processed go
    back to the queue.

    With ``max_workers`` above 1 the consuming thread only receives: it
    hands each delivery to a :class:`~.workers.WorkerPool`, whose workers
    run the processor and each send their message's reply and
    acknowledgement (one ``basic_ack`` per message, never ``multiple``:
    workers finish in any order) through the loop's
    :meth:`~.amqp_loop.AmqpLoop.run_now`. The prefetch is at least
    ``max_workers`` (``prefetch_count`` 0 stays unlimited).
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
        workers, prefetch = self.settings.max_workers, self.settings.prefetch_count
        #: The prefetch asked of the broker: room for every worker.
        self._prefetch = prefetch if prefetch == 0 else max(prefetch, workers)
        #: With max_workers above 1, the workers (set once; thread-safe);
        #: else None, and the consuming thread runs the processor.
        self._pool: Optional[WorkerPool[_Delivery]] = None
        if workers > 1:
            self._pool = WorkerPool(workers, 'occo-worker-' + self.settings.queue,
                                    self._work, _described, self._stop_on_fatal)

    def _setup(self, channel: pika.channel.Channel, done: Callable[[], None]) -> None:
        s = self.settings
        channel.add_on_cancel_callback(self._on_broker_cancel)
        steps: list[Step] = [lambda done: channel.basic_qos(
            prefetch_count=self._prefetch, callback=done)]
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
            self._inbox.put((channel, method, properties, body))
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
        pool = self._pool
        handle = self._handle if pool is None else self._hand_over
        with self._consuming_session(self.settings.queue):
            try:
                if pool is not None:
                    pool.start()
                if self._loop.alive:
                    self._loop.submit(self._consume)
                while self._keep_consuming():
                    if not self._loop.alive:
                        self._resume()
                        continue
                    item = self._next_delivery(self._loop)
                    if item is not None:
                        handle(*item)
            finally:
                self._stop_consuming()
            fatal = None if pool is None else pool.take_fatal()
            if fatal is not None:   # as if the processor had run here
                raise fatal

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
        if self._terminated:   # close() stopped the loop: do not reopen it
            return
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

    def _hand_over(self, channel: pika.channel.Channel,
                   method: pika.spec.Basic.Deliver,
                   properties: pika.BasicProperties, body: bytes) -> None:
        """Give a delivery to the workers (consuming thread); put it back in
        the queue if they stopped meanwhile (a ``close()`` from another
        thread)."""
        assert self._pool is not None  # max_workers > 1
        if not self._pool.put((channel, method, properties, body)):
            self._requeue([(channel, method, properties, body)])

    def _work(self, item: _Delivery) -> None:
        """Process one delivery in a worker thread, and settle it."""
        self._handle(*item)

    def _stop_on_fatal(self) -> None:
        """A worker's processor raised ``SystemExit`` or
        ``KeyboardInterrupt``: stop as after SIGTERM; start_consuming raises
        it when it has stopped."""
        self._terminated = True

    def _handle(self, channel: pika.channel.Channel, method: pika.spec.Basic.Deliver,
                properties: pika.BasicProperties, body: bytes) -> None:
        loop = self._loop
        assert loop is not None  # opened
        if channel is not loop.channel:
            return  # from a dead connection: the broker delivers it again
        tag = method.delivery_tag
        assert tag is not None  # checked by _on_delivery
        message_id = properties.message_id or properties.correlation_id or tag
        if not telemetry.enabled:
            self._settle_now(loop, tag, self._outcome(method, properties, body, message_id),
                             properties, None, message_id)
            return
        with telemetry.processing(
                self.settings.queue or '', properties.headers, exchange=method.exchange or '',
                routing_key=method.routing_key, message_id=properties.message_id,
                conversation_id=properties.correlation_id, body_size=len(body),
                delivery_tag=tag, **self._telemetry_peer()) as span:
            outcome = self._outcome(method, properties, body, message_id)
            span.settled(outcome.ack, outcome.error)
            reply_headers = None if outcome.reply is None else span.reply_headers(
                properties.reply_to, len(outcome.reply))
            self._settle_now(loop, tag, outcome, properties, reply_headers, message_id)

    def _outcome(self, method: pika.spec.Basic.Deliver, properties: pika.BasicProperties,
                 body: bytes, message_id: object) -> dispatch.Outcome:
        """Decode the message and run the processor on it."""
        if properties.reply_to is not None and not isinstance(properties.reply_to, str):
            self._reject_log.warning(
                'reply_to', 'Rejected message %r unprocessed: its reply_to %r '
                'is not UTF-8 text, so it cannot be answered', message_id,
                properties.reply_to)
            return dispatch.Outcome(False, error='MessageDecodeError')
        return dispatch.handle(
            self.processor, self.pargs, self.pkwargs, body,
            properties.content_type, properties.reply_to is not None,
            message_id, self.settings.max_message_size, self._reject_log,
            message_info(received_headers(properties.headers), properties.message_id,
                         properties.correlation_id, method.routing_key,
                         method.redelivered))

    def _settle_now(self, loop: AmqpLoop, tag: int, outcome: dispatch.Outcome,
                    properties: pika.BasicProperties,
                    reply_headers: Optional[dict[str, Any]], message_id: object) -> None:
        try:
            loop.run_now(functools.partial(self._settle, tag, outcome, properties,
                                           reply_headers))
        except CommunicationError as e:
            log.warning('Cannot settle message %s, the broker will deliver it '
                        'again: %s', message_id, e)

    def _settle(self, tag: int, outcome: dispatch.Outcome,
                properties: pika.BasicProperties,
                reply_headers: Optional[dict[str, Any]],
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
                        correlation_id=properties.correlation_id,
                        headers=reply_headers))
        if outcome.ack:
            if self._pool is not None:   # workers finish in any order
                channel.basic_ack(tag)
                return
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
        """Stop the broker's deliveries, put back what was received and not
        started, then wait for running workers until the grace deadline."""
        self._consuming = False
        pool = self._pool
        unstarted = [] if pool is None else pool.stop(self.settings.shutdown_grace)
        loop = self._loop
        if loop is not None and loop.alive:
            try:
                loop.submit(self._cancel_consumer)
            except CommunicationError as e:
                log.debug('Connection lost while stopping: %s', e)
        while True:
            try:
                unstarted.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        self._requeue(unstarted)
        if pool is not None:
            pool.join()

    def _finish_workers(self) -> None:
        pool = self._pool
        if pool is not None:
            self._requeue(pool.stop(self.settings.shutdown_grace))
            pool.join()

    def _requeue(self, deliveries: list[_Delivery]) -> None:
        """Put deliveries back in the queue, unprocessed (any thread); those
        of a dead channel the broker puts back itself."""
        loop = self._loop
        if loop is None or not loop.alive:
            return
        try:
            for channel, method, _, _ in deliveries:
                tag = method.delivery_tag
                if channel is loop.channel and tag is not None:
                    loop.submit(functools.partial(_requeue, tag))
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


def _described(item: _Delivery) -> object:
    """How log lines name a delivery: its message id, else its tag."""
    _, method, properties, _ = item
    return repr(properties.message_id or properties.correlation_id
                or method.delivery_tag)
