# SPDX-License-Identifier: Apache-2.0
"""Behaviour specific to the RabbitMQ backend, against the real broker."""

import _thread
import logging
import socket
import subprocess
import threading
import time

import pika
import pytest
import yaml

import occo.util.communication as comm
from occo.util.communication import codec, pika_internals
from conftest import (BROKER_HOST, BROKER_PORT, JOIN_TIMEOUT, Collector,
                      amqp_config, classic_queue_version, rabbitmqctl,
                      raw_channel, running_consumer)

pytestmark = pytest.mark.broker

SECRET = 'S3cr3t-Pa55word-do-not-log'


def unused_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def queue_depth(queue):
    with raw_channel() as channel:
        ok = channel.queue_declare(queue, passive=True)
        return ok.method.message_count


def test_unreachable_broker_raises_communication_error_quickly():
    config = amqp_config(port=unused_port(), connection_attempts=2,
                         retry_delay=0.1)
    started = time.monotonic()
    with pytest.raises(comm.TransientError, match='connection refused'):
        with comm.AsynchronProducer(**config):
            pass
    assert time.monotonic() - started < JOIN_TIMEOUT


def test_wrong_password_raises_critical_error_naming_user_not_password():
    config = amqp_config(password=SECRET)
    with pytest.raises(comm.CriticalError, match="user 'guest'") as info:
        with comm.RPCProducer(**config):
            pass
    assert info.value.http_code == 403
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)


def test_missing_vhost_raises_critical_error_naming_vhost():
    with pytest.raises(comm.CriticalError, match="vhost '/no-such-vhost'"):
        with comm.EventDrivenConsumer(print, **amqp_config(vhost='/no-such-vhost')):
            pass


def test_password_appears_in_no_log_line_and_no_repr(caplog):
    caplog.set_level(logging.DEBUG)
    config = amqp_config(password=SECRET)
    objects = [comm.AsynchronProducer(**config), comm.RPCProducer(**config),
               comm.EventDrivenConsumer(print, **config)]
    for obj in objects:
        with pytest.raises(comm.CriticalError) as info:
            obj.open()
        assert SECRET not in repr(obj) + str(info.value) + repr(info.value)
    good = amqp_config()
    with comm.AsynchronProducer(**dict(good, password='guest')) as prod:
        prod.push_message('x')
    assert caplog.records, 'expected DEBUG records from pika and occo'
    assert not [r for r in caplog.records if SECRET in r.getMessage()]


def test_queue_is_durable_and_messages_persistent_by_default():
    config = amqp_config(durable=True)
    with comm.AsynchronProducer(**config) as prod:
        prod.push_message({'k': 1})
    with raw_channel() as channel:
        channel.queue_declare(config['queue'], durable=True, passive=True)
        method, properties, body = channel.basic_get(config['queue'], auto_ack=True)
        channel.queue_delete(config['queue'])
    assert properties.delivery_mode == 2
    assert properties.content_type == codec.JSON
    assert codec.decode(body, properties.content_type) == {'k': 1}


def test_only_the_configured_queue_is_declared_once_per_connection(monkeypatch):
    declared = []
    real = pika.channel.Channel.queue_declare

    def spy(self, queue, *args, **kwargs):
        declared.append(queue)
        return real(self, queue, *args, **kwargs)
    monkeypatch.setattr(pika.channel.Channel, 'queue_declare', spy)
    config = amqp_config()
    misspelled = amqp_config()['queue']
    prod = comm.AsynchronProducer(**config)
    with pytest.raises(comm.CriticalError, match='50 message.*NO_ROUTE') as info:
        with prod:
            for i in range(50):
                prod.push_message(i)
                prod.push_message(i, routing_key=misspelled)
    assert info.value.http_code == 404
    assert declared == [config['queue']]
    assert queue_depth(config['queue']) == 50
    with raw_channel() as channel, pytest.raises(pika.exceptions.ChannelClosedByBroker):
        channel.queue_declare(misspelled, passive=True)


def test_unroutable_message_to_exchange_raises_on_flush():
    config = amqp_config(exchange='amq.direct', routing_key='nobody-binds-this')
    with comm.AsynchronProducer(**config) as prod:
        prod.push_message('lost?')
        with pytest.raises(comm.CriticalError, match='NO_ROUTE'):
            prod.flush(timeout=JOIN_TIMEOUT)


@pytest.mark.parametrize('body, content_type', [
    (b'{not json', codec.JSON),
    (b'\xff\xfe', codec.TEXT),
    (b'<xml/>', 'application/xml'),
    (b'a: [unclosed', None),
])
def test_undecodable_message_is_rejected_and_consumer_goes_on(body, content_type, caplog):
    config = amqp_config()
    collector = Collector()
    with running_consumer(collector, **config):
        with raw_channel() as channel:
            channel.basic_publish('', config['queue'], body,
                                  pika.BasicProperties(content_type=content_type,
                                                       message_id='bad-1'))
        with comm.AsynchronProducer(**config) as prod:
            prod.push_message('good')
        assert collector.wait_for(1) == ['good']
    assert queue_depth(config['queue']) == 0, 'the bad message was requeued'
    assert any('bad-1' in r.getMessage() and r.levelname == 'WARNING'
               for r in caplog.records)


