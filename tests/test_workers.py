# SPDX-License-Identifier: Apache-2.0
"""``max_workers``: messages processed at once, each settled by its worker.

Every interleaving is forced: a :class:`Gates` processor holds each message
until the test opens its gate, a :class:`threading.Barrier` passes only if
its parties run at once. Nothing sleeps to let something happen; every wait
has a timeout. Both backends, except where a test says otherwise.
"""

import contextlib
import logging
import os
import signal
import socket
import threading
import time

import pytest

import occo.util.communication as comm
from occo.util.communication import memory
from conftest import (JOIN_TIMEOUT, Collector, raw_channel, running_consumer)
from test_examples import example, run_example


class Gates:
    """A processor that holds each message until the test opens its gate.

    It records, per message, the worker's thread name and what
    ``current_message()`` returned there, and the order of completion.
    """

    def __init__(self, result=lambda message: message):
        self.result = result
        self.started = {}       # message -> (thread name, MessageInfo)
        self.finished = []      # messages, in the order processors returned
        self._gates = {}
        self._changed = threading.Condition()

    def _gate(self, message):
        return self._gates.setdefault(message, threading.Event())

    def __call__(self, message):
        info = comm.current_message()
        with self._changed:
            self.started[message] = (threading.current_thread().name, info)
            gate = self._gate(message)
            self._changed.notify_all()
        if not gate.wait(JOIN_TIMEOUT):
            raise TimeoutError('gate {!r} never opened'.format(message))
        try:
            return self.result(message)
        finally:
            with self._changed:
                self.finished.append(message)
                self._changed.notify_all()

    def open(self, *messages):
        with self._changed:
            for message in messages:
                self._gate(message).set()

    def open_all(self):
        with self._changed:
            for gate in self._gates.values():
                gate.set()

    def wait_started(self, *messages):
        self._wait(lambda: all(m in self.started for m in messages),
                   'started: {}'.format(sorted(self.started)))

    def wait_finished(self, *messages):
        self._wait(lambda: all(m in self.finished for m in messages),
                   'finished: {}'.format(self.finished))

    def wait_finished_count(self, count):
        self._wait(lambda: len(self.finished) >= count,
                   'finished: {}'.format(self.finished))

    def _wait(self, condition, state):
        with self._changed:
            if not self._changed.wait_for(condition, JOIN_TIMEOUT):
                pytest.fail('timed out; ' + state)


def ready(backend, cfg):
    """Messages waiting in the queue, not delivered to any consumer."""
    if backend == 'amqp':
        with raw_channel() as channel:
            ok = channel.queue_declare(cfg['queue'], passive=True)
            return ok.method.message_count
    return len(memory.current_broker().queue(cfg['queue']))


def wait_until(condition, what):
    """Poll a broker-side count (nothing notifies of it), with a deadline."""
    deadline = time.monotonic() + JOIN_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def push(cfg, *messages, **kwargs):
    with comm.AsynchronProducer(**cfg) as prod:
        for message in messages:
            prod.push_message(message, **kwargs)


def drain(cfg, count):
    """Consume ``count`` messages with a fresh consumer: ``[(message,
    redelivered)]``; then the queue must be empty."""
    got = Collector(result=None)
    seen = []

    def record(message):
        seen.append((message, comm.current_message().redelivered))
        got(message)
    with running_consumer(record, **cfg):
        got.wait_for(count)
    return seen


class Results(dict):
    """``{message: result or exception}`` of RPC calls, as they return."""

    def __init__(self):
        super().__init__()
        self.changed = threading.Condition()

    def wait_for(self, message):
        with self.changed:
            if not self.changed.wait_for(lambda: message in self, JOIN_TIMEOUT):
                pytest.fail('no reply to {!r}'.format(message))
        return self[message]


@contextlib.contextmanager
def rpc_calls(cfg, messages):
    """Call the consumer with each message from a thread of its own; yield
    their :class:`Results`, complete when the block ends."""
    results = Results()

    def call(rpc, message):
        try:
            result = rpc.push_message(message)
        except Exception as e:   # the test looks at it
            result = e
        with results.changed:
            results[message] = result
            results.changed.notify_all()
    with comm.RPCProducer(**cfg) as rpc:
        threads = [threading.Thread(target=call, args=(rpc, m)) for m in messages]
        for thread in threads:
            thread.start()
        try:
            yield results
        finally:
            for thread in threads:
                thread.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads), 'an RPC call did not end'


def reconnects(caplog):
    return [r for r in caplog.records if 'Reconnecting' in r.getMessage()]


# -- running at once, settling in any order ----------------------------------

