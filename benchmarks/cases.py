# SPDX-License-Identifier: Apache-2.0
"""The benchmark cases: what each one runs, and how its rows are built.

A case is a function ``case(workload) -> [row, ...]`` registered in
:data:`CASES`. It runs its implementations *interleaved*: run 1 library
then raw, run 2 raw then library, and so on, so that a broker or machine
that slows down over time hurts both alike. Each row holds the median over
the runs (:func:`benchmarks.measure.summarize`) and the ratio to its
baseline row, normally raw pika doing the same work.

One implementation failing in one run does not stop the others: the error
is kept and shown in the row's notes; a row without a single good run is an
error row.
"""

import sys
import traceback

from occo.util.communication.settings import Settings

from . import lib, others, raw
from .cdf import keep as keep_cdf
from .measure import summarize
from .progress import run_started
from .procs import Servers

__all__ = ['CASES', 'NEEDS_BROKER', 'make_row', 'error_text']


def make_row(case, label, impl, unit, samples=(), errors=(), baseline=None,
             notes=''):
    """Build one table row from the samples of one implementation.

    :param case: the case name given to ``--cases`` (``consume``).
    :param label: what the table shows in the case column
        (``consume P=1``).
    :param baseline: the ``impl`` of the row in the same ``label`` that
        ``ratio`` divides by, or ``None`` for no ratio.
    """
    row = {'case': case, 'label': label, 'impl': impl, 'unit': unit,
           'baseline': baseline, 'ratio': None, 'notes': notes,
           'error': None, 'failed_runs': list(errors)}
    if samples:
        row.update(summarize(samples))
        if unit == '-':
            row['rate'] = None   # a window with nothing to count (idle)
    else:
        row.update({'rate': None, 'p50_ms': None, 'p99_ms': None,
                    'cpu_pct': None, 'child_pct': None, 'broker_pct': None,
                    'rss_mb': None,
                    'runs': []})
        row['error'] = errors[0] if errors else 'no run'
    return row


def error_text(exc):
    """One line naming the error; pika's errors often have no message."""
    return '{}: {}'.format(type(exc).__name__, str(exc) or repr(exc))


def _interleave(runs, jobs):
    """Run ``jobs`` (``[(key, fn)]``) ``runs`` times, alternating order.

    :returns: ``{key: (samples, errors)}``.
    """
    results = {key: ([], []) for key, _ in jobs}
    for run in range(runs):
        run_started(run + 1, runs)
        order = jobs if run % 2 == 0 else list(reversed(jobs))
        for key, fn in order:
            try:
                results[key][0].append(keep_cdf(fn()))
            except Exception as e:  # becomes the row's error, run goes on
                print('benchmark {} run {} failed:'.format(key, run + 1),
                      file=sys.stderr)
                traceback.print_exc(file=sys.stderr)
                results[key][1].append(error_text(e))
    return results


def _fresh_queue(workload, case, fn):
    """Call ``fn(queue)`` with a new queue name; delete the queue after."""
    queue = workload.queue_name(case)
    try:
        return fn(queue)
    finally:
        _delete_quietly(workload, [queue])


def _delete_quietly(workload, queues):
    """Delete ``queues``; a failure is printed, never raised, so it cannot
    hide the error that ended the case."""
    try:
        raw.delete_queues(workload, queues)
    except Exception as e:  # the measurement (or its error) stands
        print('could not delete queues {}: {}'.format(queues, error_text(e)),
              file=sys.stderr)


def _add_ratios(rows):
    by_key = {(r['label'], r['impl']): r for r in rows}
    for row in rows:
        base = by_key.get((row['label'], row['baseline']))
        if base is not None and row['rate'] and base['rate']:
            row['ratio'] = row['rate'] / base['rate']
    return rows


def _append_note(row, text):
    row['notes'] = '; '.join(t for t in (row['notes'], text) if t)


def _published(workload, publish_fn, n, *args):
    """Time ``publish_fn`` on a fresh queue, then check all ``n`` arrived."""
    def run(queue):
        sample = publish_fn(workload, queue, n, *args)
        raw.expect_count(workload, queue, n)
        return sample
    return _fresh_queue(workload, 'pub', run)


