# SPDX-License-Identifier: Apache-2.0
"""The benchmark's other clients, charts, progress line, sizes and goals.

Like ``test_benchmark_smoke.py`` these never look at speed: a quick run on
a shared machine measures nothing. They check that kombu, aio-pika and
AMQPStorm run through the cases where they are installed (the ``bench``
extra), that a missing one is a ``not installed`` row and no error, that
``--plot`` writes PNG files, that the progress line stays off without a
terminal or in CI, and that goals are checked per message size.
"""

import importlib
import io
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import BROKER_HOST, BROKER_PORT, run_benchmark

PNG = b'\x89PNG\r\n\x1a\n'
#: The labels where each other client has rows, and how many.
CLIENT_LABELS = {'publish-transient': 2, 'consume P=100': 1, 'rpc-seq': 1}


@pytest.fixture
def bench(benchmark_module):
    """The ``benchmarks`` package's modules these tests use."""

    class Modules:
        others = benchmark_module('others')
        cases = benchmark_module('cases')
        report = benchmark_module('report')
        progress = benchmark_module('progress')
        workload = benchmark_module('workload')
        main = benchmark_module('__main__')
        measure = benchmark_module('measure')
        broker = benchmark_module('broker')
    return Modules


def _has_matplotlib():
    try:
        importlib.import_module('matplotlib')
    except ImportError:
        return False
    return True


