# SPDX-License-Identifier: Apache-2.0
"""The wall around pika's internals: every private name this package uses,
and every subclass of a pika class, lives here and nowhere else.

The AMQP backend is fast because it bends three things pika does not offer
publicly (``docs/design.rst`` has the measurements):

* frames are written straight to the socket, a batch at a time, instead of
  one ``send`` per frame on the poller's next turn, and large bodies
  without being copied, also when the socket is full; received bytes are
  read up to 1 MB at a time (pika: 4 KB) and cut into frames without
  copying the rest of the buffer after each one (:class:`FastConnection`);
* a thread that waits for a reply may *borrow* the socket and read it
  itself, so the reply wakes that thread and not the I/O thread
  (:class:`SharedEpoll`);
* the I/O thread lets go of a lock, the loop's *turn*, only while it waits
  in ``epoll_wait``, so a caller may run pika code in its own thread
  (:class:`TurnIOLoop`).

What this relies on, checked at import (:data:`FAST`) or where it is read:

====================================================  ===================================
pika name                                             used for
====================================================  ===================================
``Connection._output_marshaled_frames(frames)``       overridden: collect a batch of frames
``Connection.bytes_sent``, ``.frames_sent``           counted where the override writes
``Connection._on_data_available(data)``               overridden: cut frames from an offset
``Connection._frame_buffer``, ``.bytes_received``     kept as pika keeps them
``Connection._process_frame(frame)``                  called: pika handles each frame
``BaseConnection._proto_connection_made(transport)``  overridden: set the transport's read sizes
``_AsyncTransportBase._MAX_RECV_BYTES``               set per transport: bytes per ``recv``
``_AsyncTransportBase._MAX_CONSUME_BYTES``            set per transport: bytes per readable event
``BaseConnection._adapter_emit_data(data)``           overridden: write to the socket at once
``_AsyncTransportBase._produce()``                    overridden: send the buffer with
                                                      ``sendmsg`` (``_GatheringTransport``)
``_AsyncTransportBase._tx_buffers``,                  the buffer it sends, and its size in
``._tx_buffered_byte_count``                          bytes, kept as pika keeps them
``BaseConnection._transport``                         read: the transport below
``io_services_utils._AsyncPlaintextTransport``        its ``_sock``, ``_state``,
                                                      ``_STATE_ACTIVE``: plain TCP is idle
``select_connection.EPollPoller._create_poller()``    overridden: the shared epoll
``select_connection.EPollPoller._poll``               read: that epoll
``select_connection.EPollPoller._dispatch_fd_events``  called: run pika's handler of the socket
``select_connection.IOLoop._get_poller()``            overridden: the turn-aware poller
====================================================  ===================================

Where one is missing, or the environment variable ``OCCO_AMQP_PLAIN_PIKA``
is ``1``, :data:`FAST` is ``False``, the library logs one INFO line, and
:func:`connect` builds a plain :class:`pika.SelectConnection`: every
operation then runs on the I/O thread, handed over with
``add_callback_threadsafe`` (the one thread-safe call pika documents), and
messages go out with ``channel.basic_publish``. Correct, and slower. An
instance attribute that turns out missing at run time (``_sock``,
``_state``) makes that one connection take pika's public path.

Which pika methods are called from where: on the I/O thread, anything; on
another thread, ``add_callback_threadsafe`` always, and anything else only
while that thread holds the loop's turn, so that exactly one thread runs
pika code at a time (see :class:`~.amqp_loop.AmqpLoop`).
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import itertools
import logging
import os
import select
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Optional, Union

import pika
import pika.channel
import pika.exceptions as pe
import pika.frame
import pika.spec
from pika.adapters import select_connection
from pika.adapters.utils import io_services_utils

from .amqp_frames import PublishFrames

_FRAME_HEAD = struct.Struct('>BHL')   # type, channel, payload size
_FRAME_HEADER_SIZE = _FRAME_HEAD.size
#: Frame types that :func:`pika.frame.decode_frame` reads from one frame's
#: bytes; another first byte (``AMQP``, garbage) gets the whole buffer.
_FRAME_KINDS = frozenset([pika.spec.FRAME_METHOD, pika.spec.FRAME_HEADER,
                          pika.spec.FRAME_BODY, pika.spec.FRAME_HEARTBEAT])

__all__ = ['FAST', 'PLAIN_REASON', 'connect', 'publish', 'batch', 'socket_fd',
           'received_headers',
           'FastConnection', 'SharedEpoll', 'TurnPoller', 'TurnIOLoop']

log = logging.getLogger(__name__)

#: Frames are sent once this many bytes wait in a batch.
_BATCH_BYTES = 256 * 1024
#: Frames of at least this many bytes in all go to the socket as they are,
#: with one ``sendmsg``, instead of joined first: the join would copy every
#: body once more. Smaller batches are joined: that copy is cheaper than
#: handing the kernel one buffer per frame.
_GATHER_BYTES = 64 * 1024
#: What one ``recv`` may read, and read per readable event (pika: 4 KB per
#: ``recv``, 100 KB per event). Fewer, larger reads mean fewer turns of
#: the loop: on an Intel Xeon, consuming 10 KB messages went 19 % faster
#: than with 64 KB reads, 1 MB ones 36 % (``docs/design.rst`` has the
#: measurements). What one read brings is cut into frames with the turn
#: held; the prefetch bounds how many deliveries that can be (unbounded
#: with ``prefetch_count`` 0). The price: CPython allocates the whole
#: buffer for every ``recv``, and glibc maps more than 128 KB with
#: ``mmap``, so on the Intel Xeon a read that brings only a few bytes (an
#: RPC reply, a confirm) cost about 10 us instead of 1 (on an AMD EPYC,
#: the same as a 64 KB read).
_RECV_BYTES = 1024 * 1024
#: Most buffers one ``sendmsg`` takes (IOV_MAX); a batch of more is joined.
_MAX_GATHER = min(os.sysconf('SC_IOV_MAX') if hasattr(os, 'sysconf') else 1024, 1024)


def _missing() -> list[str]:
    """The private pika names this module needs that are not there."""
    wanted = [
        (pika.connection.Connection, '_output_marshaled_frames'),
        (pika.connection.Connection, '_on_data_available'),
        (pika.connection.Connection, '_process_frame'),
        (pika.adapters.base_connection.BaseConnection, '_proto_connection_made'),
        (pika.adapters.base_connection.BaseConnection, '_adapter_emit_data'),
        (io_services_utils, '_AsyncPlaintextTransport'),
        (select_connection.EPollPoller, '_create_poller'),
        (select_connection.EPollPoller, '_dispatch_fd_events'),
        (select_connection.IOLoop, '_get_poller'),
        (select, 'epoll'),
    ]
    missing = ['{}.{}'.format(getattr(owner, '__name__', owner), name)
               for owner, name in wanted if not hasattr(owner, name)]
    transport = getattr(io_services_utils, '_AsyncPlaintextTransport', None)
    for name in ('_STATE_ACTIVE', '_MAX_RECV_BYTES', '_MAX_CONSUME_BYTES'):
        if transport is not None and not hasattr(transport, name):
            missing.append('_AsyncPlaintextTransport.' + name)
    return missing


def _plain_reason() -> Optional[str]:
    if os.environ.get('OCCO_AMQP_PLAIN_PIKA') == '1':
        return 'OCCO_AMQP_PLAIN_PIKA=1'
    missing = _missing()
    if missing:
        return 'pika {} lacks {}'.format(pika.__version__, ', '.join(missing))
    return None


#: Why the library runs on pika's public API only, or ``None``.
PLAIN_REASON = _plain_reason()
#: Whether the fast path (this module's subclasses) is used.
FAST = PLAIN_REASON is None
if not FAST:
    log.info('AMQP backend on pika\'s public API only (slower): %s', PLAIN_REASON)

_PlaintextTransport: Any = getattr(io_services_utils, '_AsyncPlaintextTransport', None)


class FastConnection(pika.SelectConnection):
    """A :class:`pika.SelectConnection` that writes a batch of frames at
    once, straight to the socket.

    pika hands every frame to the socket separately; between
    :meth:`begin_batch` and :meth:`end_batch` frames are collected and then
    written with one call (TCP_NODELAY stays on, so nothing waits for
    Nagle). pika also writes through its poller: it asks to be told when the
    socket is writable and sends on the next turn of the loop, which wakes
    the I/O thread for every write, even one made by a caller holding the
    turn. Here data goes to the socket at once; only what the socket does
    not take is left to pika's way.
    """

    # All of the state below is owned by the loop's turn: it is read and
    # written only by pika code, which runs with the turn held.
    _batch: Optional[list[Union[bytes, memoryview]]] = None
    _batch_size = 0
    #: Whether large writes go to pika's buffer frame by frame, sent by
    #: :func:`_gathered_produce` (plain TCP); set when the transport is made.
    _gathers = False
    _publish_frames: Optional[PublishFrames] = None

    # pika's type stubs leave its privates out: hence the narrow
    # "type: ignore" comments below.
    def _output_marshaled_frames(
            self, marshaled_frames: Sequence[Union[bytes, memoryview]]) -> None:
        size = sum(map(len, marshaled_frames))
        if self._batch is None:
            self._write(marshaled_frames, size)
            return
        self._batch.extend(marshaled_frames)
        self._batch_size += size
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
            self._write(frames, self._batch_size)

    def _write(self, frames: Sequence[Union[bytes, memoryview]], size: int) -> None:
        """Write ``frames`` (``size`` bytes in all) after everything before.

        Large ones straight from their buffers, the bodies included: with
        one ``sendmsg`` when the socket is idle, and what it does not take
        (or everything, when earlier data still waits) handed to pika frame
        by frame, as views, which :func:`_gathered_produce` sends the same
        way. Smaller ones joined, through :meth:`_adapter_emit_data`.
        """
        if (not self._gathers or size < _GATHER_BYTES
                or len(frames) > _MAX_GATHER):
            super()._output_marshaled_frames(  # type: ignore[misc]
                (b''.join(frames),))
            return
        self.bytes_sent += size  # type: ignore[attr-defined]  # pika keeps these
        self.frames_sent += 1  # type: ignore[attr-defined]
        for piece in _unsent(frames, self._send_now(frames)):
            self._send_later(piece)

    def _proto_connection_made(self, transport: Any) -> None:
        if isinstance(transport, _PlaintextTransport):
            transport._MAX_RECV_BYTES = _RECV_BYTES
            transport._MAX_CONSUME_BYTES = _RECV_BYTES
            self._gathers = _gather_buffered_writes(transport)
        super()._proto_connection_made(transport)  # type: ignore[misc]

    def _on_data_available(self, data_in: bytes) -> None:
        """Cut the received bytes into frames and process them, as pika
        does, without its copy of the rest of the buffer after every frame
        (with large reads, most of the time it spent on a delivery).

        A body frame's fragment is sliced out of the buffer directly; other
        frames, and anything that is not a frame of a known type, go through
        :func:`pika.frame.decode_frame`, which checks them. Whatever does
        not hold a whole frame yet waits in pika's ``_frame_buffer``.

        Runs with the loop's turn held (the I/O thread, or a thread that
        borrowed the socket), which owns ``_frame_buffer`` and
        ``bytes_received``, as every pika callback does.
        """
        pending: bytes = self._frame_buffer  # type: ignore[has-type]
        buffer = pending + data_in if pending else data_in
        offset, end = 0, len(buffer)
        value: Any
        try:
            while end - offset >= _FRAME_HEADER_SIZE:
                kind, channel, size = _FRAME_HEAD.unpack_from(buffer, offset)
                frame_end = offset + _FRAME_HEADER_SIZE + size + 1
                if kind not in _FRAME_KINDS:
                    consumed, value = pika.frame.decode_frame(buffer[offset:])
                    if value is None:
                        break
                elif frame_end > end:
                    break
                elif kind == pika.spec.FRAME_BODY:
                    if buffer[frame_end - 1] != pika.spec.FRAME_END:
                        raise pe.InvalidFrameError('Invalid FRAME_END marker')
                    value = pika.frame.Body(
                        channel, buffer[offset + _FRAME_HEADER_SIZE:frame_end - 1])
                    consumed = frame_end - offset
                else:
                    consumed, value = pika.frame.decode_frame(buffer[offset:frame_end])
                offset += consumed
                self.bytes_received += consumed  # type: ignore[attr-defined]
                self._process_frame(value)  # type: ignore[attr-defined]
                if self.is_closed:
                    return
        finally:
            if not self.is_closed:
                self._frame_buffer = buffer[offset:] if offset else buffer

    def publish(self, channel: pika.channel.Channel, exchange: str,
                routing_key: str, body: bytes,
                properties: pika.BasicProperties, mandatory: bool) -> None:
        """``channel.basic_publish``, with the frames marshalled by
        :class:`~occo.util.communication.amqp_frames.PublishFrames`."""
        if not channel.is_open:
            raise pe.ChannelWrongStateError('Channel is closed.')
        frames = self._publish_frames
        if frames is None:
            body_max = (self.params.frame_max - pika.spec.FRAME_HEADER_SIZE
                        - pika.spec.FRAME_END_SIZE)
            frames = self._publish_frames = PublishFrames(
                channel.channel_number, body_max)
        self._output_marshaled_frames(frames.marshal(
            exchange, routing_key, body, properties, mandatory))

    def _adapter_emit_data(self, data: bytes) -> None:
        sent = self._send_now((data,))
        if sent < len(data):
            self._send_later(memoryview(data)[sent:])

    def _send_now(self, buffers: Sequence[Union[bytes, memoryview]]) -> int:
        """How many bytes of ``buffers`` the socket took at once, with one
        call (``send`` for one buffer: a little cheaper than ``sendmsg``):
        none when earlier data still waits in pika's buffer (or the
        transport is not plain TCP), when the socket is full (EAGAIN), or
        broken (pika's buffered write then meets the error and aborts the
        connection)."""
        sock = _idle_plaintext_socket(self)
        if sock is None:
            return 0
        try:
            sent: int = (sock.send(buffers[0]) if len(buffers) == 1
                         else sock.sendmsg(buffers))
        except OSError:
            return 0
        return sent

    def _send_later(self, data: Union[bytes, memoryview]) -> None:
        """Hand ``data`` to pika's buffer, sent when the socket is writable.

        As a view, never ``bytes``: pika slices what a partial send leaves,
        and a slice of ``bytes`` copies the rest, every time, while the
        broker is behind (a 1 MB body several times over: 15 % of the
        client's CPU); a slice of a view copies nothing.
        """
        super()._adapter_emit_data(memoryview(data))  # type: ignore[misc]


def _unsent(frames: Sequence[Union[bytes, memoryview]],
            sent: int) -> list[Union[bytes, memoryview]]:
    """What of ``frames`` follows their first ``sent`` bytes, as buffers
    of their own (the first cut as a view), none of them empty."""
    for index, frame in enumerate(frames):
        if sent < len(frame):
            rest = [memoryview(frame)[sent:] if sent else frame]
            rest += [f for f in frames[index + 1:] if len(f)]
            return rest
        sent -= len(frame)
    return []


if _PlaintextTransport is not None:
    class _GatheringTransport(_PlaintextTransport):  # type: ignore[misc]
        """pika's plain TCP transport, sending its buffer with
        :func:`_gathered_produce`. It adds no state, so that pika's
        transport can become one when the connection is made."""

        def _produce(self) -> None:
            _gathered_produce(self)


def _gather_buffered_writes(transport: Any) -> bool:
    """Make a plain TCP ``transport`` send what it buffered with
    :func:`_gathered_produce`; whether it now does (``False`` for a pika
    whose transport keeps its buffer differently)."""
    if not (type(transport) is _PlaintextTransport
            and isinstance(getattr(transport, '_tx_buffers', None), collections.deque)
            and isinstance(getattr(transport, '_tx_buffered_byte_count', None), int)
            and callable(getattr(transport, '_produce', None))):
        return False
    transport.__class__ = _GatheringTransport
    return True


def _gathered_produce(transport: Any) -> None:
    """pika's ``_produce`` for plain TCP: send the buffered data, up to
    :data:`_MAX_GATHER` buffers per ``sendmsg``, until it is all gone or
    the socket takes only part (pika calls again when it is writable). A
    partly sent buffer stays as a view of its rest: nothing is copied,
    where pika sends one buffer per call and copies what a partial send
    leaves.

    pika calls it from its writability handler, with the loop's turn held,
    which owns ``_tx_buffers``; errors go to that handler as pika's own
    would (``BlockingIOError``: wait for writability; others: abort).
    """
    buffers = transport._tx_buffers
    while buffers:
        batch = list(itertools.islice(buffers, _MAX_GATHER))
        sent = transport._sock.sendmsg(batch)
        transport._tx_buffered_byte_count -= sent
        whole = sent == sum(map(len, batch))
        while sent:
            head = buffers[0]
            if sent < len(head):
                buffers[0] = memoryview(head)[sent:]
                break
            sent -= len(head)
            buffers.popleft()
        if not whole:
            return


def _idle_plaintext_socket(connection: pika.SelectConnection) -> Any:
    """The socket of a plain TCP transport with nothing buffered, else
    ``None`` (TLS, closing, or a pika whose transport looks different)."""
    transport = getattr(connection, '_transport', None)
    if (_PlaintextTransport is None or not isinstance(transport, _PlaintextTransport)
            or getattr(transport, '_state', None) != _PlaintextTransport._STATE_ACTIVE
            or transport.get_write_buffer_size()):
        return None
    return getattr(transport, '_sock', None)


def socket_fd(connection: pika.SelectConnection) -> Optional[int]:
    """The connection's socket descriptor, if a borrower may read it."""
    transport = getattr(connection, '_transport', None)
    sock = getattr(transport, '_sock', None)
    return sock.fileno() if sock is not None else None


def publish(channel: pika.channel.Channel, exchange: str, routing_key: str,
            body: bytes, properties: pika.BasicProperties,
            mandatory: bool = False) -> None:
    """Publish one message on a channel of :func:`connect`'s connection.

    On a :class:`FastConnection` about three times cheaper than
    ``channel.basic_publish``, which it falls back to otherwise.
    """
    connection = channel.connection
    if isinstance(connection, FastConnection):
        connection.publish(channel, exchange, routing_key, body, properties,
                           mandatory)
    else:
        channel.basic_publish(exchange, routing_key, body, properties,
                              mandatory)


@contextlib.contextmanager
def batch(connection: Optional[pika.SelectConnection]) -> Iterator[None]:
    """Collect the frames written inside the block and send them at once
    (on a :class:`FastConnection`; elsewhere a no-op)."""
    if not isinstance(connection, FastConnection):
        yield
        return
    connection.begin_batch()
    try:
        yield
    finally:
        connection.end_batch()


def connect(parameters: pika.ConnectionParameters,
            on_open: Callable[[Any], object],
            on_open_error: Callable[[Any, BaseException], object],
            on_close: Callable[[Any, BaseException], object],
            turn: threading.Lock, queued: Callable[[], bool],
            run_queued: Callable[[], object],
            ) -> tuple[pika.SelectConnection, Optional[TurnIOLoop]]:
    """Start connecting; call on the I/O thread, turn held.

    :returns: the connection, and its :class:`TurnIOLoop` when :data:`FAST`
        (``None``: pika's own loop, which never lets go of the turn).
    """
    if not FAST:
        return pika.SelectConnection(
            parameters, on_open_callback=on_open,
            on_open_error_callback=on_open_error,
            on_close_callback=on_close), None
    ioloop = TurnIOLoop(turn, queued, run_queued)
    return FastConnection(
        parameters, on_open_callback=on_open,
        on_open_error_callback=on_open_error, on_close_callback=on_close,
        custom_ioloop=ioloop), ioloop


class SharedEpoll:
    """The I/O thread's epoll, which gives up the loop's turn while it waits
    and can lend the connection's socket to a waiting caller.

    The I/O thread holds the *turn* (a lock) whenever it runs pika code and
    releases it only while it blocks in ``epoll_wait``. A thread that finds
    the turn free may therefore run pika itself. A caller that waits for
    something to arrive may also *borrow* the socket: the socket then leaves
    this epoll and is watched by the borrower's own epoll, so the reply
    wakes the thread that waits for it, and only that thread. Timers
    (heartbeats) and thread-safe callbacks stay with the I/O thread, which
    pokes the borrower after running any of them, in case they settled
    what it waits for.

    Every method runs with the turn held, except :meth:`poke` (any thread:
    it only writes to a pipe).
    """

    def __init__(self, turn: threading.Lock, queued: Callable[[], bool]) -> None:
        self._turn = turn
        self._queued = queued
        self._epoll = select.epoll()
        #: fd -> the events pika wants for it (turn).
        self._events: dict[int, int] = {}
        #: The fd that borrowers watch, registered in their epoll (turn).
        self._shared: Optional[int] = None
        #: The shared fd while a borrower watches it instead of this epoll
        #: (turn).
        self.lent: Optional[int] = None
        #: A thread borrows, from lend to give_back, even if the socket
        #: closed meanwhile (turn; read without it only as a hint).
        self._borrowing = False
        #: Closed by pika (turn).
        self._closed = False
        self._borrowed = select.epoll()
        self._poke_read, self._poke_write = os.pipe()
        os.set_blocking(self._poke_read, False)
        os.set_blocking(self._poke_write, False)
        self._borrowed.register(self._poke_read, select.EPOLLIN)

    # -- what pika's poller calls (I/O thread) -------------------------------
    def poll(self, timeout: float = -1) -> list[tuple[int, int]]:
        self._turn.release()
        try:
            # An operation queued while the turn was held is run before
            # waiting: TurnPoller.poll runs it next.
            return self._epoll.poll(0 if self._queued() else timeout)
        finally:
            self._turn.acquire()

    def register(self, fd: int, events: int) -> None:
        self._events[fd] = events
        self._epoll.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self._events[fd] = events
        if fd == self._shared:
            self._borrowed.modify(fd, events)
        if fd != self.lent:
            self._epoll.modify(fd, events)

    def unregister(self, fd: int) -> None:
        del self._events[fd]
        if fd == self._shared:
            self._borrowed.unregister(fd)
            self._shared = None
        if fd == self.lent:
            self.lent = None
        else:
            self._epoll.unregister(fd)

    def close(self) -> None:
        self._closed = True
        self._epoll.close()
        if self._borrowing:
            self.poke()   # the borrower closes its side when it gives back
        else:
            self._close_borrowed()

    # -- what a borrowing caller calls ---------------------------------------
    def lend(self, fd: int) -> bool:
        """Move ``fd`` from this epoll to the borrower's; ``False`` if it is
        not registered (closed) or this epoll is closed."""
        if self._closed or fd not in self._events:
            return False
        if self._shared != fd:
            if self._shared is not None:
                self._borrowed.unregister(self._shared)
            self._borrowed.register(fd, self._events[fd])
            self._shared = fd
        self._epoll.unregister(fd)
        self.lent = fd
        self._borrowing = True
        return True

    def give_back(self) -> None:
        """Watch the lent fd here again (level-triggered: data that arrived
        meanwhile wakes the I/O thread at once)."""
        fd, self.lent = self.lent, None
        self._borrowing = False
        if self._closed:
            self._close_borrowed()
        elif fd is not None:
            self._epoll.register(fd, self._events[fd])

    def wait_borrowed(self, timeout: float) -> int:
        """Wait, with the turn released, for the lent socket or a poke;
        return the socket's events, 0 if only poked or timed out."""
        self._turn.release()
        try:
            ready = self._borrowed.poll(0 if self._queued() else timeout)
        finally:
            self._turn.acquire()
        socket_events = 0
        for fd, events in ready:
            if fd == self._poke_read:
                _drain_pipe(fd)
            elif fd == self.lent:
                socket_events = events
        return socket_events

    def poke(self) -> None:
        """Wake the borrower, if any."""
        if self._borrowing:
            with contextlib.suppress(BlockingIOError):  # one is pending already
                os.write(self._poke_write, b'.')

    @property
    def borrowing(self) -> bool:
        """Whether a thread borrows the socket (from lend to give_back)."""
        return self._borrowing

    def _close_borrowed(self) -> None:
        if not self._borrowed.closed:
            self._borrowed.close()
            os.close(self._poke_read)
            os.close(self._poke_write)


def received_headers(headers: Optional[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    """Headers as pika decoded them, with timestamps as aware UTC datetimes.

    pika 1.4 decodes an AMQP timestamp as an aware UTC ``datetime``; pika
    1.3 as a naive one. The processor gets the former from either (walking
    the headers only under pika 1.3, only when there are some).
    """
    if not headers or not _NAIVE_TIMESTAMPS:
        return headers
    return {key: _aware(value) for key, value in headers.items()}


def _aware(value: Any) -> Any:
    if isinstance(value, datetime.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=datetime.timezone.utc)
    if isinstance(value, list):
        return [_aware(item) for item in value]
    if isinstance(value, dict):
        return {key: _aware(item) for key, item in value.items()}
    return value


#: Whether this pika decodes timestamps as naive datetimes (before 1.4).
_NAIVE_TIMESTAMPS = tuple(int(part) for part in pika.__version__.split('.')[:2]) < (1, 4)


def _drain_pipe(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 512):
            pass


class TurnPoller(select_connection.EPollPoller):
    """pika's epoll poller on a :class:`SharedEpoll`; pokes a borrower after
    each turn of the I/O thread."""

    _poll: Optional[SharedEpoll]

    def __init__(self, turn: threading.Lock, queued: Callable[[], bool],
                 run_queued: Callable[[], object],
                 get_wait_seconds: Callable[[], Optional[float]],
                 process_timeouts: Callable[[], None]) -> None:
        self._turn = turn
        self._queued = queued
        self._run_queued = run_queued
        self._run_timers = process_timeouts
        super().__init__(get_wait_seconds=get_wait_seconds,
                         process_timeouts=self._run_timers_and_poke)

    def _run_timers_and_poke(self) -> None:
        self._run_timers()
        self.poke()

    def _create_poller(self) -> SharedEpoll:
        return SharedEpoll(self._turn, self._queued)

    @property
    def shared_epoll(self) -> Optional[SharedEpoll]:
        """The epoll while the loop runs, else ``None``."""
        return self._poll

    def poll(self) -> None:
        super().poll()
        self._run_queued()
        self.poke()

    def poke(self) -> None:
        """Wake a borrower of the socket: what the I/O thread just ran may
        have settled what it waits for."""
        if self._poll is not None:
            self._poll.poke()

    def dispatch(self, fd: int, events: int) -> None:
        """Run pika's handler of ``fd`` for ``events`` (turn held)."""
        self._dispatch_fd_events({fd: events})  # type: ignore[attr-defined]


class TurnIOLoop(select_connection.IOLoop):
    """pika's IOLoop on a :class:`SharedEpoll`, releasing ``turn`` only
    while it waits."""

    poller: TurnPoller

    def __init__(self, turn: threading.Lock, queued: Callable[[], bool],
                 run_queued: Callable[[], object]) -> None:
        self._turn = turn
        self._queued = queued
        self._run_queued = run_queued
        super().__init__()

    def _get_poller(self, get_wait_seconds: Callable[[], Optional[float]],
                    process_timeouts: Callable[[], None]) -> TurnPoller:
        self.poller = TurnPoller(self._turn, self._queued, self._run_queued,
                                 get_wait_seconds=get_wait_seconds,
                                 process_timeouts=process_timeouts)
        return self.poller
