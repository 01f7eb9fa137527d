# SPDX-License-Identifier: Apache-2.0
"""TLS and access control, on RabbitMQ nodes of the suite's own."""

import logging
import threading
import uuid

import pytest

import occo.util.communication as comm
from support.rabbitnode import RabbitNode

pytestmark = pytest.mark.broker

SECRET = 'Limited-Secret-77'


@pytest.fixture(scope='module')
def tls_node():
    with RabbitNode(name='occotls', tls=True) as node:
        yield node


def tls_config(node, **overrides):
    queue = 'tls-' + uuid.uuid4().hex
    config = dict(protocol='amqp', host='localhost', port=node.tls_port,
                  ssl=True, ssl_options={'ca_file': node.ca_file},
                  queue=queue, durable=False, rpc_timeout=10)
    config.update(overrides)
    return config


def test_rpc_over_tls_with_verified_certificate(tls_node):
    config = tls_config(tls_node)
    cancel = threading.Event()
    consumer = comm.EventDrivenConsumer(lambda m: m.upper(), cancel_event=cancel,
                                        **config)
    thread = threading.Thread(target=consumer)
    with consumer:
        thread.start()
        try:
            with comm.RPCProducer(**config) as rpc:
                assert rpc.push_message('secure') == 'SECURE'
        finally:
            cancel.set()
            thread.join(10)


def test_amqps_url_with_client_certificate(tls_node):
    url = 'amqps://guest:guest@localhost:{}/'.format(tls_node.tls_port)
    config = dict(protocol='amqp', url=url, queue='tls-' + uuid.uuid4().hex,
                  durable=False, ssl_options={
                      'ca_file': tls_node.ca_file, 'cert_file': tls_node.client_cert,
                      'key_file': tls_node.client_key})
    with comm.AsynchronProducer(**config) as prod:
        prod.push_message('over amqps')
        prod.flush(10)


def test_unverifiable_server_certificate_is_refused(tls_node):
    config = tls_config(tls_node, ssl_options={}, connection_attempts=1)
    with pytest.raises(comm.CommunicationError, match='certificate'):
        with comm.AsynchronProducer(**config):
            pass


def test_verify_false_accepts_any_certificate(tls_node):
    config = tls_config(tls_node, ssl_options={'verify': False})
    with comm.AsynchronProducer(**config) as prod:
        prod.push_message('unverified')


@pytest.fixture(scope='module')
def limited_user(node):
    """A user that may use queues named ``mine-*`` only."""
    node.ctl('add_user', 'limited', SECRET)
    node.ctl('set_permissions', '-p', '/', 'limited', '^(mine-.*|amq\\.default)$',
             '^(mine-.*|amq\\.default)$', '^(mine-.*|amq\\.default)$')
    yield 'limited'
    node.ctl('delete_user', 'limited')


def test_queue_permission_refused_names_user_vhost_and_queue(node, limited_user, caplog):
    caplog.set_level(logging.DEBUG)
    config = dict(protocol='amqp', host='127.0.0.1', port=node.amqp_port,
                  user=limited_user, password=SECRET,
                  queue='theirs-' + uuid.uuid4().hex, connection_attempts=1)
    with pytest.raises(comm.CriticalError) as info:
        with comm.EventDrivenConsumer(print, **config):
            pass
    text = str(info.value)
    assert info.value.http_code == 403
    assert "user 'limited'" in text and "vhost '/'" in text
    assert config['queue'] in text
    assert SECRET not in text + repr(info.value)
    assert not [r for r in caplog.records if SECRET in r.getMessage()]


def test_permitted_queue_works_for_limited_user(node, limited_user):
    config = dict(protocol='amqp', host='127.0.0.1', port=node.amqp_port,
                  user=limited_user, password=SECRET,
                  queue='mine-' + uuid.uuid4().hex)
    with comm.AsynchronProducer(**config) as prod:
        prod.push_message('allowed')
