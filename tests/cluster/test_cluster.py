# SPDX-License-Identifier: Apache-2.0
"""A 3-node RabbitMQ cluster on loopback: quorum queues and node failures.

The cluster is started by the module fixture (own node names, ports and
data directories, see ``tests/support/rabbitnode.py``) and always stopped.
Clients get all three nodes as a host list and move to another node when
theirs dies.
"""

import logging
import time
import uuid

import pytest

import occo.util.communication as comm
from conftest import reconnect_figures
from faults.load import DEADLINE, Recorder, RPCCallers, consumers, paced_load
from support.rabbitnode import RabbitCluster

pytestmark = [pytest.mark.broker, pytest.mark.slow]

@pytest.fixture(scope='module')
def cluster():
    with RabbitCluster(nodes=3, name='occoclu') as started:
        yield started


def cluster_config(cluster, **overrides):
    config = dict(protocol='amqp', url=cluster.urls, queue='quorum-' + uuid.uuid4().hex,
                  queue_type='quorum', connection_attempts=60, retry_delay=0.1,
                  confirm_timeout=DEADLINE, connect_timeout=5)
    config.update(overrides)
    return config


def leader_of(cluster, queue):
    """The index of the node that leads ``queue``."""
    for node in cluster.nodes:
        if not node.running:
            continue
        for line in node.ctl('list_queues', '-q', 'name', 'leader').splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[0] == queue:
                return [n.node for n in cluster.nodes].index(fields[1])
    raise AssertionError('no leader found for ' + queue)


def test_quorum_queue_keeps_every_confirmed_message_through_node_kills(cluster, figures, caplog):
    caplog.set_level(logging.INFO, logger='occo')
    total = 20000
    config = cluster_config(cluster)
    recorder = Recorder()
    kills = []

    def inject():
        time.sleep(1)
        cluster.kill(0)          # every client starts on node 0
        kills.append('node 0 (clients)')
        time.sleep(2)
        cluster.start(0)
        leader = leader_of(cluster, config['queue'])
        cluster.kill(leader)
        kills.append('node {} (leader)'.format(leader))
        time.sleep(2)
        cluster.start(leader)

    started = time.monotonic()
    with consumers(recorder, 2, **config):
        paced_load(config, total, inject)
        assert recorder.wait_for_ids(set(range(total)), DEADLINE)
    elapsed = time.monotonic() - started
    lost = total - len(recorder.counts)
    figures(messages=total, **{'rate/s': total / elapsed}, faults=', '.join(kills),
            lost=lost, duplicates=sum(recorder.counts.values()) - len(recorder.counts),
            **{'longest pause s': recorder.longest_pause()},
            **reconnect_figures(caplog.records))
    assert len(kills) == 2 and lost == 0


def test_rpc_calls_end_through_a_node_kill(cluster):
    timeout = 5.0
    config = cluster_config(cluster, rpc_timeout=timeout)
    with consumers(lambda m: m, 1, **config):
        with comm.RPCProducer(**config) as rpc:
            callers = RPCCallers(rpc, timeout, grace=5)
            time.sleep(1)
            cluster.kill(0)
            time.sleep(3)
            callers.stop()
            assert rpc.push_message('after', timeout=30) == 'after'
    cluster.start(0)
    assert not callers.late
    assert callers.failures <= {'TransientError', 'RPCTimeoutError'}


def test_publishing_without_a_majority_fails_then_resumes(cluster):
    config = cluster_config(cluster)
    with comm.AsynchronProducer(**config) as prod:
        prod.push_message({'id': 0})
        prod.flush(30)
        cluster.kill(1)
        cluster.kill(2)
        try:
            prod.push_message({'id': 1})
            with pytest.raises(comm.TransientError, match='not confirmed'):
                prod.flush(5)
        finally:
            cluster.start(1)
            cluster.start(2)
        prod.flush(60)  # the same message is confirmed once a majority is back
    recorder = Recorder()
    with consumers(recorder, 1, **config):
        assert recorder.wait_for_ids({0, 1}, DEADLINE)
