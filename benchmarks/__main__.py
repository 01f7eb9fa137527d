# SPDX-License-Identifier: Apache-2.0
"""Command line: ``python -m benchmarks [--quick] [--cases a,b] ...``.

Runs each selected case in a child process (:mod:`benchmarks.runner`) with
a time limit, prints one table of all rows, checks the goals, writes the
JSON file and the total elapsed time. A case that fails or hits its limit
gets an error row; the other cases still run, and the exit code is 0 as
long as the table could be produced (slow is not a failure). The exit
code is 2 for bad arguments, or when ``--queue-version`` cannot set its
policy.
"""

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time

from . import broker, others, queue_policy, raw, report
from .cases import CASES, NEEDS_BROKER, error_text, make_row
from .progress import Progress
from .workload import Workload, read_ledger

#: A load average above this after a case means more than the benchmark
#: itself (broker, client, servers: about 2-3 on 2 cores) was running.
BUSY_LOAD = 4.0

DEFAULT_JSON = os.path.relpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), 'results', 'latest.json'))


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='python -m benchmarks',
        description='Benchmark occo.util.communication against raw pika.')
    parser.add_argument('--quick', action='store_true',
                        help='small counts, one run: a smoke run')
    parser.add_argument('--json', default=DEFAULT_JSON, metavar='PATH',
                        help='where to write the results (default: %(default)s)')
    parser.add_argument('--cases', default=','.join(CASES),
                        help='comma-separated cases (default: all): '
                        + ', '.join(CASES))
    parser.add_argument('--size', type=int, default=100,
                        help='message size in bytes, e.g. 100 or 10240 '
                        '(default: %(default)s)')
    parser.add_argument('--runs', type=int, default=None,
                        help='timed runs per implementation, the row shows '
                        'the median (default: 3, 1 with --quick)')
    parser.add_argument('--scale', type=float, default=1.0,
                        help='multiply every message count (default: 1)')
    parser.add_argument('--case-timeout', type=float, default=None,
                        help='seconds before a case is killed (default: 900, '
                        '90 with --quick)')
    parser.add_argument('--sizes', default=None, metavar='N,N',
                        help='run the cases at each of these message sizes '
                        '(bytes, or with k or m: 100,10k,1m); overrides --size')
    parser.add_argument('--clients', default='all', metavar='A,B',
                        help='other clients to compare where a case has them: '
                        '{}, all or none (default: all; a missing one is '
                        'noted, not an error)'.format(', '.join(others.CLIENTS)))
    parser.add_argument('--queue-version', type=int, choices=(1, 2),
                        default=None, metavar='N',
                        help='store the benchmark\'s queues as classic queue '
                        'version N (1 or 2), by a policy set with rabbitmqctl '
                        'for the run (default: the broker\'s own)')
    parser.add_argument('--plot', default=None, metavar='DIR',
                        help='write PNG charts to DIR (needs matplotlib: '
                        'pip install -e .[bench])')
    args = parser.parse_args(argv)
    try:
        args.sizes = (_parse_sizes(args.sizes) if args.sizes is not None
                      else [args.size])
    except ValueError:
        parser.error('--sizes: give sizes in bytes, e.g. 100,10240,1048576 '
                     'or 100,10k,1m')
    names = [c.strip() for c in args.clients.split(',') if c.strip()]
    if names == ['all']:
        names = list(others.CLIENTS)
    elif names == ['none']:
        names = []
    unknown = [c for c in names if c not in others.CLIENTS]
    if unknown:
        parser.error('unknown client(s) {}; known: {}'.format(
            ', '.join(unknown), ', '.join(others.CLIENTS)))
    args.clients = names
    args.cases = [c.strip() for c in args.cases.split(',') if c.strip()]
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error('unknown case(s) {}; known: {}'.format(
            ', '.join(unknown), ', '.join(CASES)))
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1 or min(args.sizes) < 1 or args.scale <= 0:
        parser.error('--runs, --size(s) and --scale must be positive')
    if args.case_timeout is None:
        # 900: consume with the three other clients takes about 5 minutes.
        args.case_timeout = 90.0 if args.quick else 900.0
    return args


def _parse_sizes(text):
    """``'100,10k,1m'`` -> ``[100, 10240, 1048576]``."""
    sizes = []
    for part in text.lower().replace(' ', '').split(','):
        factor = {'k': 1024, 'm': 1024 * 1024}.get(part[-1:], 1)
        sizes.append(int(part[:-1] if factor > 1 else part) * factor)
    if not sizes:
        raise ValueError(text)
    return sizes


