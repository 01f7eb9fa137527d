# SPDX-License-Identifier: Apache-2.0
"""The I/O loop's primitives on their own, and the races of the AMQP core.

Each race test forces its interleaving with events and hooks at the exact
point (no sleeps): a hook blocks one thread where the race happens until
the other thread has done its part.
"""

import logging
import socket
import threading

import pika
import pytest

import occo.util.communication as comm
from occo.util.communication import amqp_loop, mq, pika_internals
from occo.util.communication.amqp_loop import AmqpLoop, LoopState
from occo.util.communication.reply_slot import ReplySlot
from conftest import (BROKER_HOST, BROKER_PORT, JOIN_TIMEOUT, amqp_config, raw_channel,
                      running_consumer)

pytestmark = pytest.mark.broker

fast_only = pytest.mark.skipif(not pika_internals.FAST,
                               reason='the fast path is off (OCCO_AMQP_PLAIN_PIKA)')


def parameters(port=BROKER_PORT):
    return pika.ConnectionParameters(BROKER_HOST, port, connection_attempts=1,
                                     socket_timeout=5, stack_timeout=5)


def ready(channel, done):
    done()


class OpenLoop:
    """An :class:`AmqpLoop` on the test broker for the ``with`` body."""

    def __init__(self, loop_class=AmqpLoop, **kwargs):
        self.losses = []
        self.loop = loop_class(parameters(), 'test broker', ready,
                               on_lost=lambda loop, error: self.losses.append(error),
                               name='test', **kwargs)

    def __enter__(self):
        self.loop.start(JOIN_TIMEOUT)
        return self.loop

    def __exit__(self, *exc):
        self.loop.stop(JOIN_TIMEOUT)


def run_and_wait(loop, submit):
    """Submit an operation that records the thread it ran on; wait for it."""
    ran = []
    done = threading.Event()

    def operation(channel):
        ran.append(threading.current_thread())
        done.set()
    submit(operation)
    assert done.wait(JOIN_TIMEOUT)
    return ran[0]


# -- primitives -----------------------------------------------------------------

def test_loop_moves_through_its_states_and_names_its_thread():
    with OpenLoop() as loop:
        assert loop.state is LoopState.OPEN and loop.alive
        assert loop._thread.name == 'occo-amqp-io-test'
    assert loop.state is LoopState.CLOSED and not loop.alive
    assert not loop._thread.is_alive()


def test_submit_runs_operations_in_order_on_the_io_thread():
    with OpenLoop() as loop:
        order = []
        done = threading.Event()
        for i in range(100):
            loop.submit(lambda channel, i=i: order.append(i))
        loop.submit(lambda channel: done.set())
        assert done.wait(JOIN_TIMEOUT)
        assert order == list(range(100))
        assert run_and_wait(loop, loop.submit) is loop._thread


@fast_only
def test_run_now_runs_the_operation_in_the_calling_thread():
    """When the turn is free. The I/O thread of an idle loop holds it only
    for the moments it runs pika code (after open, on a heartbeat), when
    run_now leaves the operation to it: on a loaded machine one call may
    meet such a moment, fifty in a row cannot."""
    with OpenLoop() as loop:
        threads = {run_and_wait(loop, loop.run_now) for _ in range(50)}
    assert threading.current_thread() in threads


@fast_only
def test_run_now_while_another_thread_holds_the_turn_is_left_to_the_holder():
    with OpenLoop() as loop:
        ran = []
        with loop.holding_turn():
            # The turn is taken: run_now queues and returns at once.
            loop.run_now(lambda channel: ran.append(threading.current_thread()))
            assert ran == []
        # Letting go of the turn runs what was queued meanwhile.
        assert ran == [threading.current_thread()]


@fast_only
def test_drive_lends_the_socket_and_gives_it_back():
    with OpenLoop() as loop:
        epoll = loop._ioloop.poller.shared_epoll
        seen = []

        def done():
            seen.append((epoll.borrowing, epoll.lent))
            return True
        assert loop.drive(done, JOIN_TIMEOUT)
        assert seen[0] == (True, loop._socket_fd)
        assert not epoll.borrowing and epoll.lent is None
        # The I/O thread reads the socket again.
        assert run_and_wait(loop, loop.submit) is loop._thread


@fast_only
def test_stop_while_a_thread_borrows_the_socket_ends_both():
    with OpenLoop() as loop:
        borrowing = threading.Event()
        result = []

        def drive():
            result.append(loop.drive(lambda: borrowing.set() and False, None))
        driver = threading.Thread(target=drive)
        driver.start()
        assert borrowing.wait(JOIN_TIMEOUT)
        loop.stop(JOIN_TIMEOUT)
        driver.join(JOIN_TIMEOUT)
    assert not driver.is_alive() and result == [False]
    assert loop.state is LoopState.CLOSED


def race_to_settle(slot):
    """Two threads settle ``slot`` at the same moment; what each got."""
    barrier = threading.Barrier(2)
    won = []

    def settle(**outcome):
        barrier.wait(JOIN_TIMEOUT)
        won.append(slot.settle(**outcome))
    threads = [threading.Thread(target=settle, kwargs={'body': b'reply'}),
               threading.Thread(target=settle, kwargs={
                   'error': comm.TransientError(503, 'closed')})]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
    return won