def test_unsafe_yaml_message_does_not_run_code(tmp_path):
    marker = tmp_path / 'pwned'
    payload = '!!python/object/apply:os.system ["touch {}"]'.format(marker)
    config = amqp_config()
    collector = Collector()
    with running_consumer(collector, **config):
        with raw_channel() as channel:
            channel.basic_publish('', config['queue'], payload.encode())
        with comm.AsynchronProducer(**config) as prod:
            prod.push_message('after')
        assert collector.wait_for(1) == ['after']
    assert not marker.exists()


def test_yaml_message_of_original_occo_components_is_understood():
    config = amqp_config()
    collector = Collector()
    with running_consumer(collector, **config):
        with raw_channel() as channel:
            channel.basic_publish('', config['queue'],
                                  yaml.safe_dump({'node': 'n1', 'n': 3}).encode())
        assert collector.wait_for(1) == [{'node': 'n1', 'n': 3}]


def test_undecodable_rpc_request_gets_critical_error_reply():
    config = amqp_config()
    with running_consumer(Collector(), **config):
        with raw_channel() as channel:
            replies = []
            channel.basic_consume('amq.rabbitmq.reply-to',
                                  lambda ch, m, p, body: replies.append(body),
                                  auto_ack=True)
            channel.basic_publish('', config['queue'], b'{bad', pika.BasicProperties(
                content_type=codec.JSON, reply_to='amq.rabbitmq.reply-to',
                correlation_id='c1'))
            deadline = time.monotonic() + JOIN_TIMEOUT
            while not replies and time.monotonic() < deadline:
                channel.connection.process_data_events(time_limit=0.1)
    assert len(replies) == 1
    with pytest.raises(comm.CriticalError, match='cannot decode') as info:
        codec.result_from_reply(replies[0])
    assert info.value.http_code == 400


def test_stray_reply_is_dropped_and_logged(caplog):
    config = amqp_config(rpc_timeout=JOIN_TIMEOUT)
    with running_consumer(lambda m: m, **config):
        with comm.RPCProducer(**config) as rpc:
            rpc._on_reply(None, None, pika.BasicProperties(correlation_id='nobody'), b'{}')
            assert rpc.push_message('still works') == 'still works'
    assert any('unknown correlation id' in r.getMessage() for r in caplog.records)


def test_rpc_and_consuming_work_on_plain_pika(monkeypatch):
    # Without the fast path (no epoll, a pika whose internals changed, or
    # OCCO_AMQP_PLAIN_PIKA=1) pika's own loop runs everything on the I/O
    # thread: no turn to take, no socket to borrow.
    monkeypatch.setattr(pika_internals, 'FAST', False)
    config = amqp_config(rpc_timeout=JOIN_TIMEOUT)
    with running_consumer(lambda m: m * 2, **config):
        with comm.RPCProducer(**config) as rpc:
            assert [rpc.push_message(n) for n in range(20)] == list(range(0, 40, 2))
            assert type(rpc._loop.connection) is pika.SelectConnection


def test_routing_key_longer_than_amqp_allows_raises_and_producer_goes_on():
    config = amqp_config()
    collector = Collector()
    with running_consumer(collector, **config):
        with comm.AsynchronProducer(**config) as prod:
            with pytest.raises(comm.ConfigurationError, match='256 bytes'):
                prod.push_message('lost?', routing_key='k' * 256)
            prod.push_message('after')
        assert collector.wait_for(1) == ['after']


def unacknowledged(queue):
    """How many messages of ``queue`` the broker counts as delivered but
    not acknowledged (``rabbitmqctl``: AMQP does not tell)."""
    out = rabbitmqctl('list_queues', '--no-table-headers', 'name',
                      'messages_unacknowledged')
    counts = dict(line.split('\t') for line in out.splitlines() if '\t' in line)
    return int(counts[queue])


def test_a_queue_moved_to_storage_version_2_by_policy_keeps_working():
    """docs/configuration.rst tells operators to choose classic queue
    storage version 2 by policy: the library declares no version, so its
    declarations still match the converted queue, and the conversion
    keeps what the queue held."""
    config = amqp_config(durable=True)
    queue, policy = config['queue'], 'occo-' + config['queue']
    with comm.AsynchronProducer(**config) as prod:
        prod.push_message('before')
    rabbitmqctl('set_policy', policy, '^{}$'.format(queue),
                 '{"queue-version": 2}', '--apply-to', 'queues')
    try:
        deadline = time.monotonic() + JOIN_TIMEOUT
        while classic_queue_version(queue) != 2:
            assert time.monotonic() < deadline, 'the policy was not applied'
        with comm.AsynchronProducer(**config) as prod:   # declares it again
            prod.push_message('after')
        collector = Collector()
        with running_consumer(collector, **config):
            assert collector.wait_for(2) == ['before', 'after']
    finally:
        rabbitmqctl('clear_policy', policy)