def run_case(name, workload, timeout, progress=None):
    """Run case ``name`` in a child process; return its rows.

    The child gets its own session, so on timeout the whole group (the
    case and its server processes) is killed by its process group id. The
    child records each queue name in a ledger file before using it; the
    queues listed there are deleted afterwards, also after a kill.
    """
    fd, out_path = tempfile.mkstemp(prefix='bench-', suffix='.json')
    os.close(fd)
    fd, ledger = tempfile.mkstemp(prefix='bench-', suffix='.queues')
    os.close(fd)
    config = dict(workload.to_dict(), ledger=ledger)
    command = [sys.executable, '-m', 'benchmarks.runner', name,
               json.dumps(config), out_path]
    progress_path = out_path + '.progress'
    try:
        child = subprocess.Popen(
            command, stdout=sys.stderr, start_new_session=True,
            env=progress.child_env(progress_path) if progress else None)
        try:
            code = (progress.wait(child, timeout, progress_path) if progress
                    else child.wait(timeout))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)
            return [make_row(name, name, '-', '-', errors=[
                'killed after {:g} s (--case-timeout)'.format(timeout)])]
        try:
            with open(out_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return [make_row(name, name, '-', '-', errors=[
                'case process exited with code {} and no result'.format(code)])]
    finally:
        os.unlink(out_path)
        if os.path.exists(progress_path):
            os.unlink(progress_path)
        _delete_leftovers(workload, ledger)


def _delete_leftovers(workload, ledger):
    """Delete every queue the case named (normally gone already: deleting
    a missing queue is harmless). This catches the queues of a killed case.
    """
    queues = read_ledger(ledger)
    os.unlink(ledger)
    if queues:
        try:
            raw.delete_queues(workload, queues)
        except Exception as e:  # e.g. broker unreachable: nothing was made
            print('could not delete queues {}: {}'.format(
                queues, error_text(e)), file=sys.stderr)


def _loadavg():
    """The 1-minute load average: other work on the machine skews rates."""
    return os.getloadavg()[0]


def _cpu_model():
    """The processor's name from ``/proc/cpuinfo`` (``None`` if unknown)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _occo_version():
    from occo.util.communication import __version__
    return __version__


def environment(workload, need_broker):
    """Versions and machine facts recorded with the results."""
    import pika
    env = {'python': platform.python_version(), 'pika': pika.__version__,
           'platform': platform.platform(), 'cpus': os.cpu_count(),
           'loadavg_start': _loadavg(), 'broker': None,
           'cpu_model': _cpu_model(), 'clients': others.versions(),
           'occo': _occo_version()}
    # Which cores the benchmark and the broker's schedulers may use: on
    # few cores they share them (see benchmarks.own_core).
    env['client_cpus'] = _usable_cpus()
    env['broker_scheduler_cpus'] = None
    if need_broker:
        try:
            env['broker'] = raw.broker_version(workload)
        except Exception as e:  # the cases will report it in their rows
            env['broker'] = 'broker unreachable ({})'.format(error_text(e))
        pid = broker.listening_pid(workload.host, workload.port)
        schedulers = broker.scheduler_cpus(pid) if pid else None
        if schedulers:
            env['broker_scheduler_cpus'] = [sorted(s) for s in schedulers]
    return env


def _usable_cpus():
    """The CPUs this process may run on (all of them where the system
    does not say, as on macOS)."""
    if hasattr(os, 'sched_getaffinity'):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cpus_text(env):
    """The header's line on who runs where."""
    text = 'benchmark on CPUs {}'.format(_cpu_ranges(env['client_cpus']))
    schedulers = env['broker_scheduler_cpus']
    if schedulers:
        text += '; broker: {} scheduler(s), on CPUs {}'.format(
            len(schedulers), ' / '.join(_cpu_ranges(s) for s in schedulers))
    return text


def _cpu_ranges(cpus):
    """``[0, 1, 2, 5]`` as ``'0-2,5'``."""
    ranges = []
    for cpu in cpus:
        if ranges and ranges[-1][1] == cpu - 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ','.join(str(a) if a == b else '{}-{}'.format(a, b) for a, b in ranges)


def run_plan(plan, timeout):
    """Run each ``(key, case, workload)`` of ``plan`` in turn; return the
    rows and, per key, the elapsed time and the load average after it."""
    rows = []
    timings = {}
    progress = Progress(plan)
    for index, (key, name, case_workload) in enumerate(plan):
        progress.clear()
        print('running {} ...'.format(key), file=sys.stderr, flush=True)
        progress.start(index)
        t0 = time.monotonic()
        case_rows = run_case(name, case_workload, timeout, progress)
        progress.finish()
        for row in case_rows:
            row['size'] = case_workload.size
        rows += case_rows
        timings[key] = {'elapsed_s': time.monotonic() - t0,
                        'loadavg_end': _loadavg()}
        progress.clear()
        print('  {} done in {:.1f} s (load {:.2f})'.format(
            key, timings[key]['elapsed_s'], timings[key]['loadavg_end']),
              file=sys.stderr, flush=True)
    progress.clear()
    return rows, timings


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    workloads = [Workload(size=size, runs=args.runs, quick=args.quick,
                          scale=args.scale, clients=args.clients)
                 for size in args.sizes]
    workload = workloads[0]
    env = environment(workload, any(c in NEEDS_BROKER for c in args.cases))
    env['queue_version'] = args.queue_version
    print('occo.util.communication benchmarks: {} messages, {} run(s), '
          '{}; Python {}, pika {}, {}, {} CPUs ({}), load {:.2f}'.format(
              ', '.join(report.size_label(len(w.body)) for w in workloads),
              workload.runs,
              'quick' if args.quick else 'full', env['python'], env['pika'],
              env['broker'] or 'no broker', env['cpus'],
              env['cpu_model'] or 'unknown model', env['loadavg_start']),
          flush=True)
    if env['loadavg_start'] > 1.0:
        print('warning: load average {:.2f} before starting: other work on '
              'this machine will skew the numbers'.format(env['loadavg_start']),
              flush=True)
    print(_cpus_text(env), flush=True)
    if args.queue_version is not None:
        print('classic queue version {} for every queue (policy {})'.format(
            args.queue_version, queue_policy.POLICY), flush=True)
    print('other clients: {}'.format(', '.join(
        '{} {}'.format(c, env['clients'][c] or 'not installed')
        for c in args.clients) or 'none'), flush=True)
    # One entry per case and size; a key names both when there are sizes.
    plan = [(name if len(workloads) == 1 else '{} {}'.format(
        name, report.size_label(w.size)), name, w)
        for w in workloads for name in args.cases]
    try:
        with queue_policy.queue_version(args.queue_version, workload.host):
            rows, timings = run_plan(plan, args.case_timeout)
    except queue_policy.QueuePolicyError as e:
        print('error: {}'.format(e), file=sys.stderr)
        return 2
    elapsed = time.monotonic() - started
    env['loadavg_end'] = _loadavg()
    goals = report.evaluate_goals(rows)

    print()
    print(report.format_table(rows))
    if goals:
        print()
        print('Goals:')
        print(report.format_goals(goals))
    print()
    print('Total elapsed: {:.1f} s (load average {:.2f} at start, {:.2f} at '
          'end)'.format(elapsed, env['loadavg_start'], env['loadavg_end']))
    busy = {n: t['loadavg_end'] for n, t in timings.items()
            if t['loadavg_end'] > BUSY_LOAD}
    if busy:
        print('warning: load average above {} after {}: other work competed '
              'for the cores; rerun on a quiet machine'.format(
                  BUSY_LOAD, ', '.join('{} ({:.1f})'.format(n, load)
                                       for n, load in busy.items())))
    document = {
        'suite': 'occo.util.communication benchmarks',
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        'command': ['python', '-m', 'benchmarks'] + list(
            sys.argv[1:] if argv is None else argv),
        'workload': workload.to_dict(),
        'message_bytes': len(workload.body),
        'sizes': [w.size for w in workloads],
        'environment': env,
        'elapsed_s': elapsed,
        'cases': timings,
        'rows': rows,
        'goals': goals,
    }
    report.write_json(args.json, document)
    print('JSON written to {}'.format(args.json))
    if args.plot:
        from . import plot
        try:
            for path in plot.write_charts(document, args.plot):
                print('chart written to {}'.format(path))
        except ImportError as e:   # the table stands; say what is missing
            print('no charts: {} (pip install -e .[bench])'.format(e))
    return 0


if __name__ == '__main__':
    sys.exit(main())