def test_workers_run_max_workers_messages_at_once(config):
    cfg = config(max_workers=4)
    barrier = threading.Barrier(4, timeout=JOIN_TIMEOUT)
    collector = Collector()

    def processor(message):
        barrier.wait()   # passes only when all four run at once
        collector(message)
    with running_consumer(processor, **cfg):
        push(cfg, *range(4))
        assert sorted(collector.wait_for(4)) == [0, 1, 2, 3]
    assert not barrier.broken


def test_workers_prefetch_is_raised_to_max_workers(config):
    cfg = config(max_workers=3, prefetch_count=1)
    barrier = threading.Barrier(3, timeout=JOIN_TIMEOUT)
    collector = Collector()

    def processor(message):
        barrier.wait()   # with a prefetch of 1 only one would arrive
        collector(message)
    with running_consumer(processor, **cfg):
        push(cfg, 'a', 'b', 'c')
        assert sorted(collector.wait_for(3)) == ['a', 'b', 'c']


def test_workers_are_named_after_the_queue(config):
    cfg = config(max_workers=2)
    gates = Gates()
    with running_consumer(gates, **cfg):
        push(cfg, 'a', 'b')
        gates.wait_started('a', 'b')
        gates.open_all()
    names = {name for name, _ in gates.started.values()}
    prefix = 'occo-worker-' + cfg['queue'] + '-'
    assert names == {prefix + '1', prefix + '2'}


def test_workers_settle_each_message_when_it_finishes_in_any_order(config, backend, caplog):
    cfg = config(max_workers=3, rpc_timeout=JOIN_TIMEOUT)
    gates = Gates(result=lambda m: 'RE: ' + m)
    with running_consumer(gates, **cfg):
        with rpc_calls(cfg, ['a', 'b', 'c']) as results:
            gates.wait_started('a', 'b', 'c')
            for message in ('c', 'a', 'b'):   # the last delivered first
                gates.open(message)
                # The acknowledgement left with the reply, in one write.
                assert results.wait_for(message) == 'RE: ' + message
        # One more round trip: had an acknowledgement covered messages still
        # running ('multiple'), acknowledging those again would have closed
        # the channel, and this call would have needed a reconnect.
        gates.open('z')
        with comm.RPCProducer(**cfg) as rpc:
            assert rpc.push_message('z') == 'RE: z'
    assert gates.finished == ['c', 'a', 'b', 'z']
    # Closed: a message not acknowledged would be back in the queue now.
    assert ready(backend, cfg) == 0
    assert not [i for _, i in gates.started.values() if i.redelivered]
    assert not reconnects(caplog)


def test_workers_rpc_replies_reach_their_callers(config):
    cfg = config(max_workers=4, rpc_timeout=JOIN_TIMEOUT)
    gates = Gates(result=lambda m: 'RE: ' + m)
    messages = ['w', 'x', 'y', 'z']
    with running_consumer(gates, **cfg):
        with rpc_calls(cfg, messages) as results:
            gates.wait_started(*messages)
            for message in reversed(messages):
                gates.open(message)
    assert results == {m: 'RE: ' + m for m in messages}
    assert len({name for name, _ in gates.started.values()}) == 4


def test_current_message_in_each_worker_is_its_own(config):
    cfg = config(max_workers=3)
    barrier = threading.Barrier(3, timeout=JOIN_TIMEOUT)
    collector = Collector()

    def processor(message):
        barrier.wait()   # all three contexts are live at once
        collector((message, comm.current_message().headers['n']))
    with running_consumer(processor, **cfg):
        with comm.AsynchronProducer(**cfg) as prod:
            for n in range(3):
                prod.push_message('m{}'.format(n), headers={'n': n})
        got = collector.wait_for(3)
    assert sorted(got) == [('m0', 0), ('m1', 1), ('m2', 2)]


# -- one worker's failure ------------------------------------------------------

def test_one_workers_exception_fails_only_its_rpc_call(config):
    cfg = config(max_workers=3, rpc_timeout=JOIN_TIMEOUT)
    barrier = threading.Barrier(3, timeout=JOIN_TIMEOUT)

    def processor(message):
        barrier.wait()
        if message == 'bad':
            raise ValueError('cannot do ' + message)
        return message.upper()
    with running_consumer(processor, **cfg):
        with rpc_calls(cfg, ['one', 'bad', 'two']) as results:
            pass
    assert (results['one'], results['two']) == ('ONE', 'TWO')
    error = results['bad']
    assert isinstance(error, comm.ApplicationError)
    assert error.remote_message == 'cannot do bad'


