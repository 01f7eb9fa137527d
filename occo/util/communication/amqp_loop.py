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

Other threads talk to the loop only through :meth:`AmqpLoop.submit`, which
appends an operation to an outbox and wakes the I/O thread once per batch
(``add_callback_threadsafe``, the only thread-safe call pika offers). The
I/O thread runs every queued operation, and writes all the frames the batch
produced with one ``send`` (:class:`_BatchingConnection`), so a burst of
messages costs one wake-up and one system call, not three per message.

pika's errors are translated into this package's errors in one place,
:func:`translate_error`.
"""

from __future__ import annotations

import collections
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional, Union

import pika
import pika.channel
import pika.exceptions as pe
from pika.adapters import select_connection
from pika.adapters.utils import connection_workflow as workflow
from pika.adapters.utils.io_services_utils import \
    _AsyncPlaintextTransport as _PlaintextTransport

from ..exceptions import CommunicationError, CriticalError, TransientError

__all__ = ['AmqpLoop', 'translate_error', 'run_steps']

log = logging.getLogger(__name__)

_HAS_EPOLL = hasattr(select, 'epoll')

#: Frames are sent once this many bytes wait in a batch.
_BATCH_BYTES = 256 * 1024

#: What :meth:`AmqpLoop.submit` runs on the I/O thread: ``operation(channel)``.
_Operation = Callable[[pika.channel.Channel], object]
#: One step of :func:`run_steps`: ``step(next_step)``; pika calls
#: ``next_step`` with the reply frame.
_Step = Callable[[Callable[..., None]], object]


class _BatchingConnection(pika.SelectConnection):
    """A :class:`pika.SelectConnection` that writes a batch of frames at once.

    pika hands every frame to the socket separately; between
    :meth:`begin_batch` and :meth:`end_batch` frames are collected and then
    written with one call (TCP_NODELAY stays on, so nothing waits for Nagle).
    """

    _batch: Optional[list[bytes]] = None
    _batch_size = 0

    # This class overrides and calls pika privates (_output_marshaled_frames,
    # _transport, _on_socket_writable) that pika's type stubs leave out:
    # hence the narrow "type: ignore" comments below.
    def _output_marshaled_frames(self, marshaled_frames: Sequence[bytes]) -> None:
        if self._batch is None:
            super()._output_marshaled_frames(  # type: ignore[misc]
                (b''.join(marshaled_frames),))
            return
        self._batch.extend(marshaled_frames)
        self._batch_size += sum(map(len, marshaled_frames))
        if self._batch_size >= _BATCH_BYTES:
            self.end_batch()
            self.begin_batch()

    def begin_batch(self) -> None:
        """Collect frames from now on instead of writing them."""
        self._batch = []
        self._batch_size = 0

    def end_batch(self) -> None:
        """Write the collected frames with one call, and stop collecting."""
        frames, self._batch = self._batch, None
        if frames:
            super()._output_marshaled_frames(  # type: ignore[misc]
                (b''.join(frames),))
            self._send_now()

    def _send_now(self) -> None:
        # pika sends buffered data on the poll loop's next turn; sending it
        # here saves that turn (an epoll call) on every request and ack.
        transport = self._transport  # type: ignore[attr-defined]
        if isinstance(transport, _PlaintextTransport) and transport.get_write_buffer_size():
            transport._on_socket_writable()  # type: ignore[attr-defined]


class _TurnReleasingEpoll:
    """An epoll object that gives up the loop's turn while it waits.

    The I/O thread holds the *turn* (a lock) whenever it runs pika code and
    releases it only while it blocks in ``epoll_wait``. A calling thread that
    finds the turn free may therefore run pika itself, on the spot, instead
    of handing the work over and waiting for the I/O thread to wake up
    (:meth:`AmqpLoop.run_now`).
    """

    __slots__ = ('_epoll', '_turn')

    def __init__(self, epoll: Any, turn: threading.Lock) -> None:
        self._epoll = epoll
        self._turn = turn

    def poll(self, timeout: float = -1) -> list[tuple[int, int]]:
        self._turn.release()
        try:
            return self._epoll.poll(timeout)  # type: ignore[no-any-return]
        finally:
            self._turn.acquire()

    def register(self, fileno: int, events: int) -> None:
        self._epoll.register(fileno, events)

    def modify(self, fileno: int, events: int) -> None:
        self._epoll.modify(fileno, events)

    def unregister(self, fileno: int) -> None:
        self._epoll.unregister(fileno)

    def close(self) -> None:
        self._epoll.close()


class _TurnPoller(select_connection.EPollPoller):
    def __init__(self, turn: threading.Lock, **kwargs: Any) -> None:
        self._turn = turn
        super().__init__(**kwargs)

    def _create_poller(self) -> _TurnReleasingEpoll:
        return _TurnReleasingEpoll(select.epoll(), self._turn)


class _TurnIOLoop(select_connection.IOLoop):
    """pika's IOLoop on epoll, releasing ``turn`` only while it waits."""

    def __init__(self, turn: threading.Lock) -> None:
        self._turn = turn
        super().__init__()

    def _get_poller(self, get_wait_seconds: Callable[[], Optional[float]],
                    process_timeouts: Callable[[], None]) -> _TurnPoller:
        return _TurnPoller(self._turn, get_wait_seconds=get_wait_seconds,
                           process_timeouts=process_timeouts)


