# SPDX-License-Identifier: Apache-2.0
"""Timers, CPU and memory readings, percentiles, and medians over runs.

Every case measures through :class:`Meter`, so library and raw pika rows
are timed the same way:

* wall time with :func:`time.perf_counter`;
* this process's CPU time with :func:`time.process_time` (all its threads,
  so the library's I/O thread is counted);
* CPU time of live child processes (the RPC servers) from
  ``/proc/<pid>/stat``: ``resource.getrusage(RUSAGE_CHILDREN)`` only counts
  children that have been waited for, which the servers are not while they
  are measured;
* CPU time of the broker, when it runs on this machine and
  :func:`watch_broker` was given its pid (see :mod:`benchmarks.broker`);
* resident memory from ``VmRSS`` in ``/proc/self/status``.
"""

import math
import os
import statistics
import time

__all__ = ['Meter', 'Sample', 'rss_mb', 'process_cpu_seconds', 'percentile',
           'summarize', 'timed_echo_calls', 'watch_broker']

_TICKS = os.sysconf('SC_CLK_TCK')

#: The broker's pid, or None when it is not measured. Set once per case
#: process by :func:`watch_broker` before any :class:`Meter` starts; only
#: read afterwards, from any thread.
_broker_pid = None


def watch_broker(pid):
    """Count the CPU time of process ``pid`` (the broker) in every window."""
    global _broker_pid
    _broker_pid = pid


def rss_mb(pid='self'):
    """Return the resident set size of ``pid`` in MiB (``VmRSS``)."""
    with open('/proc/{}/status'.format(pid)) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def process_cpu_seconds(pid):
    """Return user + system CPU seconds used so far by the live ``pid``.

    Read from the process's CPU-time clock, which Linux keeps in
    nanoseconds for every process (what ``clock_getcpuclockid(3)`` returns;
    the same clock as :func:`time.process_time`, for another process).
    Where that clock cannot be read, from fields 14 and 15 of
    ``/proc/<pid>/stat``, in clock ticks (10 ms): over the 0.4 s a 1 MB
    window lasts, a tick is 2.5 points of a core. Either way the sum over
    all the process's threads, ended ones included. A process that is gone
    counts as 0.
    """
    try:
        return time.clock_gettime(_process_cpu_clock(pid))
    except OSError:
        pass
    try:
        with open('/proc/{}/stat'.format(pid)) as f:
            data = f.read()
    except OSError:
        return 0.0
    fields = data[data.rindex(')') + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _process_cpu_clock(pid):
    """The clock id of ``pid``'s CPU time: Linux's encoding, as glibc's
    ``clock_getcpuclockid`` makes it (the pid inverted, shifted by three
    bits, ``CPUCLOCK_SCHED`` = 2 in the low bits)."""
    return (~pid << 3) | 2


def percentile(values, pct):
    """Nearest-rank percentile of ``values`` (``pct`` in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


class Sample:
    """What one timed window of one implementation produced.

    :param count: messages or calls completed in the window.
    :param wall: seconds of wall time.
    :param cpu: CPU seconds of this process.
    :param child_cpu: CPU seconds of the measured child processes.
    :param latencies: seconds per call, for RPC cases.
    :param rss: this process's RSS in MiB at the end of the window.
    :param broker_cpu: CPU seconds of the broker, or None when it is not
        measured.
    """

    def __init__(self, count, wall, cpu, child_cpu=0.0, latencies=None,
                 rss=None, extra=None, broker_cpu=None):
        self.count = count
        self.wall = wall
        self.cpu = cpu
        self.child_cpu = child_cpu
        self.broker_cpu = broker_cpu
        self.latencies = latencies
        self.rss = rss_mb() if rss is None else rss
        #: case-specific numbers (e.g. RSS growth), copied to the JSON.
        self.extra = dict(extra or {})

    @property
    def rate(self):
        return self.count / self.wall if self.wall > 0 else None

    @property
    def cpu_pct(self):
        return 100.0 * (self.cpu + self.child_cpu) / self.wall

    @property
    def child_pct(self):
        return 100.0 * self.child_cpu / self.wall

    @property
    def broker_pct(self):
        if self.broker_cpu is None:
            return None
        return 100.0 * self.broker_cpu / self.wall

    def as_dict(self):
        d = {'count': self.count, 'wall_s': self.wall, 'rate': self.rate,
             'cpu_s': self.cpu, 'child_cpu_s': self.child_cpu,
             'broker_cpu_s': self.broker_cpu, 'rss_mb': self.rss}
        if self.latencies:
            d['p50_ms'] = 1000 * percentile(self.latencies, 50)
            d['p99_ms'] = 1000 * percentile(self.latencies, 99)
        d.update(self.extra)
        return d


class Meter:
    """Measure one window: ``start()``, the work, ``stop(count)``.

    Not a ``with`` block on purpose: several windows end when another
    thread signals, or after the library's ``with`` block has exited, and
    start/stop make the measured span explicit at the call site.

    :param child_pids: processes whose CPU time counts for this window.
    """

    def __init__(self, child_pids=()):
        self.child_pids = tuple(child_pids)
        self._broker_pid = _broker_pid
        self._t0 = self._c0 = self._k0 = self._b0 = None

    def _children(self):
        return sum(process_cpu_seconds(p) for p in self.child_pids)

    def _broker(self):
        if self._broker_pid is None:
            return None
        return process_cpu_seconds(self._broker_pid)

    def start(self):
        self._k0 = self._children()
        self._b0 = self._broker()
        self._c0 = time.process_time()
        self._t0 = time.perf_counter()
        return self

    def stop(self, count, latencies=None, extra=None):
        wall = time.perf_counter() - self._t0
        cpu = time.process_time() - self._c0
        child = self._children() - self._k0
        broker = None if self._b0 is None else self._broker() - self._b0
        return Sample(count, wall, cpu, child, latencies, extra=extra,
                      broker_cpu=broker)


def timed_echo_calls(call, message, n, server_pids=(), warmup=20):
    """``n`` sequential ``call(message)``, each timed, against an echo server.

    The first call's reply must be the message itself; then ``warmup``
    untimed calls, so that connection set-up and the servers' first message
    are not measured. Every client's sequential RPC row runs this.

    :returns: the :class:`Sample`, with the latencies.
    """
    reply = call(message)
    if reply != message:
        raise RuntimeError('echo server returned {!r}'.format(reply)[:200])
    for _ in range(warmup):
        call(message)
    latencies = []
    clock = time.perf_counter
    meter = Meter(server_pids).start()
    for _ in range(n):
        t = clock()
        call(message)
        latencies.append(clock() - t)
    return meter.stop(n, latencies)


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(samples):
    """Combine the runs of one implementation into one row's numbers.

    Medians over runs for rate, latency percentiles and CPU; the largest
    RSS. Per-run numbers are kept under ``runs``.
    """
    rows = [s.as_dict() for s in samples]
    return {
        'rate': _median([s.rate for s in samples]),
        'p50_ms': _median([r.get('p50_ms') for r in rows]),
        'p99_ms': _median([r.get('p99_ms') for r in rows]),
        'cpu_pct': _median([s.cpu_pct for s in samples]),
        'child_pct': _median([s.child_pct for s in samples]),
        'broker_pct': _median([s.broker_pct for s in samples]),
        'rss_mb': max(s.rss for s in samples),
        'runs': rows,
    }