# -- cases --------------------------------------------------------------

def publish_transient(workload):
    """Library with confirms on a transient queue vs raw without confirms."""
    n = workload.count('publish')
    other = others.publishing(workload, _published)
    results = _interleave(workload.runs, [
        ('library', lambda: _published(workload, lib.publish, n, False)),
        ('raw', lambda: _published(workload, raw.publish, n, False, False)),
    ] + other.jobs)
    rows = [
        make_row('publish-transient', 'publish-transient', 'library', 'msg/s',
                 *results['library'], baseline='raw',
                 notes='confirmed, durable=False'),
        make_row('publish-transient', 'publish-transient', 'raw', 'msg/s',
                 *results['raw'], baseline='raw', notes='no confirms'),
    ] + other.rows(results)
    return _add_ratios(rows)


def publish_durable(workload):
    """Library defaults vs raw persistent, with and without confirms."""
    n = workload.count('publish')
    n_confirmed = workload.count('publish_confirmed')
    results = _interleave(workload.runs, [
        ('library', lambda: _published(workload, lib.publish, n, None)),
        ('raw', lambda: _published(workload, raw.publish, n, True, False)),
        ('raw-confirmed', lambda: _published(workload, raw.publish,
                                             n_confirmed, True, True)),
    ])
    label = 'publish-durable'
    rows = _add_ratios([
        make_row(label, label, 'library', 'msg/s', *results['library'],
                 baseline='raw', notes='defaults: durable, persistent, '
                 'confirmed'),
        make_row(label, label, 'raw', 'msg/s', *results['raw'],
                 baseline='raw', notes='delivery_mode=2, no confirms'),
        make_row(label, label, 'raw-confirmed', 'msg/s',
                 *results['raw-confirmed'], baseline='raw',
                 notes='confirm_delivery(), N={}'.format(n_confirmed)),
    ])
    library, confirmed = rows[0], rows[2]
    if library['rate'] and confirmed['rate']:
        _append_note(library, 'x{:.2f} raw-confirmed'.format(
            library['rate'] / confirmed['rate']))
    return rows


def _drain(workload, consume_fn, n, prefetch, timeout):
    """Pre-fill a fresh queue with ``n`` messages (untimed), then time
    ``consume_fn`` draining it."""
    def run(queue):
        raw.prefill(workload, queue, n)
        return consume_fn(workload, queue, n, prefetch, timeout)
    return _fresh_queue(workload, 'cons', run)


def consume(workload):
    """Drain a pre-filled queue at prefetch 1, 100 and the library default."""
    default = Settings({}).prefetch_count
    timeout = 120 if not workload.quick else 60
    rows = []
    for prefetch in (1, 100):
        n = workload.count('consume_p1' if prefetch == 1 else 'consume')
        label = 'consume P={}'.format(prefetch)
        # The library row at the default prefetch leaves the key out, so it
        # measures the library exactly as configured by default.
        lib_prefetch = None if prefetch == default else prefetch
        lib_impl = 'library (default)' if prefetch == default else 'library'

        def run_lib(n=n, p=lib_prefetch):
            return _drain(workload, lib.consume, n, p, timeout)

        def run_raw(n=n, p=prefetch):
            return _drain(workload, raw.consume, n, p, timeout)

        other = others.consuming(workload, _drain, n, prefetch, timeout)
        results = _interleave(workload.runs, [('library', run_lib),
                                              ('raw', run_raw)] + other.jobs)
        rows += [
            make_row('consume', label, lib_impl, 'msg/s', *results['library'],
                     baseline='raw', notes='N={}'.format(n)),
            make_row('consume', label, 'raw', 'msg/s', *results['raw'],
                     baseline='raw', notes='manual ack per message'),
        ] + other.rows(results)
    if default not in (1, 100):
        n = workload.count('consume')
        results = _interleave(workload.runs, [('library', lambda: _drain(
            workload, lib.consume, n, None, timeout))])
        rows.append(make_row('consume', 'consume P=100',
                             'library (default P={})'.format(default), 'msg/s',
                             *results['library'], baseline='raw'))
    return _add_ratios(rows)


