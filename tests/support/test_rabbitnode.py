# SPDX-License-Identifier: Apache-2.0
"""The throw-away RabbitMQ nodes of :mod:`rabbitnode` do what tests need."""

import contextlib
import os
import ssl
import time
import uuid

import pika
import pika.exceptions
import pytest

from .rabbitnode import RabbitCluster, RabbitNode, port_open

pytestmark = pytest.mark.broker


def _connect(node, **kwargs):
    params = pika.ConnectionParameters(
        '127.0.0.1', node.amqp_port, connection_attempts=1, socket_timeout=5,
        blocked_connection_timeout=5, **kwargs)
    return pika.BlockingConnection(params)


def test_node_serves_amqp_and_stop_leaves_nothing():
    with RabbitNode() as node:
        with contextlib.closing(_connect(node)) as connection:
            assert connection.is_open
        pid = node.state()['pid']
    assert not node.running
    assert not port_open(node.amqp_port)
    assert not port_open(node.dist_port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_restart_keeps_durable_queue_and_persistent_message():
    queue = 'test-' + uuid.uuid4().hex
    with RabbitNode() as node:
        connection = _connect(node)
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(queue, durable=True)
        channel.basic_publish('', queue, b'survivor', pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent))
        connection.close()
        node.restart()
        connection = _connect(node)
        _, _, body = connection.channel().basic_get(queue, auto_ack=True)
        connection.close()
    assert body == b'survivor'


def test_kill_refuses_connections_until_start():
    with RabbitNode() as node:
        node.kill()
        assert not node.running
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            _connect(node)
        node.start()
        with contextlib.closing(_connect(node)) as connection:
            assert connection.is_open


def test_close_all_connections_closes_live_pika_connection():
    with RabbitNode() as node:
        connection = _connect(node)
        node.close_all_connections('test')
        deadline = time.monotonic() + 10
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
            while time.monotonic() < deadline:
                connection.process_data_events(time_limit=0.2)
        assert not connection.is_open


def _tls_connect(node, context):
    return pika.BlockingConnection(pika.ConnectionParameters(
        'localhost', node.tls_port, connection_attempts=1, socket_timeout=5,
        ssl_options=pika.SSLOptions(context, 'localhost')))


def test_tls_node_accepts_pika_connection_verifying_generated_ca():
    with RabbitNode(tls=True) as node:
        context = ssl.create_default_context(cafile=node.ca_file)
        context.load_cert_chain(node.client_cert, node.client_key)
        with contextlib.closing(_tls_connect(node, context)) as connection:
            assert connection.is_open
        # The check is real: without the generated CA the handshake fails.
        with pytest.raises(ssl.SSLCertVerificationError):
            _tls_connect(node, ssl.create_default_context())


@pytest.mark.slow
def test_cluster_forms_and_killed_node_rejoins():
    with RabbitCluster(3) as cluster:
        names = sorted(node.node for node in cluster.nodes)
        assert cluster.running_nodes() == names
        cluster.kill(2)
        cluster.wait_running(cluster.nodes[:2], timeout=30)
        cluster.start(2)
        assert cluster.running_nodes() == names
        with contextlib.closing(_connect(cluster.nodes[2])) as connection:
            assert connection.is_open