def test_one_workers_exception_rejects_only_its_one_way_message(config, backend):
    cfg = config(max_workers=3)
    barrier = threading.Barrier(3, timeout=JOIN_TIMEOUT)
    collector = Collector()

    def processor(message):
        barrier.wait()
        collector(message)
        if message == 'poison':
            raise RuntimeError('cannot process')
    with running_consumer(processor, **cfg):
        push(cfg, 'a', 'poison', 'b')
        collector.wait_for(3)
        push(cfg, 'c', 'd', 'e')   # the workers go on
        assert sorted(collector.wait_for(6)) == ['a', 'b', 'c', 'd', 'e', 'poison']
    assert ready(backend, cfg) == 0   # rejected, not requeued


# -- stopping ------------------------------------------------------------------

def test_cancel_lets_running_workers_finish_and_requeues_the_rest(config, backend):
    cfg = config(max_workers=2, prefetch_count=5, shutdown_grace=JOIN_TIMEOUT)
    gates = Gates()
    push(cfg, *range(5))
    with running_consumer(gates, **cfg) as consumer:
        gates.wait_started(0, 1)
        wait_until(lambda: ready(backend, cfg) == 0, 'all five delivered')
        consumer.cancel_event.set()
        # The three not started go back at once, while 0 and 1 still run.
        wait_until(lambda: ready(backend, cfg) == 3, 'unstarted requeued')
        assert gates.finished == []
        gates.open(0, 1)
    assert sorted(gates.finished) == [0, 1]   # finished, and acknowledged:
    assert sorted(drain(cfg, 3)) == [(2, True), (3, True), (4, True)]
    assert ready(backend, cfg) == 0


def test_close_from_another_thread_stops_like_cancel(config, backend):
    cfg = config(max_workers=2, prefetch_count=4, shutdown_grace=JOIN_TIMEOUT)
    gates = Gates()
    push(cfg, *range(4))
    consumer = comm.EventDrivenConsumer(gates, **cfg)
    consumer.open()
    thread = threading.Thread(target=consumer.start_consuming)
    thread.start()
    gates.wait_started(0, 1)
    wait_until(lambda: ready(backend, cfg) == 0, 'all four delivered')
    closer = threading.Thread(target=consumer.close)
    closer.start()
    wait_until(lambda: ready(backend, cfg) == 2, 'unstarted requeued')
    gates.open(0, 1)
    closer.join(JOIN_TIMEOUT)
    thread.join(JOIN_TIMEOUT)
    assert not closer.is_alive() and not thread.is_alive()
    assert sorted(gates.finished) == [0, 1]
    assert sorted(drain(cfg, 2)) == [(2, True), (3, True)]


def test_worker_past_the_grace_period_is_logged_and_its_message_redelivered(
        config, backend, caplog):
    cfg = config(max_workers=2, shutdown_grace=0.05)
    gates = Gates()
    push(cfg, 'slow', 'quick')
    with running_consumer(gates, **cfg) as consumer:
        gates.wait_started('slow', 'quick')
        gates.open('quick')
        gates.wait_finished('quick')
        consumer.cancel_event.set()   # start_consuming returns after 0.05 s
    # The consumer is closed; 'slow' still runs, unacknowledged.
    worker = gates.started['slow'][0]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and worker in errors[0] and 'grace period' in errors[0]
    gates.open('slow')
    gates.wait_finished('slow')   # too late: its result is dropped
    assert drain(cfg, 1) == [('slow', True)]
    assert ready(backend, cfg) == 0


def test_a_worker_ending_after_the_grace_period_still_settles_before_close(config, backend):
    """Past the grace period a worker is left running, not abandoned: if
    the consumer is still open when it finishes, its message is settled."""
    cfg = config(max_workers=2, shutdown_grace=0, rpc_timeout=JOIN_TIMEOUT)
    gates = Gates(result=lambda m: 'RE: ' + m)
    consumer = comm.EventDrivenConsumer(gates, **cfg)
    with consumer:
        thread = threading.Thread(target=consumer.start_consuming)
        thread.start()
        with rpc_calls(cfg, ['late']) as results:
            gates.wait_started('late')
            consumer.cancel_event.set()
            thread.join(JOIN_TIMEOUT)
            assert not thread.is_alive()   # returned while 'late' runs
            gates.open('late')
    assert results == {'late': 'RE: late'}
    assert ready(backend, cfg) == 0


