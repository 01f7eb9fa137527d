# SPDX-License-Identifier: Apache-2.0
"""``python -m benchmarks.own_core`` runs the benchmark against a node of
its own with one scheduler, the benchmark on the other cores; every run
records which cores the benchmark and the broker's schedulers may use.

The split is read off ``/proc`` (each scheduler thread's allowed CPUs) and
checked in the JSON the run writes. Never looks at speed.
"""

import json
import os

import pytest

from conftest import BROKER_HOST, BROKER_PORT, run_benchmark
from support.rabbitnode import epmd_names

pytestmark = pytest.mark.broker


@pytest.fixture
def broker(benchmark_module):
    return benchmark_module('broker')


def _extra_nodes():
    return [name for name in epmd_names() if name.startswith('owncore')]


def test_scheduler_cpus_lists_each_scheduler_of_the_broker(broker):
    pid = broker.listening_pid(BROKER_HOST, BROKER_PORT)
    schedulers = broker.scheduler_cpus(pid)
    assert schedulers, 'the local broker has scheduler threads'
    for cpus in schedulers:
        assert cpus and cpus <= set(range(os.cpu_count()))
    assert broker.scheduler_cpus(os.getpid()) is None   # not an Erlang VM


def test_a_plain_run_records_who_may_run_where(tmp_path):
    out = tmp_path / 'plain.json'
    done = run_benchmark('--cases', 'publish-transient', '--clients', 'none',
                         '--json', out)
    assert done.returncode == 0, done.stderr
    env = json.loads(out.read_text())['environment']
    assert env['client_cpus'] == sorted(os.sched_getaffinity(0))
    assert env['broker_scheduler_cpus'], env
    assert 'benchmark on CPUs ' in done.stdout


@pytest.mark.skipif(os.cpu_count() < 2, reason='needs a core beside the broker')
def test_own_core_puts_one_scheduler_and_the_benchmark_on_different_cores(tmp_path):
    out = tmp_path / 'own.json'
    done = run_benchmark('--cases', 'publish-transient', '--clients', 'none',
                         '--json', out, module='benchmarks.own_core')
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    env = document['environment']
    [scheduler] = env['broker_scheduler_cpus']
    assert env['client_cpus'] and not set(env['client_cpus']) & set(scheduler)
    assert env['broker'].startswith('RabbitMQ')
    library = next(r for r in document['rows']
                   if r['case'] == 'publish-transient' and r['impl'] == 'library')
    assert library['rate'] > 0 and library['broker_pct'] > 0
    assert not _extra_nodes(), 'the node was stopped'


def test_own_core_refuses_queue_version_before_starting_a_node():
    done = run_benchmark('--queue-version', '2', module='benchmarks.own_core')
    assert done.returncode == 2
    assert '--queue-version' in done.stderr
    assert not _extra_nodes()


def test_cpus_are_all_of_them_where_the_system_cannot_say(benchmark_module,
                                                         monkeypatch):
    main = benchmark_module('__main__')
    assert main._usable_cpus() == sorted(os.sched_getaffinity(0))
    monkeypatch.delattr(os, 'sched_getaffinity')   # as on macOS
    assert main._usable_cpus() == list(range(os.cpu_count()))
    assert main._cpu_ranges([0, 1, 2, 5, 7, 8]) == '0-2,5,7-8'


def test_own_core_on_the_schedulers_only_core_exits_2_and_stops_its_node(tmp_path):
    """Allowed on one CPU only, the process finds the node's scheduler on
    it: nothing is measured, and the node it started is gone."""
    out = tmp_path / 'none.json'
    done = run_benchmark('--cases', 'publish-transient', '--clients', 'none',
                         '--json', out, module='benchmarks.own_core', cpus={0})
    assert done.returncode == 2, done.stderr
    assert 'no core left beside the broker' in done.stderr
    assert not out.exists()
    assert not _extra_nodes()
