# SPDX-License-Identifier: Apache-2.0
"""The in-process backend, ``protocol: memory``.

It has the semantics of the ``amqp`` backend without a broker: messages go to
named queues (the routing key names the queue), competing consumers share a
queue, RPC results, remote errors and timeouts behave the same, and messages
are encoded and decoded as on the wire, so a processor gets an equal copy and
a message that could not cross RabbitMQ cannot cross memory either. It is
thread-safe and lives as long as the process: use it for tests and for
components that run in one process. :func:`isolated_broker` gives the process
a fresh broker for a ``with`` block (the ``memory_broker`` fixture of
:mod:`~occo.util.communication.testing` does so for each test).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any, Optional

from ..exceptions import ClosedError, ConfigurationError, CriticalError
from ..exceptions import RPCTimeoutError
from ..exceptions import TransientError
from . import codec, dispatch, telemetry
from .comm import AsynchronProducer, EventDrivenConsumer, Message, RPCProducer
from .comm import register, warn_unknown_keys
from .failures import CoalescedLog
from .message_context import MessageInfo, check_headers, message_info
from .reply_slot import CallWindow, ReplySlot
from .settings import Settings, check_timeout
from .workers import WorkerPool

__all__ = ['MemoryBroker', 'default_broker', 'current_broker', 'isolated_broker',
           'MemoryAsynchronProducer',
           'MemoryRPCProducer', 'MemoryEventDrivenConsumer']

log = logging.getLogger(__name__)

#: How long a consumer waits at most before it looks at its cancel event.
POLL_INTERVAL = 0.2


class _Message:
    __slots__ = ('body', 'content_type', 'reply_to', 'correlation_id',
                 'expires_at', 'message_id', 'headers', 'routing_key',
                 'redelivered')

    def __init__(self, body: bytes, content_type: str,
                 reply_to: Optional[str] = None,
                 correlation_id: Optional[str] = None,
                 expires_at: Optional[float] = None,
                 message_id: Optional[str] = None,
                 headers: Optional[dict[str, Any]] = None,
                 routing_key: Optional[str] = None) -> None:
        self.body = body
        self.content_type = content_type
        self.reply_to = reply_to
        self.correlation_id = correlation_id
        self.expires_at = expires_at
        self.message_id = message_id
        self.headers = headers
        self.routing_key = routing_key
        #: Set when the message goes back to its queue unprocessed.
        self.redelivered = False

    def info(self) -> MessageInfo:
        """What the processor sees of this message."""
        return message_info(self.headers, self.message_id, self.correlation_id,
                            self.routing_key, self.redelivered)


class _Queue:
    """A FIFO shared by competing consumers; expired messages are dropped."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._items: collections.deque[_Message] = collections.deque()
        self._ready = threading.Condition(threading.Lock())

    def put(self, message: _Message) -> None:
        with self._ready:
            self._items.append(message)
            self._ready.notify()

    def requeue(self, messages: list[_Message]) -> None:
        """Put messages taken but not processed back at the head, in their
        order, marked ``redelivered`` (as RabbitMQ does)."""
        if not messages:
            return
        with self._ready:
            for message in reversed(messages):
                message.redelivered = True
                self._items.appendleft(message)
            self._ready.notify(len(messages))

    def get(self, timeout: float) -> Optional[_Message]:
        """Return the next live message, or ``None`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while True:
                while self._items:
                    message = self._items.popleft()
                    if message.expires_at is None or message.expires_at > time.monotonic():
                        return message
                    log.debug('Dropped expired message %s from %r',
                              message.message_id, self.name)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._ready.wait(remaining)

    def __len__(self) -> int:
        return len(self._items)


class MemoryBroker:
    """Named queues, and reply sinks for RPC producers, in one process."""

    def __init__(self) -> None:
        #: Must be held while adding to or removing from _queues and
        #: _sinks; lookups read them without it (a dict lookup is atomic).
        self._lock = threading.Lock()
        #: Declared queues by name (_lock).
        self._queues: dict[str, _Queue] = {}
        #: RPC reply addresses -> the producer's reply handler (_lock).
        self._sinks: dict[str, Callable[[_Message], None]] = {}

    def queue(self, name: str) -> _Queue:
        """Return the queue called ``name``, declaring it when missing."""
        with self._lock:
            queue = self._queues.get(name)
            if queue is None:
                queue = self._queues[name] = _Queue(name)
            return queue

    def publish(self, routing_key: str, message: _Message) -> bool:
        """Deliver ``message`` to the reply sink or queue ``routing_key``.

        :returns: ``False`` when neither exists (the message is dropped, as
            RabbitMQ returns an unroutable one).
        """
        sink = self._sinks.get(routing_key)
        if sink is not None:
            sink(message)
            return True
        queue = self._queues.get(routing_key)
        if queue is None:
            return False
        queue.put(message)
        return True

    def add_sink(self, name: str, callback: Callable[[_Message], None]) -> None:
        """Route messages for ``name`` to ``callback`` (RPC replies)."""
        with self._lock:
            self._sinks[name] = callback

    def remove_sink(self, name: str) -> None:
        with self._lock:
            self._sinks.pop(name, None)


# -- the process-wide broker ------------------------------------------------
#: The broker a memory object takes when it is constructed, and keeps for its
#: whole life. Rebound only by isolated_broker, under _broker_lock, by the
#: thread that owns the isolation; read without the lock (reading a module
#: global is atomic). Call current_broker() rather than importing this name,
#: which would keep the broker of import time.
default_broker = MemoryBroker()

#: Must be held while rebinding default_broker or changing _isolation_owner
#: and _isolation_depth; held for a few statements, never while the body of
#: an isolated_broker block runs.
_broker_lock = threading.Lock()
#: The thread inside isolated_broker, or None: the one thread that may rebind
#: default_broker until its outermost block ends (_broker_lock).
_isolation_owner: Optional[threading.Thread] = None
#: How many isolated_broker blocks _isolation_owner has entered (_broker_lock).
_isolation_depth = 0


def current_broker() -> MemoryBroker:
    """Return the broker that a memory object constructed now would use."""
    return default_broker


@contextlib.contextmanager
def isolated_broker(broker: Optional[MemoryBroker] = None) -> Iterator[MemoryBroker]:
    """Give the process a fresh broker for the ``with`` body, then restore it.

    Inside the block every memory object constructed, in any thread, uses the
    new broker: it has no queues, no messages and no RPC callers of other
    code. An object keeps the broker it was constructed with for its whole
    life, so one made before the block goes on using the previous broker,
    and one made inside goes on using the isolated one after the block. On
    exit, also when the body raised, the previous broker is the process-wide
    one again; whatever the isolated broker still holds is dropped with it.

    The thread that enters the block owns the process-wide broker until its
    outermost block ends: it may nest blocks (each restores the broker it
    found), but another thread that tries meanwhile gets a
    :class:`RuntimeError` at once rather than waiting, because two isolations
    at the same time cannot both hold for the whole process.

    :param broker: the broker to install; a new :class:`MemoryBroker` by
        default.
    :returns: a context manager whose ``as`` target is the installed broker.
    :raises RuntimeError: when another thread is inside an
        ``isolated_broker`` block.
    """
    global default_broker, _isolation_owner, _isolation_depth
    installed = MemoryBroker() if broker is None else broker
    thread = threading.current_thread()
    with _broker_lock:
        if _isolation_owner is not None and _isolation_owner is not thread:
            raise RuntimeError(
                'the memory broker is isolated by thread {!r} already; '
                'isolated_broker blocks of two threads cannot overlap'.format(
                    _isolation_owner.name))
        previous = default_broker
        default_broker = installed
        _isolation_owner = thread
        _isolation_depth += 1
    try:
        yield installed
    finally:
        with _broker_lock:
            default_broker = previous
            _isolation_depth -= 1
            if _isolation_depth == 0:
                _isolation_owner = None


class _MemoryRole:
    """Configuration shared by the memory classes."""

    def _configure(self, config: Mapping[str, Any]) -> None:
        warn_unknown_keys(config)
        self.settings = Settings(config)
        self.queue = self.settings.queue
        self.routing_key = self.settings.routing_key
        self._broker = default_broker

    def _encode(self, message: Message) -> tuple[bytes, str]:
        body, content_type = codec.encode(message)
        codec.check_size(body, self.settings.max_message_size)
        return body, content_type

    def _open(self) -> None:
        if self.queue:
            self._broker.queue(self.queue)

    def _target(self, routing_key: Optional[str]) -> str:
        target = routing_key or self.routing_key
        if not target:
            raise ConfigurationError(
                'missing configuration key \'routing_key\' (or \'queue\'): '
                'where should the message go?')
        return target

    def __repr__(self) -> str:
        return '<{} memory:{}>'.format(type(self).__name__, self.routing_key)


@register(AsynchronProducer, 'memory')
class MemoryAsynchronProducer(_MemoryRole, AsynchronProducer):
    """:class:`~.comm.AsynchronProducer` on the in-process broker.

    A message is in its queue when ``push_message`` returns, so
    :meth:`flush` only reports the messages no queue took
    (:class:`~occo.util.exceptions.CriticalError` 404), as the ``amqp``
    backend does.
    """

    def __init__(self, **config: Any) -> None:
        self._configure(config)
        #: Unroutable messages until flush reports them (_lock).
        self._unroutable: list[str] = []
        self._lock = threading.Lock()
        #: Message ids, as the amqp producer gives them (``next`` is atomic).
        self._ids = itertools.count(1)
        self._id_prefix = 'memory.{:x}.'.format(id(self))

    def _next_id(self) -> str:
        return self._id_prefix + str(next(self._ids))

    def push_message(self, message: Message, routing_key: Optional[str] = None,
                     headers: Optional[Mapping[str, Any]] = None) -> None:
        self._check_open()
        target = self._target(routing_key)
        if telemetry.enabled:   # the span's trace context goes in the headers
            with telemetry.publishing(target, headers, system='memory') as traced:
                self._send(message, target, traced)
            return
        self._send(message, target, headers)

    def _send(self, message: Message, target: str,
              headers: Optional[Mapping[str, Any]]) -> None:
        body, content_type = self._encode(message)
        if not self._broker.publish(target, _Message(
                body, content_type, message_id=self._next_id(),
                headers=check_headers(headers), routing_key=target)):
            with self._lock:
                self._unroutable.append('NO_ROUTE (routing key {!r})'.format(target))

    def flush(self, timeout: Optional[float] = None) -> None:
        self._check_open()
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            unroutable, self._unroutable = self._unroutable, []
        if unroutable:
            raise CriticalError(404, '{} message(s) could not be routed: {}'
                                .format(len(unroutable), unroutable[0]))

    def _close(self) -> None:
        self._flush()


@register(RPCProducer, 'memory')
class MemoryRPCProducer(_MemoryRole, RPCProducer):
    """:class:`~.comm.RPCProducer` on the in-process broker.

    Replies are handed over by the consumer's thread, which settles the
    call's slot (``_on_reply``): a future of :meth:`submit` is
    completed, and its done-callbacks run, in that thread.
    """

    def __init__(self, **config: Any) -> None:
        self._configure(config)
        self.rpc_timeout = self.settings.rpc_timeout
        self._reply_to = 'amq.gen-' + uuid.uuid4().hex
        #: Guards _waiting and _closing; held for a few statements, never
        #: while waiting.
        self._lock = threading.Lock()
        #: Correlation id -> the slot of the call waiting for it (_lock).
        self._waiting: dict[Optional[str], ReplySlot] = {}
        #: close() has begun: no call registers any more (_lock).
        self._closing = False
        self.rpc_max_in_flight = self.settings.rpc_max_in_flight
        #: The calls of submit(): their bound, futures and deadlines; it
        #: removes expired calls from _waiting under _lock.
        self._calls = CallWindow(self.rpc_max_in_flight,
                                 'memory-{:x}'.format(id(self)), self._lock,
                                 self._waiting)
        self._drop_log = CoalescedLog(log)

    def _open(self) -> None:
        super()._open()
        self._broker.add_sink(self._reply_to, self._on_reply)

    def _close(self) -> None:
        self._broker.remove_sink(self._reply_to)
        with self._lock:
            self._closing = True
            waiting = list(self._waiting.values())
            self._waiting.clear()   # the same dict: _calls holds it too
        self._calls.close()
        for slot in waiting:
            slot.settle(error=TransientError(
                503, 'the RPC producer was closed while waiting for a reply'))

    def _on_reply(self, message: _Message) -> None:
        with self._lock:
            slot = self._waiting.pop(message.correlation_id, None)
        if slot is None:
            self._drop_log.warning('unknown', 'Dropped a reply for unknown '
                                   'correlation id %r', message.correlation_id)
            return
        slot.settle(body=message.body)

    def push_message(self, message: Message, routing_key: Optional[str] = None,
                     timeout: Optional[float] = None,
                     headers: Optional[Mapping[str, Any]] = None) -> Message:
        self._check_open()
        target, correlation_id = self._target(routing_key), secrets.token_hex(16)
        if not telemetry.enabled:
            return self._result(*self._send(message, target, timeout, headers,
                                            correlation_id))
        with telemetry.rpc_call(target, correlation_id=correlation_id,
                                system='memory'):
            with telemetry.publishing(target, headers, system='memory',
                                      conversation_id=correlation_id) as traced:
                sent = self._send(message, target, timeout, traced, correlation_id)
            return self._result(*sent)

    def _send(self, message: Message, target: str, timeout: Optional[float],
              headers: Optional[Mapping[str, Any]], correlation_id: str,
              ) -> tuple[ReplySlot, Optional[float], str]:
        """Send the request of a call that waits for its reply."""
        body, content_type = self._encode(message)
        timeout = (self.rpc_timeout if timeout is None
                   else check_timeout(timeout, 'timeout'))
        expires_at = None if timeout is None else time.monotonic() + timeout
        sent_headers = check_headers(headers)
        slot = self._register(correlation_id, ReplySlot())
        if not self._broker.publish(target, _Message(
                body, content_type, self._reply_to, correlation_id, expires_at,
                headers=sent_headers, routing_key=target)):
            with self._lock:
                self._waiting.pop(correlation_id, None)
            raise CriticalError(404, 'request not routed: 312 NO_ROUTE '
                                '(routing key {!r})'.format(target))
        return slot, timeout, correlation_id

    def _register(self, correlation_id: str, slot: ReplySlot) -> ReplySlot:
        """Register a call's slot, unless ``close()`` has begun: its reply
        sink is gone then, and nothing would ever settle the slot.

        :raises ClosedError: when ``close()`` has begun.
        """
        with self._lock:
            if self._closing:
                raise ClosedError('{} is closed'.format(type(self).__name__))
            self._waiting[correlation_id] = slot
        return slot

    def _result(self, slot: ReplySlot, timeout: Optional[float],
                correlation_id: str) -> Message:
        """Wait for the reply of a sent request, and return its result."""
        try:
            if not slot.wait(timeout):
                raise RPCTimeoutError(reason='no reply within {} s'.format(timeout))
        finally:
            with self._lock:
                self._waiting.pop(correlation_id, None)
        return slot.result()

    def submit(self, message: Message, routing_key: Optional[str] = None,
               timeout: Optional[float] = None,
               headers: Optional[Mapping[str, Any]] = None) -> Future[Message]:
        """submit(message, routing_key=None, timeout=None, headers=None)

        Send ``message`` and return a future of its result; see
        :meth:`.comm.RPCProducer.submit`. A request that no queue takes
        fails its future with :class:`~occo.util.exceptions.CriticalError`
        404, as on RabbitMQ.

        :rtype: concurrent.futures.Future
        """
        self._check_open()
        target, correlation_id = self._target(routing_key), secrets.token_hex(16)
        if telemetry.enabled:   # a send span: no caller waits for a call span
            with telemetry.publishing(target, headers, system='memory',
                                      conversation_id=correlation_id) as traced:
                return self._submit(message, target, timeout, traced, correlation_id)
        return self._submit(message, target, timeout, headers, correlation_id)

    def _submit(self, message: Message, target: str, timeout: Optional[float],
                headers: Optional[Mapping[str, Any]],
                correlation_id: str) -> Future[Message]:
        body, content_type = self._encode(message)
        timeout = (self.rpc_timeout if timeout is None
                   else check_timeout(timeout, 'timeout'))
        sent_headers = check_headers(headers)
        future: Future[Message] = Future()
        future.set_running_or_notify_cancel()   # a sent request stays sent
        self._calls.enter()
        try:
            slot = self._register(correlation_id, ReplySlot(
                on_settle=functools.partial(self._calls.complete, future)))
        except ClosedError:
            self._calls.leave()
            raise
        expires_at = None
        if timeout is not None:
            expires_at = time.monotonic() + timeout
            self._calls.expire_at(expires_at, correlation_id, slot, target,
                                  timeout)
        if not self._broker.publish(target, _Message(
                body, content_type, self._reply_to, correlation_id, expires_at,
                headers=sent_headers, routing_key=target)):
            with self._lock:
                self._waiting.pop(correlation_id, None)
            slot.settle(error=CriticalError(404, 'request not routed: 312 '
                                            'NO_ROUTE (routing key {!r})'.format(target)))
        return future


@register(EventDrivenConsumer, 'memory')
class MemoryEventDrivenConsumer(_MemoryRole, EventDrivenConsumer):
    """:class:`~.comm.EventDrivenConsumer` on the in-process broker.

    With ``max_workers`` above 1 it behaves as the ``amqp`` consumer: the
    consuming thread takes up to the prefetch (``prefetch_count``, at
    least ``max_workers``; 0: no limit) messages from the queue ahead and
    hands them to a :class:`~.workers.WorkerPool`; a stop puts those not
    started back at the head of the queue, marked ``redelivered``; and
    ``close()`` does the same with the messages of workers still running
    after the grace period, as RabbitMQ does when the connection closes.
    """

    def __init__(self, processor: Callable[..., Any], pargs: Iterable[Any] = (),
                 pkwargs: Optional[Mapping[str, Any]] = None,
                 cancel_event: Optional[threading.Event] = None,
                 **config: Any) -> None:
        super().__init__(processor, pargs, pkwargs, cancel_event)
        self._configure(config)
        if not self.queue:
            raise ConfigurationError(
                'missing configuration key \'queue\': what should be consumed?')
        #: Rejected messages: ten lines a second at most (thread-safe).
        self._reject_log = CoalescedLog(log, interval=1.0, burst=10)
        workers, prefetch = self.settings.max_workers, self.settings.prefetch_count
        #: Messages taken ahead at most with workers (0: no limit).
        self._prefetch = prefetch if prefetch == 0 else max(prefetch, workers)
        #: With max_workers above 1, the workers (set once; thread-safe).
        self._pool: Optional[WorkerPool[_Message]] = None
        if workers > 1:
            self._pool = WorkerPool(workers, 'occo-worker-' + self.queue, self._handle,
                                    _described, self._stop_on_fatal)

    def start_consuming(self) -> None:
        self._check_open()
        assert self.queue is not None  # checked by __init__
        queue = self._broker.queue(self.queue)
        with self._consuming_session(queue.name):
            if self._pool is not None:
                self._consume_with_workers(queue, self._pool)
                return
            while self._keep_consuming():
                message = queue.get(POLL_INTERVAL)
                if message is not None:
                    self._handle(message)

    def _consume_with_workers(self, queue: _Queue,
                              pool: WorkerPool[_Message]) -> None:
        """The consuming loop with ``max_workers`` above 1: take messages
        while fewer than the prefetch wait or run, hand them to the pool."""
        pool.start()
        try:
            while self._keep_consuming():
                if not pool.wait_for_room(self._prefetch, POLL_INTERVAL):
                    continue
                message = queue.get(POLL_INTERVAL)
                if message is not None and not pool.put(message):
                    queue.requeue([message])   # close() stopped the pool
        finally:
            self._finish_workers()
        fatal = pool.take_fatal()
        if fatal is not None:   # as if the processor had run here
            raise fatal

    def _finish_workers(self) -> None:
        if self._pool is not None:
            self._requeue(self._pool.stop(self.settings.shutdown_grace))
            self._pool.join()

    def _close(self) -> None:
        """The messages of workers still running go back to the queue."""
        if self._pool is not None:
            self._requeue(self._pool.reclaim())

    def _requeue(self, messages: list[_Message]) -> None:
        if messages:
            assert self.queue is not None  # checked by __init__
            self._broker.queue(self.queue).requeue(messages)

    def _stop_on_fatal(self) -> None:
        """A worker's processor raised ``SystemExit`` or
        ``KeyboardInterrupt``: stop as after SIGTERM."""
        self._terminated = True

    def _handle(self, message: _Message) -> None:
        if not telemetry.enabled:
            self._settle(message, self._outcome(message), None)
            return
        with telemetry.processing(
                self.queue or '', message.headers, routing_key=message.routing_key,
                message_id=message.message_id, conversation_id=message.correlation_id,
                body_size=len(message.body), system='memory') as span:
            outcome = self._outcome(message)
            span.settled(outcome.ack, outcome.error)
            reply_headers = None if outcome.reply is None else span.reply_headers(
                message.reply_to, len(outcome.reply))
            self._settle(message, outcome, reply_headers)

    def _outcome(self, message: _Message) -> dispatch.Outcome:
        """Decode the message and run the processor on it."""
        return dispatch.handle(
            self.processor, self.pargs, self.pkwargs, message.body,
            message.content_type, message.reply_to is not None,
            message.message_id or message.correlation_id,
            self.settings.max_message_size, self._reject_log, message.info())

    def _settle(self, message: _Message, outcome: dispatch.Outcome,
                reply_headers: Optional[dict[str, Any]]) -> None:
        """Answer an RPC request (the memory queue needs no acknowledgement)."""
        if self._pool is not None and not self._pool.settling():
            return   # close() put it back in the queue meanwhile
        if outcome.reply is not None:
            assert message.reply_to is not None  # only requests get a reply
            if not self._broker.publish(message.reply_to, _Message(
                    outcome.reply, codec.REPLY_CONTENT_TYPE,
                    correlation_id=message.correlation_id, headers=reply_headers)):
                log.debug('Dropped the reply to %s: its caller is gone',
                          message.correlation_id)


def _described(message: _Message) -> object:
    """How log lines name a message: its id."""
    return repr(message.message_id or message.correlation_id)
