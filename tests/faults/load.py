# SPDX-License-Identifier: Apache-2.0
"""Load under faults: counting processors, consumer threads, paced producers.

Shared by the fault-injection and the cluster suites.
"""

import contextlib
import threading
import time

import occo.util.communication as comm

#: Generous bound that turns a hang into a failure.
DEADLINE = 180


class Recorder:
    """A processor that counts every delivery of each message id."""

    def __init__(self):
        self.counts = {}
        self.times = []
        self._lock = threading.Condition()

    def __call__(self, message):
        with self._lock:
            self.counts[message['id']] = self.counts.get(message['id'], 0) + 1
            self.times.append(time.monotonic())
            self._lock.notify_all()

    def wait_for_ids(self, ids, timeout):
        with self._lock:
            return self._lock.wait_for(lambda: ids <= self.counts.keys(), timeout)

    def longest_pause(self):
        """The longest time between two processed messages, in seconds."""
        times = sorted(self.times)
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)


@contextlib.contextmanager
def consumers(processor, count, **config):
    """Run ``count`` competing consumers in threads for the ``with`` body.

    Yields their shared cancel event; on exit sets it and checks that every
    consumer stopped and raised nothing.
    """
    cancel = threading.Event()
    errors = []

    def run():
        try:
            with comm.EventDrivenConsumer(processor, cancel_event=cancel, **config) as c:
                c.start_consuming()
        except BaseException as e:  # reported below
            errors.append(e)
    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield cancel
    finally:
        cancel.set()
        for thread in threads:
            thread.join(DEADLINE)
    assert not [t for t in threads if t.is_alive()], 'a consumer did not stop'
    assert not errors, errors


def paced_load(config, total, inject, producers=2):
    """Push ``total`` messages ``{'id': n}`` from ``producers`` threads while
    ``inject()`` runs faults in another thread.

    The producers pause briefly every 50 messages so that the faults land
    mid-stream; ``inject`` starts once the first messages are out. Returns
    once every producer's ``with`` block exited (all confirmed) and the
    injector finished; raises the first producer error.
    """
    errors = []
    producing = threading.Event()

    def produce(start, stop):
        try:
            with comm.AsynchronProducer(**config) as prod:
                for i in range(start, stop):
                    prod.push_message({'id': i})
                    if i % 50 == 0:
                        producing.set()
                        time.sleep(0.05)
        except Exception as e:  # reported below
            errors.append(e)

    def run_faults():
        producing.wait(DEADLINE)
        inject()
    threads = [threading.Thread(target=produce,
                                args=(n * total // producers, (n + 1) * total // producers))
               for n in range(producers)] + [threading.Thread(target=run_faults)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE * 2)
    assert not [t for t in threads if t.is_alive()], 'the load did not end'
    if errors:
        raise errors[0]


class RPCCallers:
    """Threads that call one RPC producer in a loop until :meth:`stop`.

    Each call ends with its result checked (``True``), or the name of the
    :class:`~occo.util.exceptions.CommunicationError` it raised; calls that
    took more than ``timeout + grace`` seconds are kept in :attr:`late`.
    """

    def __init__(self, rpc, timeout, threads=4, grace=2.0):
        self.outcomes = []
        self.late = []
        self._rpc = rpc
        self._limit = timeout + grace
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._call, args=(n,))
                         for n in range(threads)]
        for thread in self._threads:
            thread.start()

    def _call(self, n):
        i = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                outcome = self._rpc.push_message([n, i]) == [n, i]
            except comm.CommunicationError as e:
                outcome = type(e).__name__
            took = time.monotonic() - started
            if took > self._limit:
                self.late.append(took)
            self.outcomes.append(outcome)
            i += 1

    def stop(self):
        """Stop calling; check that no call hangs."""
        self._stop.set()
        for thread in self._threads:
            thread.join(DEADLINE)
        assert not [t for t in self._threads if t.is_alive()], 'an RPC call hangs'

    @property
    def failures(self):
        """The set of error names the calls ended with."""
        return {o for o in self.outcomes if o is not True}