def run_steps(steps: Iterable[_Step], done: Callable[[], object]) -> None:
    """Run asynchronous ``steps`` one after the other, then call ``done()``.

    Each step is called with one argument, the function that starts the
    next step; pika calls it with the reply frame, which is ignored.
    """
    steps = collections.deque(steps)

    def next_step(*_ignored: object) -> None:
        if steps:
            steps.popleft()(next_step)
        else:
            done()
    next_step()


class AmqpLoop:
    """A connection and one channel, run by a daemon I/O thread.

    :param parameters: :class:`pika.ConnectionParameters`.
    :param endpoint: how errors name the peer: user, host, port and vhost
        (never the password).
    :param setup: ``setup(channel, done)``, called on the I/O thread when the
        channel is open; it declares what the user needs, registers channel
        callbacks, and calls ``done()`` when the loop is ready.
    :param on_lost: ``on_lost(error)``, called on the I/O thread once, when
        the connection or the channel died (not when :meth:`stop` closed it).
    :param after_drain: ``after_drain()``, called on the I/O thread after
        each batch of operations, before its frames are written.
    """

    def __init__(
            self, parameters: pika.ConnectionParameters, endpoint: str,
            setup: Callable[[pika.channel.Channel, Callable[[], None]], object],
            on_lost: Optional[Callable[[CommunicationError], object]] = None,
            after_drain: Optional[Callable[[], object]] = None) -> None:
        self._parameters = parameters
        self.endpoint = endpoint
        self._setup = setup
        self._on_lost = on_lost
        self._after_drain = after_drain
        #: Held by whichever thread runs pika code; see _TurnReleasingEpoll.
        self._turn = threading.Lock()
        self._outbox: collections.deque[_Operation] = collections.deque()
        self._wake_pending = False
        self._ready = threading.Event()
        self._stopping = False
        #: The :class:`~occo.util.exceptions.CommunicationError` that ended the loop, if any.
        self.error: Optional[CommunicationError] = None
        #: ``time.monotonic()`` when the loop failed, if it did.
        self.failed_at: Optional[float] = None
        self.connection: Optional[_BatchingConnection] = None
        self.channel: Optional[pika.channel.Channel] = None
        self._thread = threading.Thread(
            target=self._run, name='occo-amqp-io', daemon=True)

    @property
    def alive(self) -> bool:
        """``True`` until the connection failed or was stopped."""
        return self.error is None and not self._stopping

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
        if self.error is not None:
            self._thread.join(timeout)
            raise self.error

    def submit(self, operation: _Operation) -> None:
        """Run ``operation(channel)`` on the I/O thread, soon.

        Operations run in the order they were submitted. Thread-safe.

        :raises CommunicationError: when the connection is lost.
        """
        if self.error is not None:
            raise self.error
        self._outbox.append(operation)
        if not self._wake_pending:
            self._wake_pending = True
            assert self.connection is not None  # start() returned
            self.connection.ioloop.add_callback_threadsafe(self._drain)

    def run_now(self, operation: _Operation) -> None:
        """Run ``operation(channel)`` at once if the I/O thread is idle, else
        :meth:`submit` it.

        The I/O thread is idle while it waits for the network; the calling
        thread then takes its turn, runs what is queued and ``operation``,
        and writes the frames itself, which saves the wake-up of the I/O
        thread (tens of microseconds, most of an RPC request's latency on a
        loopback broker). Thread-safe; operations still run in order.

        :raises CommunicationError: when the connection is lost.
        """
        if self._turn.acquire(blocking=False):
            try:
                if self.alive and self.channel is not None and self.channel.is_open:
                    self._outbox.append(operation)
                    self._drain()
                    return
            finally:
                self._turn.release()
        self.submit(operation)

    def take_unsent(self) -> list[_Operation]:
        """Remove and return the operations a dead loop did not run.

        Call it after :meth:`stop`, to hand them to a new loop.
        """
        unsent = list(self._outbox)
        self._outbox.clear()
        return unsent

    def stop(self, timeout: float = 10) -> None:
        """Run what was submitted, close the connection, end the thread.

        Safe to call several times and after a failure.
        """
        if not self._thread.is_alive():
            return
        self._stopping = True
        try:
            assert self.connection is not None
            self.connection.ioloop.add_callback_threadsafe(self._close)
        except Exception:  # the loop is gone already
            log.debug('I/O loop closed before stop', exc_info=True)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning('I/O thread of %s did not end in %s s',
                            self.endpoint, timeout)

    # -- I/O thread ------------------------------------------------------
    def _run(self) -> None:
        self._turn.acquire()
        try:
            self.connection = _BatchingConnection(
                self._parameters, on_open_callback=self._on_open,
                on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_closed,
                custom_ioloop=_TurnIOLoop(self._turn) if _HAS_EPOLL else None)
            self.connection.ioloop.start()
        except Exception as e:
            log.exception('I/O loop of %s failed', self.endpoint)
            self._fail(translate_error(e, self.endpoint))
        finally:
            self._ready.set()
            if self.connection is not None:
                self.connection.ioloop.close()
            self._stopping = True   # run_now must not touch a closed loop
            self._turn.release()

    def _drain(self) -> None:
        self._wake_pending = False
        if self.channel is None or not self.channel.is_open:
            return
        assert self.connection is not None  # it opened the channel
        outbox = self._outbox
        self.connection.begin_batch()
        try:
            while outbox:
                outbox.popleft()(self.channel)
            if self._after_drain is not None:
                self._after_drain()
        except Exception as e:
            log.exception('Operation on %s failed', self.endpoint)
            self._fail(translate_error(e, self.endpoint))
        finally:
            self.connection.end_batch()

    def _on_open(self, connection: _BatchingConnection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: pika.channel.Channel) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        self._setup(channel, self._ready.set)

    def _on_open_error(self, connection: _BatchingConnection,
                       error: BaseException) -> None:
        self._fail(translate_error(error, self.endpoint))
        connection.ioloop.stop()

    def _on_closed(self, connection: _BatchingConnection,
                   reason: BaseException) -> None:
        if not self._stopping:
            self._fail(translate_error(reason, self.endpoint))
        connection.ioloop.stop()

    def _on_channel_closed(self, channel: pika.channel.Channel,
                           reason: Exception) -> None:
        if self._stopping:
            return
        self._fail(translate_error(reason, self.endpoint))
        assert self.connection is not None  # it opened the channel
        if self.connection.is_open:
            self.connection.close()

    def _close(self) -> None:
        self._drain()
        assert self.connection is not None  # _close runs on its I/O loop
        if self.connection.is_closed:
            self.connection.ioloop.stop()
        elif not self.connection.is_closing:
            self.connection.close()

    def _fail(self, error: CommunicationError) -> None:
        if self.error is not None:
            return
        self.failed_at = time.monotonic()
        self.error = error
        self._ready.set()
        if self._on_lost is not None:
            self._on_lost(error)


