# SPDX-License-Identifier: Apache-2.0
"""``python -m benchmarks --queue-version N`` stores every benchmark queue
as classic queue version N for the run, and leaves no policy behind.

The version is read off the broker (``rabbitmqctl eval`` of the queue's
backing-queue status), not off the policy: the test checks what the run
measures. Never looks at speed.
"""

import json
import uuid

import pytest

from conftest import (BROKER_HOST, classic_queue_version,
                      rabbitmqctl, raw_channel, run_benchmark)

pytestmark = pytest.mark.broker


@pytest.fixture
def queue_policy(benchmark_module):
    return benchmark_module('queue_policy')


def _policies():
    return rabbitmqctl('list_policies', '--no-table-headers')


def test_queues_declared_during_the_run_are_stored_as_the_version_asked(queue_policy):
    queue = 'bench-policy-test-{}'.format(uuid.uuid4().hex[:12])
    try:
        with queue_policy.queue_version(2, BROKER_HOST):
            with raw_channel() as channel:   # as raw pika's durable case does
                channel.queue_declare(queue, durable=True)
            assert classic_queue_version(queue) == 2
        assert queue_policy.POLICY not in _policies()
    finally:
        with raw_channel() as channel:
            channel.queue_delete(queue)


def test_the_policy_is_cleared_when_the_run_fails(queue_policy):
    with pytest.raises(KeyError):
        with queue_policy.queue_version(2, BROKER_HOST):
            assert queue_policy.POLICY in _policies()
            raise KeyError('the run failed')
    assert queue_policy.POLICY not in _policies()


def test_a_broker_on_another_machine_is_refused_before_anything_is_set(queue_policy):
    with pytest.raises(queue_policy.QueuePolicyError, match='loopback'):
        with queue_policy.queue_version(2, '192.0.2.1'):
            pytest.fail('the run must not start')


def test_the_run_records_the_version_and_leaves_no_policy(tmp_path, queue_policy):
    out = tmp_path / 'b.json'
    proc = run_benchmark('--clients', 'none', '--cases', 'publish-durable',
                         '--queue-version', 2, '--json', out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'classic queue version 2 for every queue' in proc.stdout
    results = json.loads(out.read_text())
    assert results['environment']['queue_version'] == 2
    assert all(row['error'] is None for row in results['rows']), results['rows']
    assert queue_policy.POLICY not in _policies()


def test_a_run_that_cannot_set_the_policy_exits_2_and_measures_nothing(
        tmp_path, queue_policy):
    out = tmp_path / 'b.json'
    proc = run_benchmark('--clients', 'none', '--cases', 'publish-durable',
                         '--queue-version', 2, '--json', out,
                         PATH=str(tmp_path))   # no rabbitmqctl there
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert '--queue-version needs rabbitmqctl' in proc.stderr
    assert not out.exists()
    assert queue_policy.POLICY not in _policies()


def test_a_policy_that_cannot_be_cleared_is_a_warning_and_the_run_stands(
        tmp_path, monkeypatch, capsys, queue_policy):
    try:
        with monkeypatch.context() as patch:
            with queue_policy.queue_version(2, BROKER_HOST):
                patch.setenv('PATH', str(tmp_path))   # rabbitmqctl goes away
        warning = capsys.readouterr().err
        assert 'rabbitmqctl clear_policy {}'.format(queue_policy.POLICY) \
            in warning
        assert queue_policy.POLICY in _policies()   # what the warning says
    finally:
        rabbitmqctl('clear_policy', queue_policy.POLICY)