def test_reply_slot_is_settled_once_when_two_threads_race():
    for _ in range(200):
        slot = ReplySlot()
        assert sorted(race_to_settle(slot)) == [False, True]
        assert slot.wait(0) and slot.wait(0)
        assert (slot.body is None) != (slot.error is None)


# -- the three races ------------------------------------------------------------

class ClosingLoop(AmqpLoop):
    """Pauses the I/O thread when the connection has closed during stop(),
    after the last drain of the outbox, until the test lets it go on."""

    closed = None
    go_on = None

    def _on_closed(self, connection, reason):
        self.closed.set()
        self.go_on.wait(JOIN_TIMEOUT)
        super()._on_closed(connection, reason)


def test_operation_submitted_while_the_loop_closes_is_refused_not_lost():
    ClosingLoop.closed, ClosingLoop.go_on = threading.Event(), threading.Event()
    opened = OpenLoop(ClosingLoop)
    loop = opened.__enter__()
    stopper = threading.Thread(target=loop.stop, args=(JOIN_TIMEOUT,))
    stopper.start()
    try:
        assert ClosingLoop.closed.wait(JOIN_TIMEOUT)
        with pytest.raises(comm.CommunicationError, match='closed'):
            loop.submit(lambda channel: None)
    finally:
        ClosingLoop.go_on.set()
        stopper.join(JOIN_TIMEOUT)
    assert loop.take_unsent() == []
    with pytest.raises(comm.CommunicationError):
        loop.submit(lambda channel: None)


def unused_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def cut(loop):
    """Break the loop's connection as a network failure would."""
    fd = pika_internals.socket_fd(loop.connection)
    sock = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def test_rpc_failover_does_not_fail_the_new_call_with_a_refused_attempt(
        monkeypatch, caplog):
    # Hosts: a refused one first. After a loss, push_message reconnects; the
    # refused attempt's loop must not fail the call the next host carries.
    caplog.set_level(logging.INFO)
    config = amqp_config(host=['127.0.0.1:{}'.format(unused_port()),
                               '{}:{}'.format(BROKER_HOST, BROKER_PORT)],
                         rpc_timeout=JOIN_TIMEOUT, connect_timeout=3)
    attempts = []
    real_start = AmqpLoop.start

    def start(loop, timeout):
        attempts.append(loop)
        real_start(loop, timeout)
    monkeypatch.setattr(AmqpLoop, 'start', start)
    try:
        with running_consumer(lambda m: m, **config):
            with comm.RPCProducer(**config) as rpc:
                assert rpc.push_message('before') == 'before'
                lost = rpc._loop
                cut(lost)
                lost._thread.join(JOIN_TIMEOUT)   # the I/O thread ends with it
                assert lost.state is LoopState.CLOSED and lost.error is not None
                assert rpc.push_message('after') == 'after'
    finally:
        with raw_channel() as channel:   # a host list: not cleaned up for us
            channel.queue_delete(config['queue'])
    refused = [loop for loop in attempts if loop.opened_at is None]
    assert len(refused) >= 2   # on open and on reconnect
    assert not [r for r in caplog.records if 'unknown correlation id' in r.getMessage()]


class BlockingPops(dict):
    """A ``_waiting`` dict whose pop of ``key`` stops until ``proceed``."""

    def __init__(self, key):
        super().__init__()
        self.key = key
        self.popping = threading.Event()
        self.proceed = threading.Event()

    def pop(self, key, *default):
        if key == self.key:
            self.popping.set()
            self.proceed.wait(JOIN_TIMEOUT)
        return super().pop(key, *default)


def test_close_racing_with_a_reply_settles_the_call_once(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    config = amqp_config(rpc_timeout=JOIN_TIMEOUT)
    outcome = []
    real_register = mq.MQRPCProducer._register
    pops = []
    registered = threading.Event()

    def register(self, correlation_id):
        blocking = BlockingPops(correlation_id)
        blocking.update(self._waiting)
        self._waiting = blocking
        pops.append(blocking)
        registered.set()
        return real_register(self, correlation_id)
    monkeypatch.setattr(mq.MQRPCProducer, '_register', register)
    with running_consumer(lambda m: m, **config):
        rpc = comm.RPCProducer(**config)
        rpc.open()

        def call():
            try:
                outcome.append(rpc.push_message('x'))
            except comm.OccoError as e:
                outcome.append(e)
        caller = threading.Thread(target=call)
        caller.start()
        # The reply arrived and its handler is taking the call's slot.
        assert registered.wait(JOIN_TIMEOUT)
        assert pops[0].popping.wait(JOIN_TIMEOUT)
        closer = threading.Thread(target=rpc.close)
        closer.start()
        pops[0].proceed.set()
        closer.join(JOIN_TIMEOUT)
        caller.join(JOIN_TIMEOUT)
    assert not closer.is_alive() and not caller.is_alive()
    assert len(outcome) == 1 and (outcome == ['x'] or isinstance(
        outcome[0], comm.TransientError)), outcome
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_loop_error_translation_lives_outside_the_loop():
    # diagnose imports the translation without the I/O loop.
    from occo.util.communication import diagnose, failures
    assert diagnose.translate_error is failures.translate_error
    assert not hasattr(amqp_loop, 'translate_error') or \
        amqp_loop.translate_error is failures.translate_error