def translate_error(error: BaseException, endpoint: str) -> CommunicationError:
    """Map a pika or socket error to a :class:`~occo.util.exceptions.CommunicationError`.

    The message names the user, host, port and vhost (``endpoint``) and,
    where the broker said so, the resource; never the password.

    :param error: the exception pika reported.
    :param endpoint: text naming the peer, e.g.
        ``"user 'guest' at 127.0.0.1:5672, vhost '/'"``.
    """
    if isinstance(error, CommunicationError):
        return error
    if isinstance(error, workflow.AMQPConnectionWorkflowFailed) and error.exceptions:
        return translate_error(error.exceptions[-1], endpoint)
    if isinstance(error, workflow.AMQPConnectorPhaseErrorBase):
        return translate_error(error.exception, endpoint)
    if isinstance(error, workflow.AMQPConnectorStackTimeout):
        return TransientError(504, 'timed out connecting to {}'.format(endpoint))
    if isinstance(error, (pe.ProbableAuthenticationError,
                          pe.AuthenticationError)):
        return CriticalError(403, 'access refused for {}: wrong user or '
                             'password'.format(endpoint))
    if isinstance(error, pe.ProbableAccessDeniedError):
        return CriticalError(403, 'access refused for {}: the vhost does not '
                             'exist or the user may not use it'.format(endpoint))
    if isinstance(error, (pe.ConnectionClosedByBroker, pe.ChannelClosedByBroker)):
        return _broker_closed(error, endpoint)
    if (isinstance(error, pe.AMQPConnectionError) and error.args
            and isinstance(error.args[0], BaseException)):
        return translate_error(error.args[0], endpoint)
    if isinstance(error, socket.gaierror):
        return TransientError(503, 'cannot resolve the host of {}: {}'.format(
            endpoint, error.strerror or error))
    if isinstance(error, ConnectionRefusedError):
        return TransientError(503, 'connection refused by {}: is the broker '
                              'running?'.format(endpoint))
    if isinstance(error, (socket.timeout, TimeoutError)):
        return TransientError(504, 'timed out connecting to {}'.format(endpoint))
    if isinstance(error, pe.AMQPHeartbeatTimeout):
        return TransientError(503, 'heartbeat timeout on {}'.format(endpoint))
    if isinstance(error, (pe.StreamLostError, OSError)):
        return TransientError(503, 'connection to {} lost: {}'.format(
            endpoint, error))
    if isinstance(error, (pe.ConnectionClosedByClient, pe.ChannelClosedByClient)):
        return TransientError(503, 'connection to {} closed'.format(endpoint))
    return TransientError(503, 'communication with {} failed: {}: {}'.format(
        endpoint, type(error).__name__, error))


def _broker_closed(
        error: Union[pe.ConnectionClosedByBroker, pe.ChannelClosedByBroker],
        endpoint: str) -> CommunicationError:
    code, text = error.reply_code, error.reply_text
    if code == 403:
        return CriticalError(403, 'access refused for {}: {}'.format(
            endpoint, text))
    if code == 530:
        return CriticalError(403, 'not allowed for {}: {}'.format(
            endpoint, text))
    if code in (404, 406):
        return CriticalError(code, '{} ({})'.format(text, endpoint))
    return TransientError(503, 'the broker closed the connection of {}: {} {}'
                          .format(endpoint, code, text))