def rpc_seq(workload):
    """Sequential RPC: library and raw clients, each against its server."""
    n = workload.count('rpc')
    lib_queue = workload.queue_name('rpcl')
    raw_queue = workload.queue_name('rpcr')
    label = 'rpc-seq'
    try:
        with Servers(lib.echo_server, workload, lib_queue) as lib_srv, \
                Servers(raw.echo_server, workload, raw_queue) as raw_srv:
            other = others.rpc(workload, raw_queue, n, raw_srv.pids)
            results = _interleave(workload.runs, [
                ('library', lambda: lib.rpc_sequential(
                    workload, lib_queue, n, lib_srv.pids)),
                ('raw', lambda: raw.rpc_sequential(
                    workload, raw_queue, n, raw_srv.pids)),
                ('mixed', lambda: lib.rpc_sequential(
                    workload, raw_queue, n, raw_srv.pids)),
            ] + other.jobs)
    finally:
        _delete_quietly(workload, [lib_queue, raw_queue])
    rows = _add_ratios([
        make_row(label, label, 'library', 'calls/s', *results['library'],
                 baseline='raw', notes='library server'),
        make_row(label, label, 'raw', 'calls/s', *results['raw'],
                 baseline='raw', notes='raw server'),
        make_row(label, label, 'library client, raw server', 'calls/s',
                 *results['mixed'], baseline='raw',
                 notes='client-side cost alone'),
    ] + other.rows(results))
    base = rows[1]
    for row in (rows[0], rows[2]):
        if row['p99_ms'] and base['p99_ms']:
            _append_note(row, 'p99 x{:.2f} raw'.format(
                row['p99_ms'] / base['p99_ms']))
    return rows


def rpc_threads(workload):
    """8 threads share one library RPCProducer against 2 library servers."""
    threads = 8
    n = workload.count('rpc_threads')
    n_seq = workload.count('rpc_threads_seq')
    queue = workload.queue_name('rpct')
    label = 'rpc-threads'
    threaded, sequential, errors = [], [], []
    try:
        with Servers(lib.echo_server, workload, queue, count=2) as servers:
            for _run in range(workload.runs):
                try:
                    t, s = lib.rpc_threads(workload, queue, n, threads,
                                           servers.pids, n_seq)
                    threaded.append(t)
                    sequential.append(s)
                except Exception as e:  # becomes the row's error
                    traceback.print_exc(file=sys.stderr)
                    errors.append(error_text(e))
    finally:
        _delete_quietly(workload, [queue])
    rows = [
        make_row(label, label, 'library {} threads'.format(threads), 'calls/s',
                 threaded, errors, notes='2 library servers'),
        make_row(label, label, 'library sequential', 'calls/s', sequential,
                 errors, notes='same producer and servers'),
    ]
    if rows[0]['rate'] and rows[1]['rate']:
        _append_note(rows[0], 'x{:.2f} library sequential'.format(
            rows[0]['rate'] / rows[1]['rate']))
    return rows


def rpc_futures(workload):
    """One thread keeps 64 calls in flight with ``RPCProducer.map``, against
    raw pika's sequential RPC, each against its own server, same run."""
    in_flight = 64
    n = workload.count('rpc_futures')
    n_raw = workload.count('rpc')
    lib_queue = workload.queue_name('rpcf')
    raw_queue = workload.queue_name('rpcr')
    label = 'rpc-futures'
    try:
        with Servers(lib.echo_server, workload, lib_queue) as lib_srv, \
                Servers(raw.echo_server, workload, raw_queue) as raw_srv:
            results = _interleave(workload.runs, [
                ('library', lambda: lib.rpc_map(
                    workload, lib_queue, n, in_flight, lib_srv.pids)),
                ('raw', lambda: raw.rpc_sequential(
                    workload, raw_queue, n_raw, raw_srv.pids)),
            ])
    finally:
        _delete_quietly(workload, [lib_queue, raw_queue])
    return _add_ratios([
        make_row(label, label, 'library map, {} in flight'.format(in_flight),
                 'calls/s', *results['library'], baseline='raw sequential',
                 notes='one thread, library server, N={}'.format(n)),
        make_row(label, label, 'raw sequential', 'calls/s', *results['raw'],
                 baseline='raw sequential',
                 notes='raw server, N={}'.format(n_raw)),
    ])