def test_sigterm_in_the_main_thread_stops_the_workers_gracefully(config, backend):
    cfg = config(max_workers=2, prefetch_count=4, shutdown_grace=JOIN_TIMEOUT)
    gates = Gates()
    push(cfg, *range(4))
    consumer = comm.EventDrivenConsumer(gates, **cfg)
    failures = []

    def terminate():
        try:
            gates.wait_started(0, 1)
            wait_until(lambda: ready(backend, cfg) == 0, 'all four delivered')
            signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
            wait_until(lambda: ready(backend, cfg) == 2, 'unstarted requeued')
        except BaseException as e:   # reported below, after the consumer stopped
            failures.append(e)
            consumer.cancel_event.set()
        finally:
            gates.open_all()
    previous = signal.getsignal(signal.SIGTERM)
    helper = threading.Thread(target=terminate)
    with consumer:
        helper.start()
        consumer.start_consuming()   # in the main thread, as a component runs it
    helper.join(JOIN_TIMEOUT)
    assert not failures, failures
    assert signal.getsignal(signal.SIGTERM) is previous
    assert sorted(gates.finished) == [0, 1]
    assert sorted(drain(cfg, 2)) == [(2, True), (3, True)]


def test_system_exit_in_a_worker_stops_the_consumer_and_is_raised(config, backend):
    cfg = config(max_workers=2, shutdown_grace=JOIN_TIMEOUT)

    def processor(message):
        if message == 'exit':
            raise SystemExit(3)
    push(cfg, 'exit')
    with comm.EventDrivenConsumer(processor, **cfg) as consumer:
        with pytest.raises(SystemExit):
            consumer.start_consuming()
    assert drain(cfg, 1) == [('exit', True)]   # left unacknowledged


# -- the amqp connection -----------------------------------------------------------

@pytest.mark.broker
def test_heartbeats_go_on_while_every_worker_is_busy(caplog):
    from conftest import amqp_config
    cfg = amqp_config(max_workers=3, heartbeat=1, rpc_timeout=JOIN_TIMEOUT)
    caplog.set_level(logging.INFO, logger='occo.util.communication')
    gates = Gates()
    lost = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record):
            if 'Reconnecting' in record.getMessage():
                lost.set()
    watch = Watch()
    logging.getLogger('occo.util.communication').addHandler(watch)
    try:
        with running_consumer(gates, **cfg) as consumer:
            loop = consumer._loop
            with rpc_calls(cfg, ['a', 'b', 'c']) as results:
                gates.wait_started('a', 'b', 'c')
                # Three and a half heartbeat intervals with every worker busy.
                assert not lost.wait(3.5), 'the connection was lost'
                gates.open_all()
            assert consumer._loop is loop and loop.alive
    finally:
        logging.getLogger('occo.util.communication').removeHandler(watch)
    assert results == {'a': 'a', 'b': 'b', 'c': 'c'}
    assert not reconnects(caplog)


@pytest.mark.broker
def test_lost_connection_fails_running_settles_and_workers_go_on(caplog):
    from conftest import amqp_config
    cfg = amqp_config(max_workers=2)
    gates = Gates()
    push(cfg, 'a', 'b')
    with running_consumer(gates, **cfg) as consumer:
        gates.wait_started('a', 'b')
        first = gates.started.copy()
        gates.started.clear()
        loop = consumer._loop
        with socket.socket(fileno=os.dup(loop._socket_fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)   # the connection dies
        wait_until(lambda: consumer._loop is not loop and consumer._loop.alive,
                   'the consumer did not reconnect')
        gates.open('a', 'b')   # their settles fail; the copies run next
        gates.wait_finished_count(4)
        push(cfg, 'c')
        gates.open('c')
        gates.wait_finished_count(5)
    assert not first['a'][1].redelivered and not first['b'][1].redelivered
    assert gates.started['a'][1].redelivered and gates.started['b'][1].redelivered
    settles = [r for r in caplog.records if 'Cannot settle' in r.getMessage()]
    assert len(settles) == 2
    assert ready('amqp', cfg) == 0


# -- configuration and the example --------------------------------------------------

@pytest.mark.parametrize('key, value', [('max_workers', 0), ('max_workers', 1001),
                                        ('max_workers', 2.5), ('shutdown_grace', -1),
                                        ('shutdown_grace', float('inf'))])
def test_bad_worker_settings_raise_configuration_error_naming_the_key(config, key, value):
    with pytest.raises(comm.ConfigurationError, match=key):
        comm.EventDrivenConsumer(print, **config(**{key: value}))


def test_worker_keys_are_known():
    assert {'max_workers', 'shutdown_grace'} <= comm.comm.KNOWN_KEYS


def test_workers_example_runs(tmp_path):
    result = run_example(example('workers.py'), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == 'processed 8 messages with 4 workers at once'
    assert 'Traceback' not in result.stderr
