# SPDX-License-Identifier: Apache-2.0
"""RPC echo servers in child processes, started and stopped with bounds.

The RPC cases put the server in another process (``multiprocessing`` with
the *spawn* start method: a fresh interpreter, no forked pika state), so
client and server do not share a GIL, as in a real deployment. Starting
waits for each server's ready event; stopping sets a shared stop event,
joins with a timeout, then terminates and kills what is left.
"""

import multiprocessing
import time

__all__ = ['Servers']

#: Seconds a server may take to start (interpreter, imports, connect).
START_TIMEOUT = 30
#: Seconds a server lives at most, whatever happens to the benchmark.
MAX_LIFETIME = 900


def _wait_ready(process, ready):
    """Wait for ``ready``; fail at once if the server process died."""
    deadline = time.monotonic() + START_TIMEOUT
    while not ready.wait(0.1):
        if not process.is_alive():
            raise RuntimeError('{} exited with code {} before it was ready '
                               '(see its traceback above)'.format(
                                   process.name, process.exitcode))
        if time.monotonic() > deadline:
            raise TimeoutError('{} not ready within {} s'.format(
                process.name, START_TIMEOUT))


class Servers:
    """``count`` processes running ``target(workload_dict, queue, ready,
    stop, max_seconds)``, for the ``with`` block.

    :ivar pids: the servers' process ids, for CPU accounting.
    """

    def __init__(self, target, workload, queue, count=1):
        self._target = target
        self._workload = workload
        self._queue = queue
        self._count = count
        self._context = multiprocessing.get_context('spawn')
        self._stop = self._context.Event()
        self._processes = []
        self.pids = ()

    def __enter__(self):
        try:
            readies = []
            for i in range(self._count):
                ready = self._context.Event()
                process = self._context.Process(
                    target=self._target, daemon=True,
                    name='bench-server-{}'.format(i),
                    args=(self._workload.to_dict(), self._queue, ready,
                          self._stop, MAX_LIFETIME))
                process.start()
                self._processes.append(process)
                readies.append(ready)
            for process, ready in zip(self._processes, readies):
                _wait_ready(process, ready)
        except BaseException:
            self._shutdown()
            raise
        self.pids = tuple(p.pid for p in self._processes)
        return self

    def check(self):
        """Raise if a server died: its clients would only time out."""
        for process in self._processes:
            if not process.is_alive():
                raise RuntimeError('{} exited with code {}'.format(
                    process.name, process.exitcode))

    def __exit__(self, *exc):
        self._shutdown()

    def _shutdown(self):
        self._stop.set()
        for process in self._processes:
            process.join(10)
        for process in self._processes:
            if process.is_alive():
                process.terminate()
                process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)