def test_processed_message_is_acknowledged_while_the_next_one_runs():
    config = amqp_config(prefetch_count=10)
    slow_started, release = threading.Event(), threading.Event()

    def processor(message):
        if message == 'slow':
            slow_started.set()
            release.wait(JOIN_TIMEOUT)
    with comm.AsynchronProducer(**config) as prod:
        prod.push_message('fast')
        prod.push_message('slow')
    with running_consumer(processor, **config):
        try:
            assert slow_started.wait(JOIN_TIMEOUT)
            deadline = time.monotonic() + JOIN_TIMEOUT
            while unacknowledged(config['queue']) != 1:  # 'fast' is acked
                assert time.monotonic() < deadline, 'fast was not acknowledged'
        finally:
            release.set()


def test_processor_slower_than_heartbeat_keeps_connection(caplog):
    config = amqp_config(heartbeat=1, rpc_timeout=JOIN_TIMEOUT)

    def slow(message):
        if message == 'slow':
            time.sleep(3.5)
        return message
    with running_consumer(slow, **config):
        with comm.RPCProducer(**config) as rpc:
            assert rpc.push_message('slow') == 'slow'
            assert rpc.push_message('fast') == 'fast'
    assert not [r for r in caplog.records if 'Reconnecting' in r.getMessage()]


def io_threads():
    return {t for t in threading.enumerate() if t.name.startswith('occo-amqp-io-')}


def test_close_ends_io_thread_and_connection():
    before = io_threads()
    with comm.RPCProducer(**amqp_config()) as rpc:
        connection = rpc._loop.connection
        (thread,) = io_threads() - before
        # Named after the role and the instance.
        assert thread.name == 'occo-amqp-io-' + rpc._name
        assert thread.name.startswith('occo-amqp-io-rpc-')
    assert connection.is_closed
    assert io_threads() <= before


def test_exit_closes_connection_when_body_raises():
    prod = comm.AsynchronProducer(**amqp_config())
    with pytest.raises(RuntimeError, match='body failed'):
        with prod:
            raise RuntimeError('body failed')
    assert prod._loop.connection.is_closed


def test_ctrl_c_ends_start_consuming_cleanly():
    config = amqp_config()
    consumer = comm.EventDrivenConsumer(Collector(), **config)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    with consumer:
        timer.start()
        consumer.start_consuming()  # returns, does not raise KeyboardInterrupt
    timer.join(JOIN_TIMEOUT)


def test_unprocessed_prefetched_messages_return_to_queue_on_stop():
    config = amqp_config(prefetch_count=50)
    first = threading.Event()
    release = threading.Event()

    def processor(message):
        first.set()
        release.wait(JOIN_TIMEOUT)
    with comm.AsynchronProducer(**config) as prod:
        for i in range(20):
            prod.push_message(i)
    with running_consumer(processor, **config) as consumer:
        assert first.wait(JOIN_TIMEOUT)
        consumer.cancel_event.set()
        release.set()
    assert queue_depth(config['queue']) == 19


SIGTERM_CONSUMER = '''
import sys, time
import occo.util.communication as comm
config = dict(protocol='amqp', host=sys.argv[1], port=int(sys.argv[2]),
              queue=sys.argv[3], durable=False, prefetch_count=10)
def slow(message):
    print('processing', message, flush=True)
    time.sleep(1)
    print('done', message, flush=True)
with comm.EventDrivenConsumer(slow, **config) as consumer:
    consumer.start_consuming()
print('closed cleanly', flush=True)
'''


def test_sigterm_finishes_current_message_and_closes_cleanly():
    import os
    import signal
    import sys
    config = amqp_config()
    with comm.AsynchronProducer(**config) as prod:
        prod.push_message('first')
        prod.push_message('second')
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
    process = subprocess.Popen(
        [sys.executable, '-c', SIGTERM_CONSUMER, BROKER_HOST, str(BROKER_PORT),
         config['queue']], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env)
    try:
        assert process.stdout.readline().strip() == 'processing first'
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=JOIN_TIMEOUT)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert out.split('\n')[:2] == ['done first', 'closed cleanly']
    assert 'Traceback' not in err
    with raw_channel() as channel:
        method, properties, body = channel.basic_get(config['queue'], auto_ack=True)
        assert body == b'second'
        assert channel.basic_get(config['queue'], auto_ack=True)[0] is None
        channel.queue_delete(config['queue'])


def test_queue_existing_with_other_arguments_raises_configuration_error():
    config = amqp_config(durable=True)
    with comm.AsynchronProducer(**config):
        pass
    try:
        with pytest.raises(comm.ConfigurationError, match="x-queue-type|durable"):
            with comm.EventDrivenConsumer(print, **dict(config, queue_type='quorum')):
                pass
    finally:
        with raw_channel() as channel:
            channel.queue_delete(config['queue'])
