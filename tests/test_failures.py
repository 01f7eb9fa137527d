# SPDX-License-Identifier: Apache-2.0
"""One test per row of the failure table (:mod:`occo.util.communication.failures`).

Each asserts what the caller gets (type and code), that the library did not
loop (reconnects and log lines counted), and that the next call still works.
Rows that apply to both backends run on both; the others on the real broker.
"""

import contextlib
import json
import logging
import pathlib
import threading
import time
import uuid

import pika
import pytest

import occo.util.communication as comm
from occo.util.communication import failures, mq_producer
from conftest import (BROKER_HOST, BROKER_PORT, JOIN_TIMEOUT, Collector,
                      amqp_config, running_consumer)

broker = pytest.mark.broker


def raw_connection():
    return pika.BlockingConnection(pika.ConnectionParameters(BROKER_HOST, BROKER_PORT))


def count(caplog, text, level=logging.WARNING):
    return sum(1 for r in caplog.records
               if r.levelno >= level and text in r.getMessage())


# -- both backends ------------------------------------------------------------

def test_misspelled_keyword_is_a_type_error(config):
    with comm.AsynchronProducer(**config()) as prod:
        with pytest.raises(TypeError, match='timout'):
            prod.push_message('x', timout=0.5)
    with comm.RPCProducer(**config()) as rpc:
        with pytest.raises(TypeError, match='timout'):
            rpc.push_message('x', timout=0.5)


@pytest.mark.parametrize('timeout', [float('nan'), float('inf'), 1e9, 0, -1])
def test_rpc_timeout_out_of_range_raises_at_construction_and_per_call(config, timeout):
    with pytest.raises(comm.ConfigurationError, match='rpc_timeout'):
        comm.RPCProducer(**config(rpc_timeout=timeout))
    with comm.RPCProducer(**config()) as rpc:
        with pytest.raises(ValueError, match='timeout'):
            rpc.push_message('x', timeout=timeout)


