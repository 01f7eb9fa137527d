# SPDX-License-Identifier: Apache-2.0
"""Where one RPC call's outcome is left for the thread that waits for it.

Both backends use :class:`ReplySlot`: the caller creates one per call and
waits on it; whoever learns the outcome first (the reply, a returned
request, a lost connection, ``close()``, a deadline) settles it, and later
settlers are ignored, so a slot is settled exactly once whichever threads
race for it.

Calls made with ``submit`` (:meth:`.comm.RPCProducer.submit`) have nobody
waiting on their slot: a slot may carry an ``on_settle`` callback, which
:class:`CallWindow` uses to complete the call's future, and the window's
deadline thread settles a slot whose timeout passed.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, MutableMapping
from concurrent.futures import Future
from typing import Any, Optional

from ..exceptions import ClosedError, CommunicationError, RPCTimeoutError
from . import codec

__all__ = ['ReplySlot', 'CallWindow']

log = logging.getLogger(__name__)


class ReplySlot:
    """One RPC call's reply body or error; settled once, first wins.

    :param owner: what the request went out on (the AMQP loop), so that the
        death of that connection fails exactly the calls it carried.
    :param on_settle: ``on_settle(slot)``, called once, right after the slot
        is settled, by the thread that settled it: the thread that read the
        reply (the AMQP I/O thread, a caller driving the connection, the
        memory consumer's thread), the thread that called ``close()``, the
        one that noticed the lost connection, or a deadline thread. It must
        not block; an exception it raises is logged, never passed to the
        settler.
    """

    __slots__ = ('owner', 'body', 'error', '_settling', '_arrived', '_settled',
                 '_on_settle')

    def __init__(self, owner: object = None,
                 on_settle: Optional[Callable[[ReplySlot], object]] = None) -> None:
        self.owner = owner
        #: The reply body, once settled with one.
        self.body: Optional[bytes] = None
        #: The error, once settled with one.
        self.error: Optional[CommunicationError] = None
        #: Makes settling atomic: held for the two lines that settle.
        self._settling = threading.Lock()
        #: Released once settled (a lock is the cheapest thing to wait on).
        self._arrived = threading.Lock()
        self._arrived.acquire()
        self._settled = False   # _settling
        #: Set once here, read by the one thread that settles the slot.
        self._on_settle = on_settle

    def settle(self, body: Optional[bytes] = None,
               error: Optional[CommunicationError] = None) -> bool:
        """Leave the outcome, unless one was left already.

        :returns: ``True`` if this call settled the slot.
        """
        with self._settling:
            if self._settled:
                return False
            self._settled = True
            self.body, self.error = body, error
        self._arrived.release()
        if self._on_settle is not None:
            try:
                self._on_settle(self)
            except Exception:   # the settler (e.g. the I/O thread) goes on
                log.exception('Completing an RPC call failed')
        return True

    def is_set(self) -> bool:
        """Whether the slot is settled (never blocks)."""
        return self._settled

    def wait(self, timeout: Optional[float]) -> bool:
        """Wait until settled; ``False`` if ``timeout`` seconds passed first."""
        if self._arrived.acquire(timeout=-1 if timeout is None else timeout):
            self._arrived.release()   # later waits return at once
            return True
        return False

    def result(self) -> Any:
        """The call's result, from the settled slot: what ``push_message``
        returns, or raises (the slot's error, or what the reply carries)."""
        if self.error is not None:
            raise self.error
        assert self.body is not None  # settled with a body or an error
        return codec.result_from_reply(self.body)


class CallWindow:
    """The calls that an RPC producer's ``submit`` has in flight: their
    bound, their futures and their deadlines.

    Each producer of both backends owns one. ``submit`` calls :meth:`enter`
    (which blocks while ``bound`` calls are in flight: the backpressure),
    registers a slot made with ``on_settle=functools.partial(window.complete,
    future)`` in the producer's ``waiting`` map, calls :meth:`expire_at`
    when the call has a timeout, and sends the request. Whichever thread
    settles the slot then runs :meth:`complete`, which turns the reply into
    the future's result or exception and makes room for the next call.

    Timeouts are kept by one daemon thread per window,
    ``occo-rpc-deadlines-<name>``, started by a call with a timeout when
    none runs: at a call's deadline it removes the call from ``waiting`` and
    settles its slot with :class:`~occo.util.exceptions.RPCTimeoutError`,
    whether or not anybody waits on the future. It sleeps until the
    earliest deadline; a call that ends earlier stays in its heap until its
    deadline (or until the heap is compacted), so answered calls cost it no
    wake-up. It ends when its heap is empty, and at :meth:`close`.

    :param bound: how many calls may be in flight at once (``>= 1``).
    :param name: names the deadline thread.
    :param lock: the producer's lock, which guards ``waiting``.
    :param waiting: the producer's map of correlation id to slot.
    """

    def __init__(self, bound: int, name: str, lock: threading.Lock,
                 waiting: MutableMapping[Optional[str], ReplySlot]) -> None:
        #: The most calls in flight at once (set once).
        self.bound = bound
        self._name = name
        self._lock = lock
        self._waiting = waiting
        #: Guards _count and _closed; submitters wait on it for room. Held
        #: for a few statements, never while running anything else.
        self._room = threading.Condition(threading.Lock())
        #: Calls entered and not yet completed (_room).
        self._count = 0
        #: close() was called: enter() refuses (_room).
        self._closed = False
        #: Guards _heap, _thread and _stopped; the deadline thread waits on
        #: it for the earliest deadline. Never held while a slot settles.
        self._timer = threading.Condition(threading.Lock())
        #: ``(deadline, seq, correlation_id, slot, routing_key, timeout)``,
        #: a heap ordered by deadline (_timer); settled entries stay until
        #: their deadline or the next compaction.
        self._heap: list[tuple[float, int, Optional[str], ReplySlot, str, float]] = []
        #: Compact the heap when it grows to this length (_timer).
        self._compact_at = 2 * bound + 64
        self._seq = itertools.count()
        #: The deadline thread, once started (_timer).
        self._thread: Optional[threading.Thread] = None
        #: close() was called: the deadline thread ends (_timer).
        self._stopped = False

    def enter(self) -> None:
        """Take a place for one call; wait while ``bound`` calls are in flight.

        The wait ends when a call in flight completes (its reply, its
        timeout, a lost connection) or the producer is closed.

        :raises ClosedError: when the producer is closed, also while waiting.
        """
        with self._room:
            while self._count >= self.bound and not self._closed:
                self._room.wait()
            if self._closed:
                raise ClosedError('the RPC producer is closed')
            self._count += 1

    def leave(self) -> None:
        """Give back the place of a call that :meth:`enter` let in (done by
        :meth:`complete`; call it only when no slot was made)."""
        with self._room:
            self._count -= 1
            self._room.notify()

    def complete(self, future: Future[Any], slot: ReplySlot) -> None:
        """complete(future, slot)

        Complete ``future`` from its settled ``slot``, then give back its
        place (the slot's ``on_settle``, run by the thread that settled it).

        The reply is decoded here, so the future's result, or exception, is
        exactly what ``push_message`` would have returned, or raised.
        """
        try:
            try:
                result = slot.result()
            except Exception as e:   # transport, ApplicationError, 4xx, 5xx, 502
                future.set_exception(e)
            else:
                future.set_result(result)
        finally:
            self.leave()

    def expire_at(self, deadline: float, correlation_id: Optional[str],
                  slot: ReplySlot, routing_key: str, timeout: float) -> None:
        """Fail the call with :class:`~occo.util.exceptions.RPCTimeoutError`
        at ``deadline`` (a :func:`time.monotonic` time) unless it settled."""
        with self._timer:
            if self._stopped:
                return   # close() fails the call
            heap = self._heap
            if len(heap) >= self._compact_at:
                heap[:] = [entry for entry in heap if not entry[3].is_set()]
                heapq.heapify(heap)
                self._compact_at = 2 * (len(heap) + self.bound) + 64
            entry = (deadline, next(self._seq), correlation_id, slot,
                     routing_key, timeout)
            heapq.heappush(heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, daemon=True,
                    name='occo-rpc-deadlines-' + self._name)
                self._thread.start()
            elif heap[0] is entry:
                self._timer.notify()   # it sleeps until a later deadline

    def _run(self) -> None:
        """The deadline thread: expire calls whose deadline passed; end
        when no deadline is left (the next call with a timeout starts
        another thread) or at close()."""
        while True:
            with self._timer:
                due = self._take_due()
                while not due and self._heap and not self._stopped:
                    self._timer.wait(self._heap[0][0] - time.monotonic())
                    due = self._take_due()
                if self._stopped or not due:
                    self._thread = None
                    return
            for correlation_id, slot, routing_key, timeout in due:
                self._expire(correlation_id, slot, routing_key, timeout)

    def _take_due(self) -> list[tuple[Optional[str], ReplySlot, str, float]]:
        """Pop the entries whose deadline passed (_timer held)."""
        due = []
        heap, now = self._heap, time.monotonic()
        while heap and heap[0][0] <= now:
            _, _, correlation_id, slot, routing_key, timeout = heapq.heappop(heap)
            if not slot.is_set():
                due.append((correlation_id, slot, routing_key, timeout))
        return due

    def _expire(self, correlation_id: Optional[str], slot: ReplySlot,
                routing_key: str, timeout: float) -> None:
        with self._lock:
            if self._waiting.get(correlation_id) is slot:
                del self._waiting[correlation_id]
        slot.settle(error=RPCTimeoutError(reason='no reply from {!r} within '
                                          '{} s'.format(routing_key, timeout)))

    def close(self) -> None:
        """Refuse new calls, wake the submitters that wait for room (they
        raise :class:`~occo.util.exceptions.ClosedError`), and end the
        deadline thread. The producer fails the calls in flight itself.
        Safe to call several times."""
        with self._room:
            self._closed = True
            self._room.notify_all()
        with self._timer:
            self._stopped = True
            self._heap.clear()
            thread = self._thread
            self._timer.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)
