# SPDX-License-Identifier: Apache-2.0
"""One AMQP connection driven by its own I/O thread, behind blocking calls.

Each :mod:`~occo.util.communication.mq` object owns one :class:`AmqpLoop`: a
daemon thread runs a :class:`pika.SelectConnection` with one channel. Why a
thread of its own (see ``docs/design.rst`` for the measurements):

* heartbeats are answered while the user's processor runs for minutes;
* publisher confirms are pipelined: publishing does not wait for a round
  trip, the broker's acks arrive on the I/O thread;
* several user threads may share one RPC producer: they only hand work to
  the I/O thread and wait for their own reply;
* a lost connection is noticed at once, not on the next call.

Threads and what they own
-------------------------

pika is not thread-safe, so exactly one thread runs pika code at a time: the
one that holds the loop's **turn** (a lock). The I/O thread holds it except
while it waits in ``epoll_wait``; another thread may take it then
(:meth:`AmqpLoop.run_now`, :meth:`AmqpLoop.drive`). Everything reached from
pika's callbacks (the channel, the roles' delivery tags and reply slots
bookkeeping, timers) belongs to the turn. The only pika call made without
the turn is ``add_callback_threadsafe``, which pika documents as
thread-safe.

The loop's own shared state (its :class:`LoopState`, its error and its
outbox) is guarded by a small lock, ``_lock``, held only for a few
statements and never while waiting or running pika code. The state changes
in one place, ``AmqpLoop._set_state``.

Other threads talk to the loop in three ways:

* :meth:`AmqpLoop.submit` appends an operation to the outbox and wakes the
  I/O thread once per batch. The I/O thread runs every queued operation and
  writes the frames the batch produced with one ``send``.
* :meth:`AmqpLoop.run_now` queues the operation and, if the turn is free,
  runs the outbox in the calling thread at once.
* :meth:`AmqpLoop.drive` lends the socket to a thread that waits for a
  reply or a delivery, so that what arrives wakes that thread directly.

Without the fast path (:data:`~.pika_internals.FAST` false) the I/O thread
never lets go of the turn: :meth:`~AmqpLoop.run_now` is :meth:`~AmqpLoop.submit`
and :meth:`~AmqpLoop.drive` returns ``False`` at once.

pika's errors become this package's errors in one place,
:func:`~occo.util.communication.failures.translate_error`.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Optional

import pika
import pika.channel

from ..exceptions import CommunicationError, TransientError
from . import pika_internals
from .failures import translate_error

__all__ = ['AmqpLoop', 'LoopState', 'Operation', 'Step', 'run_steps', 'publish']

log = logging.getLogger(__name__)

#: Longest wait of a thread driving the connection between two looks at
#: what it waits for (it is poked sooner when something changes).
_MAX_DRIVE_WAIT = 1.0

#: What :meth:`AmqpLoop.submit` runs with the turn held: ``operation(channel)``.
Operation = Callable[[pika.channel.Channel], object]
#: One step of :func:`run_steps`: ``step(next_step)``; pika calls
#: ``next_step`` with the reply frame.
Step = Callable[[Callable[..., None]], object]

#: Publishes one message on a channel of an :class:`AmqpLoop` (turn held).
publish = pika_internals.publish

def run_steps(steps: Iterable[Step], done: Callable[[], object]) -> None:
    """Run asynchronous ``steps`` one after the other, then call ``done()``.

    Each step is called with one argument, the function that starts the
    next step; pika calls it with the reply frame, which is ignored.
    """
    queue = collections.deque(steps)

    def next_step(*_ignored: object) -> None:
        if queue:
            queue.popleft()(next_step)
        else:
            done()
    next_step()


class LoopState(enum.Enum):
    """The life of an :class:`AmqpLoop`; it only ever moves down this list
    (``FAILED`` may be skipped, or followed by ``STOPPING``)."""

    #: :meth:`~AmqpLoop.start` connects and runs ``setup``.
    CONNECTING = 'connecting'
    #: Ready: operations run.
    OPEN = 'open'
    #: The connection or the channel died; ``error`` says why.
    FAILED = 'failed'
    #: :meth:`~AmqpLoop.stop` was called: what was queued runs, then the
    #: connection closes.
    STOPPING = 'stopping'
    #: The I/O thread ended; nothing runs any more.
    CLOSED = 'closed'


#: The states in which operations are accepted.
_ACCEPTING = (LoopState.CONNECTING, LoopState.OPEN)


class AmqpLoop:
    """A connection and one channel, run by a daemon I/O thread.

    :param parameters: :class:`pika.ConnectionParameters`.
    :param endpoint: how errors name the peer: user, host, port and vhost
        (never the password).
    :param setup: ``setup(channel, done)``, called on the I/O thread when the
        channel is open; it declares what the user needs, registers channel
        callbacks, and calls ``done()`` when the loop is ready.
    :param on_lost: ``on_lost(loop, error)``, called once when the
        connection or the channel of an opened loop died (not when
        :meth:`stop` closed it), by the thread that holds the turn (the I/O
        thread or a caller running pika code). ``loop`` tells which loop
        died: a role ignores one that is no longer its current loop.
    :param after_drain: ``after_drain(channel)``, called after each batch of
        operations (turn held), before its frames are written.
    :param name: names the I/O thread ``occo-amqp-io-<name>``, e.g. the role
        and its number, ``rpc-3``.
    """

    def __init__(
            self, parameters: pika.ConnectionParameters, endpoint: str,
            setup: Callable[[pika.channel.Channel, Callable[[], None]], object],
            on_lost: Optional[Callable[[AmqpLoop, CommunicationError], object]] = None,
            after_drain: Optional[Callable[[pika.channel.Channel], object]] = None,
            name: str = 'loop',
    ) -> None:
        self._parameters = parameters
        self.endpoint = endpoint
        self._setup = setup
        self._on_lost = on_lost
        self._after_drain = after_drain
        #: Held by whichever thread runs pika code (see the module docs).
        self._turn = threading.Lock()
        #: Guards _state, error, failed_at, _wake_pending and appending to
        #: _outbox; held for a few statements, never across pika code.
        self._lock = threading.Lock()
        self._state = LoopState.CONNECTING
        #: The :class:`~occo.util.exceptions.CommunicationError` that ended
        #: the loop, if any (_lock).
        self.error: Optional[CommunicationError] = None
        #: ``time.monotonic()`` when the loop failed, if it did (_lock).
        self.failed_at: Optional[float] = None
        #: ``time.monotonic()`` when :meth:`start` returned (set once).
        self.opened_at: Optional[float] = None
        #: Operations to run: appended under _lock, popped by the turn.
        self._outbox: collections.deque[Operation] = collections.deque()
        #: A wake-up of the I/O thread is on its way (_lock).
        self._wake_pending = False
        self._ready = threading.Event()
        #: Set on the I/O thread before it runs pika; read after start().
        self.connection: Optional[pika.SelectConnection] = None
        self.channel: Optional[pika.channel.Channel] = None
        self._ioloop: Optional[pika_internals.TurnIOLoop] = None
        self._socket_fd: Optional[int] = None
        self._thread = threading.Thread(
            target=self._run, daemon=True,
            name='occo-amqp-io-' + name)

    # -- lifecycle ----------------------------------------------------------
    @property
    def state(self) -> LoopState:
        """Where the loop is in its life."""
        return self._state

    @property
    def alive(self) -> bool:
        """``True`` while connecting or open."""
        return self._state in _ACCEPTING

    def _set_state(self, state: LoopState) -> None:
        """The one place the state changes (``_lock`` held)."""
        assert self._lock.locked()
        self._state = state

    def start(self, timeout: float) -> None:
        """Connect, open the channel and run ``setup``; wait for all that.

        :raises CommunicationError: when any of it fails or takes longer
            than ``timeout`` seconds.
        """
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop(timeout=1)
            raise TransientError(504, 'timed out after {} s connecting to '
                                 '{}'.format(timeout, self.endpoint))
        with self._lock:
            error = self.error
            if error is None and self._state is LoopState.CONNECTING:
                self._set_state(LoopState.OPEN)
        if error is not None:
            self._thread.join(timeout)
            raise error
        self.opened_at = time.monotonic()

    def stop(self, timeout: float = 10) -> None:
        """Run what was submitted, close the connection, end the thread.

        Safe to call several times, from any thread, and after a failure.
        From then on :meth:`submit` and :meth:`run_now` raise.
        """
        with self._lock:
            if self._state is LoopState.CLOSED:
                return
            self._set_state(LoopState.STOPPING)
            self._call_threadsafe(self._close)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning('I/O thread of %s did not end in %s s',
                            self.endpoint, timeout)

    @contextlib.contextmanager
    def holding_turn(self) -> Iterator[None]:
        """Hold the turn: no pika callback of this loop runs meanwhile. A
        role takes over what its callbacks own this way after :meth:`stop`."""
        self._turn.acquire()
        try:
            yield
        finally:
            self._release_turn()   # runs what others queued meanwhile

    def take_unsent(self) -> list[Operation]:
        """Remove and return the operations a dead loop did not run.

        Call it after :meth:`stop`, to hand them to a new loop.
        """
        with self._lock:
            unsent = list(self._outbox)
            self._outbox.clear()
        return unsent

    # -- handing work over -------------------------------------------------------
    def submit(self, operation: Operation) -> None:
        """Run ``operation(channel)`` with the turn held, soon.

        Operations run in the order they were submitted. Thread-safe.

        :raises CommunicationError: when the loop failed or is stopping.
        """
        with self._lock:
            self._accept(operation)
            self._wake_locked()

    def _wake(self) -> None:
        """Have the I/O thread run the outbox soon (once per batch)."""
        with self._lock:
            self._wake_locked()

    def _wake_locked(self) -> None:
        """:meth:`_wake` with ``_lock`` held."""
        if not self._wake_pending:
            self._wake_pending = True
            self._call_threadsafe(self._drain)

    def _call_threadsafe(self, callback: Callable[[], object]) -> None:
        """Have the I/O thread call ``callback`` (``_lock`` held: the I/O
        thread sets CLOSED under it before it closes pika's loop, so the
        loop is never closed under this call)."""
        if self._state is not LoopState.CLOSED and self.connection is not None:
            self.connection.ioloop.add_callback_threadsafe(callback)

    def _accept(self, operation: Operation) -> None:
        """Queue ``operation`` or raise why the loop takes none (_lock held)."""
        if self._state not in _ACCEPTING:
            raise self.error or TransientError(
                503, 'connection to {} closed'.format(self.endpoint))
        self._outbox.append(operation)

    def run_now(self, operation: Operation) -> None:
        """Queue ``operation(channel)`` and run the queue in the calling
        thread, writing its frames, unless another thread runs pika code.

        The calling thread takes the loop's turn, free whenever the I/O
        thread waits for the network, which saves waking the I/O thread
        (tens of microseconds, most of an RPC request's latency on a
        loopback broker). When the turn is taken, the call returns at once:
        the holder runs the queue before it lets go of the turn or waits,
        so several threads' requests leave in one write. Not to be called
        from the loop's own callbacks.

        :raises CommunicationError: when the loop failed or is stopping (if
            it fails while another thread holds the turn, the operation is
            dropped; the role's ``on_lost`` tells its waiters).
        """
        if self._ioloop is None:
            self.submit(operation)   # pika's own loop never lets go of the turn
            return
        with self._lock:
            self._accept(operation)
        if not self._turn.acquire(blocking=False):
            return   # its holder runs the outbox before it lets go or waits
        try:
            if self._runnable():
                self._drain()
                return
        finally:
            self._release_turn()
        with self._lock:
            failed = self.error
        if failed is not None:
            raise failed
        if self._outbox:
            self._wake()

    def _runnable(self) -> bool:
        """Whether operations wait and the channel can run them (turn held)."""
        return (bool(self._outbox) and self._state in _ACCEPTING
                and self.channel is not None and self.channel.is_open)

    def _release_turn(self) -> None:
        """Let go of the turn, then run what was queued meanwhile by threads
        that found the turn taken (unless another thread took it: then that
        one does)."""
        self._turn.release()
        while self._runnable() and self._turn.acquire(blocking=False):
            try:
                self._drain_runnable()
            finally:
                self._turn.release()

    def _drain_runnable(self) -> None:
        """Run the outbox if operations wait and can run (turn held)."""
        if self._runnable():
            self._drain()

    def drive(self, done: Callable[[], bool], timeout: Optional[float]) -> bool:
        """Wait until ``done()`` is true, reading the connection in the
        calling thread meanwhile.

        The thread that waits for a reply or a delivery borrows the socket
        from the I/O thread and reads it itself: what arrives wakes only the
        thread that waits for it, instead of the I/O thread, which would
        then have to wake it (tens of microseconds, the largest cost of a
        round trip on a loopback broker). One thread drives at a time.

        :param done: called with the loop's turn held; it must not block.
        :param timeout: seconds, or ``None`` for no limit.
        :returns: ``True`` when ``done()`` came true or ``timeout`` passed;
            ``False``, perhaps at once, when this thread cannot drive (another
            one does, the connection is closing, no fast path): the caller
            then waits its usual way, for what is left of ``timeout``.
        """
        ioloop, fd = self._ioloop, self._socket_fd
        if ioloop is None or fd is None:
            return False
        epoll = ioloop.poller.shared_epoll
        if epoll is None or epoll.borrowing:
            return False   # another thread drives; no need to wait for the turn
        deadline = None if timeout is None else time.monotonic() + timeout
        self._turn.acquire()
        try:
            epoll = ioloop.poller.shared_epoll
            if (epoll is None or epoll.borrowing or not self.alive
                    or not epoll.lend(fd)):
                return False
            try:
                while not done():
                    if not self.alive or epoll.lent is None:
                        return False
                    wait = _MAX_DRIVE_WAIT
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                        if wait <= 0:
                            break
                    events = epoll.wait_borrowed(wait)
                    if events and epoll.lent == fd:
                        self._dispatch(ioloop.poller, fd, events)
                    self._drain_runnable()
            finally:
                epoll.give_back()
        finally:
            self._release_turn()
        return True

    def _dispatch(self, poller: pika_internals.TurnPoller, fd: int,
                  events: int) -> None:
        """Run pika's handler of the lent socket (turn held)."""
        try:
            with pika_internals.batch(self.connection):
                poller.dispatch(fd, events)
        except Exception as e:
            log.exception('Reading from %s failed', self.endpoint)
            self._fail(translate_error(e, self.endpoint))
            assert self.connection is not None  # it opened the socket
            self.connection.ioloop.stop()

    def call_later(self, delay: float, callback: Callable[[], object]) -> None:
        """Run ``callback()`` with the turn held in ``delay`` seconds.

        Call it with the turn held (from an operation or a pika callback);
        timers die with the connection.
        """
        assert self.connection is not None  # an operation runs on an open loop
        self.connection.ioloop.call_later(delay, callback)
        if threading.current_thread() is not self._thread:
            # The I/O thread waits with a timeout it computed before.
            with self._lock:
                self._call_threadsafe(_nothing)

    # -- the I/O thread ----------------------------------------------------------
    def _run(self) -> None:
        self._turn.acquire()
        try:
            self.connection, self._ioloop = pika_internals.connect(
                self._parameters, self._on_open, self._on_open_error,
                self._on_closed, self._turn, self._runnable, self._drain_runnable)
            self.connection.ioloop.start()
        except Exception as e:
            log.exception('I/O loop of %s failed', self.endpoint)
            self._fail(translate_error(e, self.endpoint))
        finally:
            self._ready.set()
            with self._lock:
                self._set_state(LoopState.CLOSED)
            if self.connection is not None:
                self.connection.ioloop.close()
            self._turn.release()

    def _drain(self) -> None:
        """Run the queued operations, then ``after_drain`` (turn held)."""
        with self._lock:
            self._wake_pending = False
        channel = self.channel
        if channel is None or not channel.is_open:
            return
        outbox = self._outbox
        try:
            with pika_internals.batch(self.connection):
                while outbox:
                    outbox.popleft()(channel)
                if self._after_drain is not None:
                    self._after_drain(channel)
        except Exception as e:
            log.exception('Operation on %s failed', self.endpoint)
            self._fail(translate_error(e, self.endpoint))

    def _on_open(self, connection: pika.SelectConnection) -> None:
        if self._state is LoopState.STOPPING:   # start() gave up waiting
            connection.close()
            return
        self._socket_fd = pika_internals.socket_fd(connection)
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: pika.channel.Channel) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        self._setup(channel, self._ready.set)

    def _on_open_error(self, connection: pika.SelectConnection,
                       error: BaseException) -> None:
        self._fail(translate_error(error, self.endpoint))
        connection.ioloop.stop()

    def _on_closed(self, connection: pika.SelectConnection,
                   reason: BaseException) -> None:
        self._fail(translate_error(reason, self.endpoint))
        connection.ioloop.stop()

    def _on_channel_closed(self, channel: pika.channel.Channel,
                           reason: Exception) -> None:
        self._fail(translate_error(reason, self.endpoint))
        assert self.connection is not None  # it opened the channel
        if self.connection.is_open:
            self.connection.close()

    def _close(self) -> None:
        """Stop: run what was queued, then close (I/O thread)."""
        self._drain()
        assert self.connection is not None  # _close runs on its I/O loop
        if self.connection.is_closed:
            self.connection.ioloop.stop()
        elif not self.connection.is_closing:
            self.connection.close()

    def _fail(self, error: CommunicationError) -> None:
        """The loop died of ``error``: record it once, tell the role (turn
        held). A loop being stopped does not fail."""
        with self._lock:
            if self.error is not None or self._state in (
                    LoopState.STOPPING, LoopState.CLOSED):
                return
            was_open = self._state is LoopState.OPEN
            self.error = error
            self.failed_at = time.monotonic()
            self._set_state(LoopState.FAILED)
        self._ready.set()
        if was_open and self._on_lost is not None:
            self._on_lost(self, error)


def _nothing(*_ignored: Any) -> None:
    pass
