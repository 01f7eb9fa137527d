# SPDX-License-Identifier: Apache-2.0
"""One updating line on a terminal: which case, which run, time left.

The parent (:mod:`benchmarks.__main__`) owns the line. The runs happen in
the case's child process, which tells the parent where it is by writing
``"<run> <runs>"`` to the file named in :data:`ENV` (:func:`run_started`,
called by the cases' interleaving loop); the parent reads that file while
it waits for the child, every :data:`REFRESH` seconds.

The line is drawn only when stderr is a terminal and ``CI`` is not set:
piped into a file or run in CI, the benchmark prints what it printed
before and nothing else.

Time left is an estimate: each case's expected duration
(:data:`SECONDS_PER_RUN` times the runs, plus a share for each other
client), multiplied by how much slower or faster the finished cases were
than expected; within a case, the runs done so far tell the time per run.
"""

import os
import subprocess
import sys
import time

__all__ = ['ENV', 'REFRESH', 'SECONDS_PER_RUN', 'run_started', 'Progress',
           'enabled']

#: Environment variable naming the child's progress file.
ENV = 'OCCO_BENCH_PROGRESS'
#: Seconds between redraws of the line.
REFRESH = 0.5

#: Seconds per run of each case, full counts, 100-byte messages, library
#: and raw pika only (a full ``--runs 5`` run on 2 cores); unknown cases
#: count as 10.
SECONDS_PER_RUN = {
    'publish-transient': 5, 'publish-durable': 14, 'consume': 26,
    'rpc-seq': 22, 'rpc-threads': 10, 'rpc-futures': 10, 'idle': 7,
    'memory': 4, 'rss': 20,
}
#: Extra seconds per run and other client, in the cases that run them
#: (100-byte messages, ``--runs 3`` on 2 busy cores).
OTHER_CLIENT_SECONDS = {'publish-transient': 25, 'consume': 20, 'rpc-seq': 9}


def run_started(run, runs):
    """Record in the child that run ``run`` of ``runs`` starts (no-op
    without :data:`ENV`)."""
    path = os.environ.get(ENV)
    if not path:
        return
    try:
        with open(path, 'w') as f:
            f.write('{} {}'.format(run, runs))
    except OSError:
        pass   # progress is a courtesy; the case goes on


def enabled(stream):
    """Whether to draw: ``stream`` is a terminal and ``CI`` is unset."""
    isatty = getattr(stream, 'isatty', None)
    return bool(isatty and isatty()) and not os.environ.get('CI')


def _clock(seconds):
    seconds = max(0, int(seconds))
    return '{}:{:02d}'.format(seconds // 60, seconds % 60)


def _read(path):
    try:
        with open(path) as f:
            run, runs = f.read().split()
        return int(run), int(runs)
    except (OSError, ValueError):
        return None


class Progress:
    """The progress line for ``plan``, a list of ``(key, case, workload)``.

    :param stream: where to draw (stderr); nothing is drawn unless
        :func:`enabled` says so.
    """

    def __init__(self, plan, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled(self.stream)
        self._expected = [self._estimate(case, workload)
                          for _, case, workload in plan]
        self._keys = [key for key, _, _ in plan]
        self._started = time.monotonic()
        self._index = -1
        self._case_started = self._started
        self._done_expected = 0.0
        self._done_actual = 0.0
        self._drawn = False

    @staticmethod
    def _estimate(case, workload):
        per_run = SECONDS_PER_RUN.get(case, 10)
        per_run += OTHER_CLIENT_SECONDS.get(case, 0) * len(workload.clients)
        if workload.quick:
            per_run /= 10.0
        return 2.0 + per_run * workload.runs * workload.scale

    def start(self, index):
        """Case ``index`` of the plan starts."""
        self._index = index
        self._case_started = time.monotonic()

    def finish(self):
        """The current case ended: learn from its duration."""
        self._done_expected += self._expected[self._index]
        self._done_actual += time.monotonic() - self._case_started

    def _factor(self):
        if self._done_expected > 0 and self._done_actual > 0:
            return self._done_actual / self._done_expected
        return 1.0

    def time_left(self, run=None, now=None):
        """Estimated seconds left; ``run`` is ``(i, n)`` of the current case
        and when the child reported run ``i`` (``(i, n, since)``)."""
        now = time.monotonic() if now is None else now
        factor = self._factor()
        elapsed = now - self._case_started
        current = self._expected[self._index] * factor - elapsed
        if run is not None:
            i, n, since = run
            if i > 1:   # time per run from the runs done
                per_run = (since - self._case_started) / (i - 1)
                current = per_run * (n - i + 1) - (now - since)
        later = sum(self._expected[self._index + 1:]) * factor
        return max(0.0, current) + later

    def line(self, run=None, now=None):
        """The text of the line."""
        now = time.monotonic() if now is None else now
        text = '[{}/{}] {}'.format(self._index + 1, len(self._keys),
                                   self._keys[self._index])
        if run is not None:
            text += '  run {}/{}'.format(run[0], run[1])
        return '{}  elapsed {}  left ~{}'.format(
            text, _clock(now - self._started),
            _clock(self.time_left(run, now)))

    def draw(self, run=None):
        if not self.enabled:
            return
        self.stream.write('\r\033[K' + self.line(run))
        self.stream.flush()
        self._drawn = True

    def clear(self):
        """Erase the line, before something else is printed."""
        if self.enabled and self._drawn:
            self.stream.write('\r\033[K')
            self.stream.flush()
            self._drawn = False

    def child_env(self, path):
        """The environment for a case's child that reports to ``path``."""
        return dict(os.environ, **{ENV: path}) if self.enabled else None

    def wait(self, child, timeout, path=None):
        """Wait for ``child`` like ``child.wait(timeout)``, redrawing the
        line meanwhile; raises :class:`subprocess.TimeoutExpired`."""
        if not self.enabled:
            return child.wait(timeout)
        deadline = time.monotonic() + timeout
        run, last = None, None
        while True:
            reported = _read(path) if path else None
            if reported is not None and reported != last:
                last = reported
                run = reported + (time.monotonic(),)
            self.draw(run)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(child.args, timeout)
            try:
                return child.wait(min(REFRESH, remaining))
            except subprocess.TimeoutExpired:
                continue
