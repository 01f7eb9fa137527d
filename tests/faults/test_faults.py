# SPDX-License-Identifier: Apache-2.0
"""Real load and real faults: killed connections, a restarted broker.

Every test here runs on the suite's own RabbitMQ node (see conftest.py).
"""

import contextlib
import gc
import logging
import os
import threading
import time
import uuid

import pika
import pytest

import occo.util.communication as comm
from occo.util.communication import pika_internals
from conftest import MB, reconnect_figures
from faults.load import DEADLINE, Recorder, RPCCallers, consumers, paced_load

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def config_for(node, **overrides):
    queue = 'fault-' + uuid.uuid4().hex
    config = dict(protocol='amqp', url=node.url, queue=queue,
                  connection_attempts=40, retry_delay=0.1, confirm_timeout=DEADLINE)
    config.update(overrides)
    return config


@contextlib.contextmanager
def raw_channel(node):
    connection = pika.BlockingConnection(pika.URLParameters(node.url))
    try:
        yield connection.channel()
    finally:
        connection.close()


def test_confirmed_messages_survive_connection_kills_and_restart(node, figures, caplog):
    caplog.set_level(logging.INFO, logger='occo')
    total = 20000
    config = config_for(node)
    recorder = Recorder()
    faults = []

    def inject():
        for _ in range(5):
            time.sleep(0.7)
            node.close_all_connections()
            faults.append('close_all_connections')
        time.sleep(0.7)
        node.restart()
        faults.append('restart')

    started = time.monotonic()
    with consumers(recorder, 2, **config):
        paced_load(config, total, inject)
        assert recorder.wait_for_ids(set(range(total)), DEADLINE)
    elapsed = time.monotonic() - started
    lost = total - len(recorder.counts)
    duplicates = sum(recorder.counts.values()) - len(recorder.counts)
    figures(messages=total, **{'rate/s': total / elapsed},
            faults='{} kills, {} restart'.format(faults.count('close_all_connections'),
                                                 faults.count('restart')),
            lost=lost, duplicates=duplicates,
            **{'longest pause s': recorder.longest_pause()},
            **reconnect_figures(caplog.records))
    assert faults == ['close_all_connections'] * 5 + ['restart']
    assert lost == 0
    assert any('Reconnecting' in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(not pika_internals.FAST, reason='plain pika buffers its own way')
def test_large_bodies_waiting_in_the_send_buffer_survive_a_killed_connection(
        node, monkeypatch, caplog):
    """The connection dies while 1 MB bodies wait in pika's buffer, as
    views into them (the broker is behind): the producer notices, reconnects
    and publishes them again; every message arrives whole, and the ``with``
    block exits without an error.

    The interleaving is forced: once a gathered send leaves a megabyte or
    more waiting, the I/O thread stops right there (turn held, buffer full)
    until the broker has closed the connection."""
    total, payload = 40, 'x' * MB
    config = config_for(node, durable=False)
    waiting, killed = threading.Event(), threading.Event()
    buffered = []   # the buffer's pieces at the moment of the kill
    gathered_produce = pika_internals._gathered_produce

    def produce_then_hold(transport):
        gathered_produce(transport)
        if transport._tx_buffered_byte_count >= MB and not waiting.is_set():
            buffered.extend(transport._tx_buffers)
            waiting.set()
            killed.wait(DEADLINE)
    monkeypatch.setattr(pika_internals, '_gathered_produce', produce_then_hold)

    errors = []

    def publish_all():
        try:
            with comm.AsynchronProducer(**config) as prod:
                for i in range(total):
                    prod.push_message({'id': i, 'payload': payload})
        except BaseException as e:  # asserted below
            errors.append(e)
    producer = threading.Thread(target=publish_all)
    producer.start()
    try:
        assert waiting.wait(DEADLINE), 'no gathered send left a megabyte waiting'
        node.close_all_connections()
    finally:
        killed.set()
        producer.join(DEADLINE)
    assert not producer.is_alive() and not errors, errors
    assert buffered and all(isinstance(piece, memoryview) for piece in buffered)

    recorder, damaged = Recorder(), []

    def check(message):
        if message['payload'] != payload:
            damaged.append(message['id'])
        recorder(message)
    with consumers(check, 1, **config):
        assert recorder.wait_for_ids(set(range(total)), DEADLINE)
    assert not damaged
    assert any('Reconnecting' in r.getMessage() for r in caplog.records)


def test_rpc_calls_from_threads_end_while_connections_die(node, figures):
    timeout = 3.0
    config = config_for(node, rpc_timeout=timeout)
    with consumers(lambda m: m, 1, **config):
        with comm.RPCProducer(**config) as rpc:
            callers = RPCCallers(rpc, timeout)
            for _ in range(4):
                time.sleep(0.8)
                node.close_all_connections()
            time.sleep(0.8)
            callers.stop()
            assert rpc.push_message('after the faults', timeout=10) == 'after the faults'
    figures(messages=len(callers.outcomes), faults='4 kills')
    assert not callers.late, 'calls outlived their timeout: {}'.format(callers.late)
    assert callers.outcomes.count(True) > 0
    assert callers.failures <= {'TransientError', 'RPCTimeoutError'}


def test_rpc_call_fails_promptly_when_its_connection_dies(node):
    config = config_for(node, rpc_timeout=60)
    entered = threading.Event()
    release = threading.Event()

    def slow(message):
        entered.set()
        release.wait(DEADLINE)
        return message
    with consumers(slow, 1, **config):
        with comm.RPCProducer(**config) as rpc:
            killer = threading.Thread(target=lambda: (entered.wait(DEADLINE),
                                                      node.close_all_connections()))
            killer.start()
            started = time.monotonic()
            with pytest.raises(comm.TransientError, match='may or may not'):
                rpc.push_message('doomed')
            assert time.monotonic() - started < 30  # far below rpc_timeout
            killer.join(DEADLINE)
            release.set()
            assert rpc.push_message('next', timeout=30) == 'next'


def test_confirmed_durable_messages_survive_broker_restart(node):
    config = config_for(node)
    with comm.AsynchronProducer(**config) as prod:
        for i in range(1000):
            prod.push_message({'id': i})
    node.restart()
    recorder = Recorder()
    with consumers(recorder, 1, **config):
        assert recorder.wait_for_ids(set(range(1000)), DEADLINE)


def test_producer_reconnects_on_next_call_after_connection_loss(node, caplog):
    config = config_for(node)
    recorder = Recorder()
    with consumers(recorder, 1, **config):
        with comm.AsynchronProducer(**config) as prod:
            prod.push_message({'id': 0})
            prod.flush(DEADLINE)
            node.close_all_connections()
            with prod._state:   # notified when the loop dies: the next push must reconnect
                assert prod._state.wait_for(lambda: not prod._loop.alive, DEADLINE), \
                    'the closed connection went unnoticed'
            prod.push_message({'id': 1})
        assert recorder.wait_for_ids({0, 1}, DEADLINE)
    warnings = [r for r in caplog.records if r.levelname == 'WARNING'
                and 'Reconnecting' in r.getMessage()]
    assert warnings and all('closed' in r.getMessage() or 'CONNECTION_FORCED'
                            in r.getMessage() for r in warnings)


def test_unreachable_broker_after_loss_raises_with_cause(node):
    config = config_for(node, connection_attempts=2, retry_delay=0.1)
    with comm.AsynchronProducer(**config) as prod:
        node.stop()
        try:
            with pytest.raises(comm.CommunicationError, match='refused|not confirmed'):
                prod.push_message({'id': 1})
                prod.flush(10)
        finally:
            node.start()
        prod.close()


def test_bad_inputs_are_dropped_and_consumer_goes_on(node, figures, caplog, tmp_path):
    config = config_for(node, max_message_size=1000, dead_letter_exchange='amq.fanout')
    marker = tmp_path / 'ran'
    bad = [
        (b'{"id": ', 'application/json'),
        ('!!python/object/apply:os.system ["touch {}"]'.format(marker).encode(), None),
        (b'\x89PNG', 'image/png'),
        (b'\xff\xfe\xfa', 'text/plain; charset=utf-8'),
        (b'{"id": "big", "pad": "' + b'x' * 5000 + b'"}', 'application/json'),
    ]
    dead = 'dead-' + uuid.uuid4().hex
    recorder = Recorder()
    with raw_channel(node) as channel:
        channel.queue_declare(dead, auto_delete=True)
        channel.queue_bind(dead, 'amq.fanout')
        channel.queue_declare(config['queue'], durable=True, arguments={
            'x-dead-letter-exchange': 'amq.fanout'})
        with consumers(recorder, 1, **config):
            for n, (body, content_type) in enumerate(bad):
                channel.basic_publish('', config['queue'], body, pika.BasicProperties(
                    content_type=content_type, message_id='bad-{}'.format(n)))
            with comm.AsynchronProducer(**config) as prod:
                prod.push_message({'id': 'good'})
            assert recorder.wait_for_ids({'good'}, DEADLINE)
            deadline = time.monotonic() + DEADLINE
            while _depth(channel, dead) < len(bad) and time.monotonic() < deadline:
                time.sleep(0.05)
        dead_lettered = _depth(channel, dead)
    logged = {r.getMessage().split()[2].strip("'") for r in caplog.records
              if r.getMessage().startswith('Rejected message')}
    figures(**{'bad inputs': len(bad)}, lost=0)
    assert not marker.exists()
    assert logged == {'bad-{}'.format(n) for n in range(len(bad))}
    assert dead_lettered == len(bad)


def test_stray_and_uncorrelated_replies_are_dropped(node, caplog):
    config = config_for(node)

    def bad_server(channel, method, properties, body):
        channel.basic_publish('', properties.reply_to, b'{"code":200,"data":1}',
                              pika.BasicProperties(correlation_id='bogus'))
        channel.basic_publish('', properties.reply_to, b'{"code":200,"data":2}')
        channel.basic_ack(method.delivery_tag)
    with raw_channel(node) as channel:
        channel.queue_declare(config['queue'], durable=True)
        channel.basic_consume(config['queue'], bad_server)
        with comm.RPCProducer(**config) as rpc:
            caller = threading.Thread(target=lambda: pytest.raises(
                comm.RPCTimeoutError, rpc.push_message, 'x', timeout=1))
            caller.start()
            deadline = time.monotonic() + DEADLINE
            while caller.is_alive() and time.monotonic() < deadline:
                channel.connection.process_data_events(time_limit=0.1)
            caller.join(DEADLINE)
    dropped = [r for r in caplog.records if 'unknown correlation id' in r.getMessage()]
    assert len(dropped) == 1   # the second, alike, is coalesced


def test_soak_leaks_no_threads_descriptors_or_memory(node, figures):
    total = int(os.environ.get('OCCO_SOAK_MESSAGES', '200000'))
    config = config_for(node, durable=False)
    # Earlier tests' garbage (a connection in a reference cycle, a pipe)
    # is collected now, so that the soak is not credited with closing it.
    gc.collect()
    threads_before = threading.active_count()
    fds_before = len(os.listdir('/proc/self/fd'))
    rss_before = _rss_mb()
    count = [0]
    done = threading.Event()

    def processor(message):
        count[0] += 1
        if count[0] == total:
            done.set()
    started = time.monotonic()
    with consumers(processor, 1, **config):
        with comm.AsynchronProducer(**config) as prod:
            for i in range(total):
                prod.push_message({'id': i, 'pad': 'x' * 64})
        assert done.wait(DEADLINE * 2)
    elapsed = time.monotonic() - started
    growth = _rss_mb() - rss_before
    figures(messages=total, **{'rate/s': total / elapsed}, faults='none (soak)',
            lost=total - count[0], **{'rss growth MB': growth})
    assert threading.active_count() == threads_before
    assert len(os.listdir('/proc/self/fd')) == fds_before
    assert growth < 20


def _depth(channel, queue):
    return channel.queue_declare(queue, passive=True).method.message_count


def _rss_mb():
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    raise AssertionError('no VmRSS in /proc/self/status')