def idle(workload):
    """CPU of a consumer on an empty queue and of an unanswered RPC call."""
    seconds = workload.count('idle_seconds')
    results = _interleave(workload.runs, [
        ('consumer', lambda: _fresh_queue(
            workload, 'idle', lambda q: lib.idle_consumer(workload, q,
                                                          seconds))),
        ('rpc', lambda: _fresh_queue(
            workload, 'idle', lambda q: lib.idle_rpc(workload, q, seconds))),
    ])
    note = 'CPU over {} s idle'.format(seconds)
    return [
        make_row('idle', 'idle', 'library consumer', '-', *results['consumer'],
                 notes=note + ', empty queue'),
        make_row('idle', 'idle', 'library rpc wait', '-', *results['rpc'],
                 notes=note + ', call never answered'),
    ]


def memory(workload):
    """The in-process backend: publish+consume, and sequential RPC."""
    n = workload.count('memory')
    n_rpc = workload.count('memory_rpc')
    results = _interleave(workload.runs, [
        ('pubsub', lambda: lib.memory_publish_consume(workload, n)),
        ('rpc', lambda: lib.memory_rpc(workload, n_rpc)),
    ])
    return [
        make_row('memory', 'memory publish+consume', 'library (memory)',
                 'msg/s', *results['pubsub'], notes='no raw counterpart'),
        make_row('memory', 'memory rpc-seq', 'library (memory)', 'calls/s',
                 *results['rpc'], notes='consumer thread, same process'),
    ]


def workers(workload):
    """A processor waiting 5 ms (I/O-bound): ``max_workers`` 8 against 1."""
    delay = 0.005
    timeout = 120 if not workload.quick else 60
    n1, n8 = workload.count('workers_1'), workload.count('workers_8')
    label = 'workers 5 ms'

    def run(n, count):
        return _drain(workload, lambda w, q, n, _p, t: lib.consume_workers(
            w, q, n, count, delay, t), n, None, timeout)
    results = _interleave(workload.runs, [('8', lambda: run(n8, 8)),
                                          ('1', lambda: run(n1, 1))])
    return _add_ratios([
        make_row('workers', label, 'library 8 workers', 'msg/s', *results['8'],
                 baseline='library 1 worker',
                 notes='max_workers=8, N={}'.format(n8)),
        make_row('workers', label, 'library 1 worker', 'msg/s', *results['1'],
                 baseline='library 1 worker',
                 notes='max_workers=1 (default), N={}'.format(n1)),
    ])


def rss(workload):
    """RSS growth over many messages through one producer and consumer."""
    n = workload.count('rss')
    results = _interleave(1, [('library', lambda: _fresh_queue(
        workload, 'rss', lambda q: lib.rss_growth(workload, q, n)))])
    row = make_row('rss', 'rss', 'library', 'msg/s', *results['library'],
                   notes='{} msgs'.format(n))
    if row['runs']:
        r = row['runs'][0]
        row['rss_growth_mb'] = r['rss_growth_mb']
        _append_note(row, 'growth {:+.1f} MB after warm-up (peak {:+.1f}, '
                          '{:+.1f} since before open)'.format(
                              r['rss_growth_mb'],
                              r['rss_peak_mb'] - r['rss_after_warmup_mb'],
                              r['rss_growth_from_start_mb']))
    return [row]


#: Case name -> function, in the order a full run executes them.
CASES = {
    'publish-transient': publish_transient,
    'publish-durable': publish_durable,
    'consume': consume,
    'rpc-seq': rpc_seq,
    'rpc-threads': rpc_threads,
    'rpc-futures': rpc_futures,
    'idle': idle,
    'memory': memory,
    'workers': workers,
    'rss': rss,
}

#: Cases that need the broker (``memory`` does not).
NEEDS_BROKER = frozenset(CASES) - {'memory'}