@pytest.mark.broker
def test_benchmark_quick_run_covers_other_clients_plots_and_stays_quiet(
        tmp_path, bench):
    out, charts = tmp_path / 'b.json', tmp_path / 'charts'
    # Quiet because stderr is a pipe, not because of CI.
    proc = run_benchmark('--scale', '0.25', '--cases',
                         'publish-transient,consume,rpc-seq', '--clients', 'all',
                         '--json', out, '--plot', charts, timeout=240,
                         CI=None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '\r' not in proc.stderr and '\033[K' not in proc.stderr
    rows = json.loads(out.read_text())['rows']
    for client in bench.others.CLIENTS:
        installed = bench.others.load(client) is not None
        for label, count in CLIENT_LABELS.items():
            mine = [r for r in rows
                    if r['label'] == label and r.get('client') == client]
            if installed:
                assert len(mine) == count, (client, label, mine)
                for row in mine:
                    assert row['error'] is None, row
                    assert row['rate'] > 0, row
                    assert row['ratio'] is not None, row
            else:
                assert [r['notes'] for r in mine] == [
                    bench.others.NOT_INSTALLED], (client, label)
    if _has_matplotlib():
        pngs = sorted(p.name for p in charts.iterdir())
        assert pngs == ['rpc-latency-cdf.png', 'throughput-100b.png']
        for name in pngs:
            assert (charts / name).read_bytes()[:8] == PNG
    else:
        assert 'no charts' in proc.stdout


@pytest.mark.broker
def test_publish_transient_row_says_not_installed_for_missing_client(
        monkeypatch, bench):
    monkeypatch.setitem(sys.modules, 'kombu', None)   # import kombu fails
    workload = bench.workload.Workload(quick=True, runs=1, scale=0.05,
                                       clients=['kombu'])
    rows = bench.cases.publish_transient(workload)
    (kombu,) = [r for r in rows if r.get('client') == 'kombu']
    assert kombu['notes'] == bench.others.NOT_INSTALLED
    assert kombu['error'] is None and kombu['rate'] is None
    assert all(r['error'] is None for r in rows), rows
    assert bench.others.NOT_INSTALLED in bench.report.format_table(rows)


def _row(bench, label, impl, rate, size, client=None, ratio=None, runs=()):
    row = bench.cases.make_row(label.split(' ')[0], label, impl, 'msg/s',
                               errors=['-'])
    row.update(error=None, rate=rate, size=size, ratio=ratio, runs=list(runs))
    if client:
        row['client'] = client
    return row


def _rows(bench, size, lib_rate):
    cdf = [{'latency_cdf_ms': [0.5 + i / 100 for i in range(200)]}]
    return [
        _row(bench, 'publish-transient', 'library', lib_rate, size,
             ratio=lib_rate / 1000),
        _row(bench, 'publish-transient', 'raw', 1000, size, ratio=1.0),
        _row(bench, 'publish-transient', 'kombu', 1500, size, 'kombu', 1.5),
        _row(bench, 'publish-transient', 'aio-pika', None, size, 'aio-pika'),
        _row(bench, 'rpc-seq', 'library', 700, size, ratio=1.2, runs=cdf),
        _row(bench, 'rpc-seq', 'raw', 600, size, ratio=1.0, runs=cdf),
    ]


def test_evaluate_goals_checks_each_size_against_fastest_other_client(bench):
    rows = _rows(bench, 100, 2000) + _rows(bench, 10240, 1200)
    goals = [g for g in bench.report.evaluate_goals(rows)
             if 'fastest other' in g['goal']]
    assert [(g['size'], g['met'], g['note']) for g in goals] == [
        (100, True, 'vs kombu'), (10240, False, 'vs kombu')]
    text = bench.report.format_goals(goals)
    assert '100 B' in text and '10 KB' in text
    assert 'met' in text and 'MISSED' in text


def test_write_charts_writes_a_png_per_size_and_a_latency_cdf(tmp_path, bench):
    pytest.importorskip('matplotlib')
    plot = importlib.import_module('benchmarks.plot')
    document = {'rows': _rows(bench, 100, 2000) + _rows(bench, 1048576, 300),
                'workload': {'runs': 3},
                'environment': {'cpu_model': 'Test CPU', 'cpus': 2,
                                'python': '3.11', 'pika': '1.4',
                                'broker': 'RabbitMQ 3', 'occo': '1.0',
                                'clients': {'kombu': '5.7'}}}
    paths = plot.write_charts(document, str(tmp_path))
    assert sorted(os.path.basename(p) for p in paths) == [
        'rpc-latency-cdf.png', 'throughput-100b.png', 'throughput-1mb.png']
    for path in paths:
        with open(path, 'rb') as f:
            assert f.read(8) == PNG
    assert 'Test CPU, 2 cores' in plot.footer(document)
    assert 'queue version' not in plot.footer(document)
    document['environment']['queue_version'] = 2   # --queue-version 2
    assert 'RabbitMQ 3 (classic queue version 2)' in plot.footer(document)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _plan(bench):
    workload = bench.workload.Workload(runs=3, clients=['kombu'])
    return [('publish-transient', 'publish-transient', workload),
            ('rpc-seq', 'rpc-seq', workload)]


def test_progress_draws_case_run_and_time_left_on_a_terminal(
        monkeypatch, bench):
    monkeypatch.delenv('CI', raising=False)
    stream = _Terminal()
    progress = bench.progress.Progress(_plan(bench), stream=stream)
    progress.start(0)
    progress.draw((2, 3, time.monotonic()))
    text = stream.getvalue()
    assert text.startswith('\r\033[K[1/2] publish-transient  run 2/3')
    assert 'elapsed ' in text and 'left ~' in text


@pytest.mark.parametrize('ci, stream', [('true', _Terminal()),
                                        (None, io.StringIO())])
def test_progress_stays_silent_in_ci_or_without_a_terminal(
        monkeypatch, bench, ci, stream):
    if ci:
        monkeypatch.setenv('CI', ci)
    else:
        monkeypatch.delenv('CI', raising=False)
    progress = bench.progress.Progress(_plan(bench), stream=stream)
    progress.start(0)
    progress.draw((1, 3, 0.0))
    progress.clear()
    assert stream.getvalue() == ''
    assert progress.child_env('/tmp/unused') is None


def test_progress_run_started_writes_the_run_for_the_parent(
        monkeypatch, tmp_path, bench):
    path = tmp_path / 'progress'
    monkeypatch.setenv(bench.progress.ENV, str(path))
    bench.progress.run_started(2, 5)
    assert path.read_text() == '2 5'


def test_parse_args_sizes_and_clients(bench):
    args = bench.main.parse_args(['--sizes', '100,10k,1m', '--clients',
                                  'none'])
    assert args.sizes == [100, 10240, 1048576]
    assert args.clients == []
    assert bench.main.parse_args([]).clients == list(bench.others.CLIENTS)
    with pytest.raises(SystemExit):
        bench.main.parse_args(['--sizes', '100,big'])
    with pytest.raises(SystemExit):
        bench.main.parse_args(['--clients', 'celery'])


def test_workload_count_caps_a_1mb_window_and_keeps_10kb_counts(bench):
    small = bench.workload.Workload(size=10240)
    large = bench.workload.Workload(size=1024 * 1024)
    assert small.count('publish') == bench.workload.FULL_COUNTS['publish']
    assert small.count('rss') == bench.workload.FULL_COUNTS['rss']
    assert large.count('publish') == 512
    assert large.count('rpc') == 200


@pytest.mark.broker
def test_listening_pid_finds_the_local_broker_and_nothing_elsewhere(bench):
    broker = bench.broker
    pid = broker.listening_pid(BROKER_HOST, BROKER_PORT)
    assert pid is not None, 'the test broker listens on this machine'
    with open('/proc/{}/comm'.format(pid)) as f:
        assert f.read().strip() == 'beam.smp'
    assert broker.listening_pid('192.0.2.1', BROKER_PORT) is None  # not local
    with socket.socket() as probe:   # a port that nobody listens on
        probe.bind(('127.0.0.1', 0))
        free_port = probe.getsockname()[1]
    assert broker.listening_pid('127.0.0.1', free_port) is None


def test_process_cpu_seconds_reads_another_process_to_the_microsecond(bench):
    """The CPU time of another process, as precise as its own
    ``time.process_time``: clock ticks (10 ms) would be 2.5 points of a
    core over a 0.4 s window."""
    measure = bench.measure
    burner = ('import sys, time\n'
              'while time.process_time() < 0.2: pass\n'
              'print(repr(time.process_time()), flush=True)\n'
              'sys.stdin.read()\n')
    child = subprocess.Popen([sys.executable, '-c', burner], text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        own_reading = float(child.stdout.readline())
        reading = measure.process_cpu_seconds(child.pid)
        assert own_reading <= reading < own_reading + 0.005
    finally:
        child.communicate('', timeout=30)
    assert measure.process_cpu_seconds(child.pid) == 0.0   # gone


def test_busiest_side_goal_takes_the_broker_or_the_client(bench):
    rows = _rows(bench, 100, 2000)
    library = rows[0]
    library.update(cpu_pct=60.0, broker_pct=97.0)
    (goal,) = [g for g in bench.report.evaluate_goals(rows)
               if 'busiest side' in g['goal']]
    assert (goal['value'], goal['note'], goal['met']) == (97.0, 'broker', True)
    library.update(cpu_pct=85.0, broker_pct=None)
    (goal,) = [g for g in bench.report.evaluate_goals(rows)
               if 'busiest side' in g['goal']]
    assert goal['met'] is False
    assert goal['note'] == 'client, broker not measured'
    assert 'brk%' in bench.report.format_table(rows)


def test_durable_rpc_and_consume_goals_of_issue_14_apply_at_10kb_only(bench):
    rows = []
    for size in (100, 10240, 1024 * 1024):
        rows += [
            _row(bench, 'publish-transient', 'raw', 1000, size, ratio=1.0),
            _row(bench, 'publish-durable', 'library', 1200, size, ratio=2.0),
            _row(bench, 'rpc-seq', 'library', 600, size, ratio=1.2),
            _row(bench, 'consume P=100', 'library', 1600, size, ratio=1.6),
        ]
    checked = [(g['size'], g['goal']) for g in bench.report.evaluate_goals(rows)
               if g['goal'].startswith('#14')]
    assert checked == [
        (10240, '#14 publish-durable library / raw transient unconfirmed'),
        (10240, '#14 rpc-seq library / raw calls/s'),
        (10240, '#14 consume P=100 library / raw'),
    ]
