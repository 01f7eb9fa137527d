# SPDX-License-Identifier: Apache-2.0
"""Many RPC calls from one thread: ``RPCProducer.submit`` and ``map``, run
against ``memory`` and ``amqp`` alike (the ``config`` fixture)."""

import concurrent.futures
import os
import socket
import threading

import pytest

import occo.util.communication as comm
from conftest import (JOIN_TIMEOUT, Collector, amqp_config, memory_config, rabbitmqctl,
                      running_consumer)
from test_examples import example, run_example


class Gate:
    """A processor that holds every message until :meth:`open`, and tells
    when it holds one."""

    def __init__(self, passes=()):
        #: Messages that are answered at once.
        self.passes = list(passes)
        self.entered = threading.Event()
        self.released = threading.Event()

    def __call__(self, message):
        if message not in self.passes:
            self.entered.set()
            self.released.wait(JOIN_TIMEOUT)
        return message

    def open(self):
        self.released.set()


def test_map_yields_results_in_order_with_many_calls_in_flight(config):
    cfg = config(rpc_timeout=JOIN_TIMEOUT, prefetch_count=1)
    # Two consumers are each held until both got a message: possible only
    # when at least two calls are in flight at once.
    both_busy = threading.Barrier(2, timeout=JOIN_TIMEOUT)

    def double(n):
        if n < 2:
            both_busy.wait()
        return 2 * n
    with running_consumer(double, **cfg), running_consumer(double, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            assert list(rpc.map(range(300))) == [2 * n for n in range(300)]


def test_map_sends_the_first_calls_before_it_is_iterated(config):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    collector = Collector(result=lambda m: m.upper())
    with running_consumer(collector, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            results = rpc.map(['x', 'y'])
            assert sorted(collector.wait_for(2)) == ['x', 'y']
            assert list(results) == ['X', 'Y']
            assert list(rpc.map([])) == []


def test_submit_returns_before_the_consumer_answers(config):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    gate = Gate()
    with running_consumer(gate, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            future = rpc.submit({'a': 1})
            assert gate.entered.wait(JOIN_TIMEOUT)
            assert not future.done() and future.running()
            gate.open()
            assert future.result(JOIN_TIMEOUT) == {'a': 1}


def test_submit_future_cannot_be_cancelled_once_sent(config):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    gate = Gate()
    with running_consumer(gate, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            future = rpc.submit('kept')
            assert not future.cancel()
            gate.open()
            assert future.result(JOIN_TIMEOUT) == 'kept'
            assert not future.cancelled()


def test_submit_future_raises_the_remote_builtin_application_error(config):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)

    def fail(message):
        raise ValueError('bad value: ' + message)
    with running_consumer(fail, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            future = rpc.submit('x')
            with pytest.raises(ValueError, match='bad value: x'):
                future.result(JOIN_TIMEOUT)
    error = future.exception()
    assert isinstance(error, comm.ApplicationError)
    assert not isinstance(error, comm.CommunicationError)
    assert (error.remote_type, error.remote_message) == ('ValueError', 'bad value: x')


@pytest.mark.parametrize('response, error_class', [
    (comm.Response(404, 'no such node'), comm.CriticalError),
    (comm.Response(503, 'try later'), comm.TransientError),
])
def test_submit_future_raises_the_error_of_a_failure_response(config, response,
                                                              error_class):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    with running_consumer(lambda m: response, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            error = rpc.submit('x').exception(JOIN_TIMEOUT)
    assert type(error) is error_class
    assert (error.http_code, error.reason) == (response.http_code, response.data)


def test_submit_sends_headers(config):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    with running_consumer(lambda m: dict(comm.current_message().headers), **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            assert rpc.submit('x', headers={'tenant': 't1'}).result(
                JOIN_TIMEOUT) == {'tenant': 't1'}
            assert list(rpc.map(['y'], headers={'n': 2})) == [{'n': 2}]


def test_submit_timeout_fails_the_late_call_while_the_others_succeed(config):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    gate = Gate(passes=range(5))
    with running_consumer(gate, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            early = [rpc.submit(n) for n in range(5)]
            late = rpc.submit('late', timeout=0.3)
            # Nobody waits on the late future: its deadline alone fails it.
            expired, callback_threads = threading.Event(), []
            late.add_done_callback(lambda f: (
                callback_threads.append(threading.current_thread().name),
                expired.set()))
            assert expired.wait(JOIN_TIMEOUT)
            assert [f.result(JOIN_TIMEOUT) for f in early] == list(range(5))
            gate.open()
    error = late.exception()
    assert isinstance(error, comm.RPCTimeoutError) and isinstance(error, TimeoutError)
    assert '0.3' in str(error)
    deadline_thread = 'occo-rpc-deadlines-' + rpc._calls._name
    assert callback_threads == [deadline_thread]
    assert deadline_thread not in {t.name for t in threading.enumerate()}


def test_map_timeout_is_per_call(config):
    cfg = config()
    gate = Gate(passes={'a'})
    with running_consumer(gate, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            results = rpc.map(['a', 'late', 'b'], timeout=0.5)
            assert next(results) == 'a'
            with pytest.raises(comm.RPCTimeoutError, match='0.5'):
                next(results)
            assert list(results) == []   # it ended with the failed call
            gate.open()


def test_futures_work_with_wait_and_as_completed(config):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    with running_consumer(lambda m: -m, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            futures = [rpc.submit(n) for n in range(20)]
            done, not_done = concurrent.futures.wait(futures, timeout=JOIN_TIMEOUT)
            assert len(done) == 20 and not not_done
            completed = concurrent.futures.as_completed(
                [rpc.submit(n) for n in range(20)], timeout=JOIN_TIMEOUT)
            assert sorted(f.result() for f in completed) == list(range(-19, 1))


def test_submit_blocks_while_rpc_max_in_flight_calls_are_in_flight(config, monkeypatch):
    cfg = config(rpc_timeout=JOIN_TIMEOUT, rpc_max_in_flight=4)
    gate = Gate()
    with running_consumer(gate, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            assert rpc.rpc_max_in_flight == 4
            first = [rpc.submit(n) for n in range(4)]
            # A hook at the exact point where submit waits for room.
            room = rpc._calls._room
            waiting, real_wait = threading.Event(), room.wait
            monkeypatch.setattr(room, 'wait', lambda *a: (waiting.set(), real_wait(*a))[1])
            returned, done_then, fifth = threading.Event(), [], []

            def submit_fifth():
                fifth.append(rpc.submit(4))
                done_then.extend(f.done() for f in first)
                returned.set()
            thread = threading.Thread(target=submit_fifth)
            thread.start()
            assert waiting.wait(JOIN_TIMEOUT)
            assert not returned.is_set()
            gate.open()
            assert returned.wait(JOIN_TIMEOUT)
            thread.join(JOIN_TIMEOUT)
            assert any(done_then)   # it returned after a call completed
            assert [f.result(JOIN_TIMEOUT) for f in first + fifth] == list(range(5))


def test_close_fails_pending_futures_promptly(config):
    cfg = config(rpc_timeout=60)
    gate = Gate()
    with running_consumer(gate, **cfg):
        rpc = comm.RPCProducer(**cfg)
        with rpc:
            futures = [rpc.submit(n) for n in range(3)]
            assert gate.entered.wait(JOIN_TIMEOUT)
        # JOIN_TIMEOUT is far below the calls' 60 s timeout.
        done, not_done = concurrent.futures.wait(futures, timeout=JOIN_TIMEOUT)
        gate.open()
    assert not not_done
    for future in futures:
        error = future.exception()
        assert type(error) is comm.TransientError and error.http_code == 503
        assert 'closed' in str(error)
    with pytest.raises(comm.ClosedError):
        rpc.submit('after close')


def test_close_wakes_a_submit_waiting_for_room(config, monkeypatch):
    cfg = config(rpc_timeout=60, rpc_max_in_flight=1)
    gate = Gate()
    with running_consumer(gate, **cfg):
        rpc = comm.RPCProducer(**cfg)
        with rpc:
            held = rpc.submit('held')
            room = rpc._calls._room
            waiting, real_wait = threading.Event(), room.wait
            monkeypatch.setattr(room, 'wait', lambda *a: (waiting.set(), real_wait(*a))[1])
            outcome = []

            def submit_second():
                try:
                    outcome.append(rpc.submit('second'))
                except comm.ClosedError as e:
                    outcome.append(e)
            thread = threading.Thread(target=submit_second)
            thread.start()
            assert waiting.wait(JOIN_TIMEOUT)
        thread.join(JOIN_TIMEOUT)
        gate.open()
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], comm.ClosedError)
    assert isinstance(held.exception(JOIN_TIMEOUT), comm.TransientError)


def test_unroutable_routing_key_fails_the_future_with_404(config):
    with comm.RPCProducer(**config(rpc_timeout=JOIN_TIMEOUT)) as rpc:
        future = rpc.submit('lost?', routing_key='no-such-queue-for-futures')
        error = future.exception(JOIN_TIMEOUT)
    assert type(error) is comm.CriticalError and error.http_code == 404


def test_submit_raises_what_push_message_raises_before_sending(config):
    with comm.RPCProducer(**config(max_message_size=100)) as rpc:
        with pytest.raises(TypeError, match='set'):
            rpc.submit({1, 2})
        with pytest.raises(comm.CriticalError, match='max_message_size'):
            rpc.submit('x' * 101)
        with pytest.raises(ValueError, match='timeout'):
            rpc.submit('x', timeout=0)
        with pytest.raises(ValueError, match='timeout'):
            next(rpc.map(['x'], timeout=-1))


def test_map_raises_a_message_that_cannot_be_sent_in_its_place(config):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    collector = Collector(result=lambda m: m)
    with running_consumer(collector, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            results = rpc.map([1, 2, {3}, 4])
            assert [next(results), next(results)] == [1, 2]
            with pytest.raises(TypeError, match='set'):
                next(results)
            assert list(results) == []
            # One consumer takes the queue in order: had 4 been sent, it
            # would have come before the marker.
            assert rpc.push_message('marker') == 'marker'
    assert [m for m, _, _ in collector.messages] == [1, 2, 'marker']


@pytest.mark.parametrize('value', [0, -1, 'many', 1.5])
def test_rpc_max_in_flight_is_validated(config, value):
    with pytest.raises(comm.ConfigurationError, match='rpc_max_in_flight'):
        comm.RPCProducer(**config(rpc_max_in_flight=value))


def test_rpc_max_in_flight_is_64_by_default(config):
    assert comm.RPCProducer(**config()).rpc_max_in_flight == 64


def _broker_connection(local_port):
    """The broker's name (pid) of the connection from ``local_port``."""
    out = rabbitmqctl('list_connections', '--no-table-headers', 'pid',
                      'peer_port')
    for line in out.splitlines():
        pid, _, port = line.partition('\t')
        if port.strip() == str(local_port):
            return pid
    raise AssertionError('no broker connection from port {}'.format(local_port))


def close_from_broker(rpc):
    """Have the broker close ``rpc``'s connection (as an operator would)."""
    with socket.socket(fileno=os.dup(rpc._loop._socket_fd)) as sock:
        local_port = sock.getsockname()[1]
    rabbitmqctl('close_connection', _broker_connection(local_port),
                'closed by test')


@pytest.mark.broker
def test_lost_connection_fails_pending_futures_and_next_submit_reconnects():
    cfg = amqp_config(rpc_timeout=60)
    gate = Gate(passes={'next'})
    with running_consumer(gate, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            futures = [rpc.submit(n) for n in range(3)]
            assert gate.entered.wait(JOIN_TIMEOUT)
            close_from_broker(rpc)
            done, not_done = concurrent.futures.wait(futures, timeout=JOIN_TIMEOUT)
            gate.open()
            assert not not_done
            for future in futures:
                error = future.exception()
                assert type(error) is comm.TransientError
                assert 'may or may not have been processed' in str(error)
            assert rpc.submit('next').result(JOIN_TIMEOUT) == 'next'


def test_rpc_futures_example_prints_results_in_order(tmp_path):
    result = run_example(example('rpc_futures.py'), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        'map: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]',
        'submit(-1): failed: negative: -1',
        'submit(3): 9',
        'submit(4): 16',
    ]


def test_memory_push_message_racing_close_raises_closed_error_not_a_hang(monkeypatch):
    """close() begins after push_message checked that the producer is open
    but before it registered the call (forced: close() runs from inside the
    encoding step). The reply sink is gone by then, so a registered call
    would wait for a reply that never comes."""
    cfg = memory_config(rpc_timeout=JOIN_TIMEOUT)
    rpc = comm.RPCProducer(**cfg)
    rpc.open()
    encode = rpc._encode

    def encode_then_close(message):
        encoded = encode(message)
        rpc.close()
        return encoded
    monkeypatch.setattr(rpc, '_encode', encode_then_close)
    with pytest.raises(comm.ClosedError, match='closed'):
        rpc.push_message('x')