def test_rpc_to_a_routing_key_no_queue_takes_fails_fast_with_404(config):
    cfg = config()
    missing = 'test-missing-' + uuid.uuid4().hex
    with running_consumer(Collector(result='pong'), **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            started = time.monotonic()
            with pytest.raises(comm.CriticalError, match=missing) as info:
                rpc.push_message('ping', routing_key=missing, timeout=JOIN_TIMEOUT)
            assert info.value.http_code == 404
            assert time.monotonic() - started < JOIN_TIMEOUT / 2
            assert rpc.push_message('ping', timeout=JOIN_TIMEOUT) == 'pong'


def test_push_to_a_routing_key_no_queue_takes_raises_404_at_flush(config):
    cfg = config()
    missing = 'test-missing-' + uuid.uuid4().hex
    with comm.AsynchronProducer(**cfg) as prod:
        prod.push_message('lost?', routing_key=missing)
        with pytest.raises(comm.CriticalError, match=missing) as info:
            prod.flush(JOIN_TIMEOUT)
        assert info.value.http_code == 404
        prod.push_message('kept')
        prod.flush(JOIN_TIMEOUT)


def test_lone_surrogate_in_a_remote_error_reaches_the_caller(config):
    def fail(message):
        raise ValueError('bad input ' + message[0])

    cfg = config()
    with running_consumer(fail, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            with pytest.raises(comm.ApplicationError) as info:
                rpc.push_message(['\udcff'], timeout=JOIN_TIMEOUT)
            assert info.value.remote_message == 'bad input \udcff'


def test_closing_an_rpc_producer_fails_a_waiting_call_with_transient_503(config):
    cfg = config()
    started, release = threading.Event(), threading.Event()

    def slow(message):
        started.set()
        release.wait(JOIN_TIMEOUT)
        return 'late'

    errors = []
    with running_consumer(slow, **cfg):
        rpc = comm.RPCProducer(**cfg)
        with rpc:
            def call():
                try:
                    rpc.push_message('x', timeout=JOIN_TIMEOUT)
                except comm.OccoError as e:
                    errors.append(e)
            caller = threading.Thread(target=call)
            caller.start()
            assert started.wait(JOIN_TIMEOUT)
        caller.join(JOIN_TIMEOUT)
        release.set()
    assert not caller.is_alive()
    assert [type(e) for e in errors] == [comm.TransientError]
    assert errors[0].http_code == 503


# -- the real broker ----------------------------------------------------------

@broker
def test_publishing_to_a_missing_exchange_raises_404_once_and_recovers(caplog):
    caplog.set_level(logging.INFO)
    exchange = 'test-exchange-' + uuid.uuid4().hex
    cfg = amqp_config(exchange=exchange)
    prod = comm.AsynchronProducer(**cfg)
    with prod:
        for i in range(10):
            prod.push_message(i)
        with pytest.raises(comm.CriticalError, match="no exchange") as info:
            prod.flush(JOIN_TIMEOUT)
        assert info.value.http_code == 404
        assert 'message(s) not delivered' in str(info.value)
        with raw_connection() as connection:
            channel = connection.channel()
            channel.exchange_declare(exchange, 'fanout', auto_delete=True)
            channel.queue_bind(cfg['queue'], exchange)
            prod.push_message('after')
            prod.flush(JOIN_TIMEOUT)
            method, _, body = channel.basic_get(cfg['queue'], auto_ack=True)
            assert body == b'after'
    assert count(caplog, 'Reconnected', logging.INFO) == 1


@broker
def test_rpc_to_a_missing_exchange_raises_404_at_once_not_a_timeout(caplog):
    caplog.set_level(logging.INFO)
    cfg = amqp_config(exchange='test-exchange-' + uuid.uuid4().hex)
    with comm.RPCProducer(**cfg) as rpc:
        started = time.monotonic()
        calls = 0
        while time.monotonic() - started < 3:
            calls += 1
            with pytest.raises(comm.CriticalError, match='no exchange') as info:
                rpc.push_message('x', timeout=JOIN_TIMEOUT)
            assert info.value.http_code == 404
            assert 'may or may not' not in str(info.value)
    reconnects = count(caplog, 'Reconnected', logging.INFO)
    # Backoff: connections that die at once are reopened ever more slowly.
    assert reconnects == calls - 1 and calls <= 8, (calls, reconnects)
    assert count(caplog, 'Reconnecting to') <= 2


@broker
def test_publishing_to_an_existing_queue_with_other_arguments_works():
    cfg = amqp_config()
    other = 'test-durable-' + uuid.uuid4().hex
    with raw_connection() as connection:
        channel = connection.channel()
        channel.queue_declare(other, durable=True, arguments={'x-max-length': 100})
        try:
            with comm.AsynchronProducer(**cfg) as prod:   # durable=False
                prod.push_message('fits', routing_key=other)
            assert channel.basic_get(other, auto_ack=True)[2] == b'fits'
        finally:
            channel.queue_delete(other)


@broker
def test_nacks_are_retried_a_bounded_number_of_times_then_reported(caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(mq_producer, 'NACK_RETRIES', 3)   # 0.35 s at most, not 11 s
    cfg = amqp_config()
    full = 'test-full-' + uuid.uuid4().hex
    with raw_connection() as connection:
        channel = connection.channel()
        channel.queue_declare(full, arguments={'x-max-length': 1,
                                               'x-overflow': 'reject-publish'})
        try:
            with comm.AsynchronProducer(**cfg) as prod:
                for i in range(5):
                    prod.push_message(i, routing_key=full)
                with pytest.raises(comm.TransientError, match='4 message.*full') as info:
                    prod.flush(JOIN_TIMEOUT)
                assert info.value.http_code == 503
                channel.queue_purge(full)
                prod.push_message('room now', routing_key=full)
                prod.flush(JOIN_TIMEOUT)
            assert channel.basic_get(full, auto_ack=True)[2] == b'room now'
        finally:
            channel.queue_delete(full)
    assert count(caplog, 'Broker refused') <= 2
    assert count(caplog, 'Reconnect', logging.INFO) == 0


@broker
def test_broker_cancel_redeclares_the_queue_and_resumes(caplog):
    caplog.set_level(logging.INFO)
    cfg = amqp_config()
    collector = Collector()
    resumed = threading.Event()

    class Resumed(logging.Handler):
        def emit(self, record):
            if 'cancelled consuming' in record.getMessage():
                resumed.set()
    handler = Resumed()
    logging.getLogger('occo.util.communication.mq').addHandler(handler)
    try:
        with running_consumer(collector, **cfg):
            with raw_connection() as connection:
                connection.channel().queue_delete(cfg['queue'])
            assert resumed.wait(JOIN_TIMEOUT)
            with comm.AsynchronProducer(**cfg) as prod:
                prod.push_message('again')
            assert collector.wait_for(1) == ['again']
    finally:
        logging.getLogger('occo.util.communication.mq').removeHandler(handler)
    assert count(caplog, 'cancelled consuming') == 1


@broker
def test_broker_cancel_of_a_queue_that_cannot_come_back_ends_consuming():
    cfg = amqp_config()
    consumer = comm.EventDrivenConsumer(print, **cfg)
    errors = []
    with consumer:
        def run():
            try:
                consumer.start_consuming()
            except comm.OccoError as e:
                errors.append(e)
        thread = threading.Thread(target=run)
        with raw_connection() as connection:
            channel = connection.channel()
            thread.start()
            wait_for_consumers(channel, cfg['queue'])
            # Keep the consumer's connection from being read until the queue
            # is back with other arguments, before it can declare it again.
            with blocking_the_io(consumer._loop):
                channel.queue_delete(cfg['queue'])
                channel.queue_declare(cfg['queue'], durable=True)
            thread.join(JOIN_TIMEOUT)
            channel.queue_delete(cfg['queue'])
    assert not thread.is_alive()
    assert [type(e) for e in errors] == [comm.CriticalError]
    assert 'cannot consume' in str(errors[0]) and errors[0].http_code == 406


def serve(queue, replies, seen):
    """Answer one request per item of ``replies`` (bodies) with raw pika,
    recording each request's correlation id in ``seen``."""
    with raw_connection() as connection:
        channel = connection.channel()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for body in replies:
            method = None
            while method is None and time.monotonic() < deadline:
                method, properties, _ = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    connection.sleep(0.01)
            if method is None:
                return
            seen.append(properties.correlation_id)
            channel.basic_publish('', properties.reply_to, body, pika.BasicProperties(
                correlation_id=properties.correlation_id))


def serving(queue, replies):
    seen = []
    thread = threading.Thread(target=serve, args=(queue, replies, seen))
    thread.start()
    return thread, seen


FINE = json.dumps({'code': 200, 'data': 'fine'}).encode()


@broker
def test_correlation_ids_are_unguessable():
    cfg = amqp_config()
    with comm.RPCProducer(**cfg) as rpc:
        server, seen = serving(cfg['queue'], [FINE, FINE])
        assert [rpc.push_message(i, timeout=JOIN_TIMEOUT) for i in range(2)] == [
            'fine', 'fine']
        server.join(JOIN_TIMEOUT)
    assert len(set(seen)) == 2
    for cid in seen:   # 128 random bits, not a counter
        assert len(cid) == 32 and int(cid, 16) >= 0


@broker
@pytest.mark.parametrize('reply', [
    b'{"code": 200, "error": 5}', b'{"code": 1e999}', b'[1, 2]', b'\xff',
    b'{"code": "x"}'])
def test_malformed_reply_is_critical_502_and_next_call_works(reply):
    cfg = amqp_config()
    with comm.RPCProducer(**cfg) as rpc:
        server, _ = serving(cfg['queue'], [reply, FINE])
        with pytest.raises(comm.CriticalError, match='malformed RPC reply') as info:
            rpc.push_message('x', timeout=JOIN_TIMEOUT)
        assert info.value.http_code == 502
        assert rpc.push_message('y', timeout=JOIN_TIMEOUT) == 'fine'
        server.join(JOIN_TIMEOUT)


@broker
def test_invalid_utf8_reply_to_is_rejected_once_and_the_consumer_goes_on(caplog):
    cfg = amqp_config()
    collector = Collector()
    with running_consumer(collector, **cfg):
        with raw_connection() as connection:
            connection.channel().basic_publish(
                '', cfg['queue'], b'"poison"', pika.BasicProperties(
                    content_type='application/json', reply_to=b'\xff\xfe'))
        with comm.AsynchronProducer(**cfg) as prod:
            prod.push_message('good')
        assert collector.wait_for(1) == ['good']
    assert count(caplog, 'cannot be answered') == 1
    assert count(caplog, 'Reconnect') == 0


@contextlib.contextmanager
def blocking_the_io(loop):
    """Hold whichever thread runs the loop's pika code inside an operation
    for the ``with`` body: nothing arrives meanwhile."""
    entered, gate = threading.Event(), threading.Event()

    def block(channel):
        entered.set()
        gate.wait(JOIN_TIMEOUT)
    loop.submit(block)
    assert entered.wait(JOIN_TIMEOUT)
    try:
        yield
    finally:
        gate.set()


def wait_for_consumers(channel, queue):
    deadline = time.monotonic() + JOIN_TIMEOUT
    while channel.queue_declare(queue, passive=True).method.consumer_count < 1:
        assert time.monotonic() < deadline, 'the consumer never started'
        threading.Event().wait(0.02)


def test_reliability_page_shows_the_failure_table():
    page = pathlib.Path(__file__).parent.parent / 'docs' / 'reliability.rst'
    assert 'automodule:: occo.util.communication.failures' in page.read_text()
    for row in failures.OUTCOMES:
        assert row.kind in failures.__doc__
