# SPDX-License-Identifier: Apache-2.0
"""The worker threads of a consumer configured with ``max_workers`` above 1.

Both backends use one :class:`WorkerPool` per consumer. The thread that
calls ``start_consuming`` keeps receiving messages (on RabbitMQ it also
reads the socket) and :meth:`~WorkerPool.put`\\ s each one in the pool; each
of the ``max_workers`` threads, named ``occo-worker-<queue>-<n>``, takes the
next message, runs the backend's handler on it (the processor, through
:func:`~occo.util.communication.dispatch.handle`, which makes
:func:`~.message_context.current_message` that worker's message) and
settles it itself: the RPC reply and the acknowledgement or rejection leave
from the worker that produced them, in whatever order the workers finish.

Stopping (``cancel_event``, SIGTERM, ``close()``) is in two steps:
:meth:`~WorkerPool.stop` takes no message any more and returns those not
started, which the backend puts back in the queue at once;
:meth:`~WorkerPool.join` then waits for the running ones until the
``shutdown_grace`` deadline. A worker still running then is named in an
ERROR line and left to finish: its message stays unacknowledged until it
does, and if the consumer is closed first the message goes back to its
queue (RabbitMQ does it when the connection closes; the memory backend takes
it back with :meth:`~WorkerPool.reclaim`), so it is processed again, and
whatever the late worker produces is dropped.

Threads and what they own: everything below the pool's one lock
(``_lock``) is guarded by it and held only for a few statements, never
while a handler runs. Two conditions share that lock, so that waking a
worker never wakes a thread waiting for room or for the end, and the
reverse (one condition would need ``notify_all`` on every message). The
worker threads are daemon threads, as the I/O threads are: a worker left
running after the grace period never keeps the process alive.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, Optional, TypeVar

__all__ = ['WorkerPool', 'PoolState', 'Item']

log = logging.getLogger(__name__)

#: What a pool's items are: a backend's delivery.
Item = TypeVar('Item')

#: What a worker lets through from the handler, which handles everything
#: else itself: the process is being stopped.
_FATAL = (KeyboardInterrupt, SystemExit)


class PoolState(enum.Enum):
    """Whether workers take new items."""

    #: Not started, or stopped: no item is taken; idle workers end.
    STOPPED = 'stopped'
    #: Workers take items as they come.
    RUNNING = 'running'


class WorkerPool(Generic[Item]):
    """``size`` daemon threads that call ``handle(item)`` for each item put.

    :param size: the number of worker threads.
    :param name: the threads are named ``<name>-1`` to ``<name>-<size>``.
    :param handle: called in a worker with each item; it settles the item
        itself. It should not raise: anything but :exc:`KeyboardInterrupt`
        and :exc:`SystemExit` is logged and the worker goes on; those two
        end the worker, leave its item unsettled and are kept for
        :meth:`take_fatal`, and ``on_fatal()`` is called.
    :param describe: names an item in log lines (a message id).
    :param on_fatal: called in the worker after a fatal exception.
    """

    def __init__(self, size: int, name: str, handle: Callable[[Item], object],
                 describe: Callable[[Item], object] = repr,
                 on_fatal: Callable[[], object] = lambda: None) -> None:
        self.size = size
        self.name = name
        self._handle = handle
        self._describe = describe
        self._on_fatal = on_fatal
        #: Guards every attribute below; never held while a handler runs.
        self._lock = threading.Lock()
        #: Workers wait on it for an item or for the stop (_lock).
        self._work_ready = threading.Condition(self._lock)
        #: The consuming thread waits on it for room, stoppers for the
        #: running workers to finish (_lock).
        self._changed = threading.Condition(self._lock)
        self._state = PoolState.STOPPED   # _lock
        #: Items put and not taken by a worker yet, oldest first (_lock).
        self._items: collections.deque[Item] = collections.deque()
        #: Worker name -> the item it holds and has not settled: from taking
        #: it until it finishes, calls :meth:`settling`, or :meth:`reclaim`
        #: takes it back (_lock). A worker ended by a fatal exception leaves
        #: its item here.
        self._busy: dict[str, Item] = {}
        #: Names of the workers running the handler (_lock).
        self._running: set[str] = set()
        #: Names of the live worker threads (_lock).
        self._alive: set[str] = set()
        #: Workers named in the overdue ERROR line of this stop (_lock).
        self._reported: set[str] = set()
        #: When join() stops waiting: the stop time plus the grace (_lock).
        self._deadline = 0.0
        #: The first fatal exception of a worker since start() (_lock).
        self._fatal: Optional[BaseException] = None

    # -- the consuming thread ----------------------------------------------
    def start(self) -> None:
        """Take items again, with ``size`` workers: start the missing ones
        (a worker still running from before the last stop stays one)."""
        with self._lock:
            self._state = PoolState.RUNNING
            self._fatal = None
            missing = [n for n in range(1, self.size + 1)
                       if '{}-{}'.format(self.name, n) not in self._alive]
            for n in missing:
                self._alive.add('{}-{}'.format(self.name, n))
        for n in missing:
            threading.Thread(target=self._work, daemon=True,
                             name='{}-{}'.format(self.name, n)).start()

    def put(self, item: Item) -> bool:
        """Hand ``item`` to the next free worker.

        :returns: ``False``, keeping nothing, when the pool is stopped: the
            caller puts the item back in its queue.
        """
        with self._lock:
            if self._state is not PoolState.RUNNING:
                return False
            self._items.append(item)
            self._work_ready.notify()
            return True

    def held(self) -> int:
        """How many items wait or run."""
        with self._lock:
            return len(self._items) + len(self._running)

    def wait_for_room(self, limit: int, timeout: float) -> bool:
        """Wait until fewer than ``limit`` items wait or run (0: no limit).

        :returns: whether there is room; ``False`` after ``timeout``
            seconds or when the pool is stopped.
        """
        if limit == 0:
            return True
        with self._lock:
            self._changed.wait_for(
                lambda: (len(self._items) + len(self._running) < limit
                         or self._state is not PoolState.RUNNING), timeout)
            return (self._state is PoolState.RUNNING
                    and len(self._items) + len(self._running) < limit)

    def stop(self, grace: float) -> list[Item]:
        """Take no item any more; :meth:`join` will wait ``grace`` seconds
        from now. Safe to call again (a second call changes no deadline).

        :returns: the items not started, oldest first: the caller puts them
            back in their queue.
        """
        with self._lock:
            if self._state is PoolState.RUNNING:
                self._state = PoolState.STOPPED
                self._deadline = time.monotonic() + grace
                self._reported.clear()
            unstarted = list(self._items)
            self._items.clear()
            self._work_ready.notify_all()
            self._changed.notify_all()
        return unstarted

    def join(self) -> list[str]:
        """Wait until no worker runs, or until the deadline set by
        :meth:`stop`; log each worker still running then at ERROR, once.

        :returns: the names of the workers still running.
        """
        with self._lock:
            self._changed.wait_for(
                lambda: not self._running or self._state is PoolState.RUNNING,
                max(0.0, self._deadline - time.monotonic()))
            if self._state is PoolState.RUNNING:
                return []   # started again meanwhile: not ours to wait for
            overdue = sorted(self._running)
            late = [(name, self._busy.get(name)) for name in overdue
                    if name not in self._reported]
            self._reported.update(overdue)
        for name, item in late:
            log.error('%s is still processing message %s after the shutdown '
                      'grace period; left running: its message stays '
                      'unacknowledged until it finishes, and goes back to the '
                      'queue if the consumer is closed first', name,
                      'unknown' if item is None else self._describe(item))
        return overdue

    def reclaim(self) -> list[Item]:
        """Take back the items that workers hold and have not settled: from
        now on :meth:`settling` refuses them.

        :returns: those items, for the caller to put back in their queue.
        """
        with self._lock:
            items = list(self._busy.values())
            self._busy.clear()
        return items

    def take_fatal(self) -> Optional[BaseException]:
        """The fatal exception a worker raised since :meth:`start`, if any,
        forgotten once returned."""
        with self._lock:
            fatal, self._fatal = self._fatal, None
        return fatal

    # -- the workers ---------------------------------------------------------
    def settling(self) -> bool:
        """In a worker, before it settles its item: ``True`` if the item is
        still its own (from now on :meth:`reclaim` leaves it), ``False`` if
        :meth:`reclaim` took it back: the worker must not settle it."""
        name = threading.current_thread().name
        with self._lock:
            return self._busy.pop(name, None) is not None

    def _work(self) -> None:
        name = threading.current_thread().name
        while True:
            with self._lock:
                while not self._items and self._state is PoolState.RUNNING:
                    self._work_ready.wait()
                if self._state is not PoolState.RUNNING:
                    self._alive.discard(name)
                    return
                item = self._items.popleft()
                self._busy[name] = item
                self._running.add(name)
            try:
                self._handle(item)
            except _FATAL as e:
                self._end_fatally(name, item, e)
                return
            except BaseException:   # a bug: the other messages go on
                log.exception('%s failed on message %s; it stays '
                              'unacknowledged', name, self._describe(item))
            with self._lock:
                self._busy.pop(name, None)
                self._running.discard(name)
                if name in self._reported:
                    self._reported.discard(name)
                    log.info('%s finished message %s after the shutdown grace '
                             'period', name, self._describe(item))
                self._changed.notify_all()

    def _end_fatally(self, name: str, item: Item, error: BaseException) -> None:
        """The handler raised ``KeyboardInterrupt`` or ``SystemExit``: this
        worker ends, its item stays unsettled, and the consumer stops."""
        log.error('%s: the processor raised %s on message %s; the consumer '
                  'stops, the message stays unacknowledged', name,
                  type(error).__name__, self._describe(item))
        with self._lock:
            if self._fatal is None:
                self._fatal = error
            self._running.discard(name)
            self._alive.discard(name)
            self._changed.notify_all()
        self._on_fatal()

