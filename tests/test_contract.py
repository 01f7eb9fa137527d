# SPDX-License-Identifier: Apache-2.0
"""The behaviour every backend promises, run against ``memory`` and ``amqp``."""

import threading
import time

import pytest

import occo.util.communication as comm
from conftest import JOIN_TIMEOUT, Collector, running_consumer

MESSAGES = ['text', 'ünïcödé ✓', '', {'a': [1, 2.5, None, True]}, [1, 'x'],
            42, None, b'\x00\xffbytes']


def test_factory_returns_registered_backend(config, backend):
    prod = comm.AsynchronProducer(**config())
    assert isinstance(prod, comm.AsynchronProducer)
    assert type(prod) is comm.backends(comm.AsynchronProducer)[backend]


def test_enter_returns_self_and_close_is_idempotent(config):
    prod = comm.AsynchronProducer(**config())
    with prod as entered:
        assert entered is prod
    prod.close()
    prod.close()


def test_outside_with_the_first_call_connects_and_close_ends_it(config):
    """The original components used the roles without ``with``."""
    cfg = config()
    collector = Collector()
    with running_consumer(collector, **cfg):
        prod = comm.AsynchronProducer(**cfg)
        prod.push_message('x')
        prod.flush()
        assert collector.wait_for(1) == ['x']
        prod.close()
    with pytest.raises(comm.ClosedError, match='closed'):
        prod.push_message('x')
    with pytest.raises(comm.ClosedError, match='closed'):
        prod.open()


def test_a_consumer_run_without_with_closes_when_it_stops(config):
    """As the original tests ran it: ``Thread(target=consumer)``."""
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    cancel = threading.Event()
    consumer = comm.EventDrivenConsumer(lambda m: 'RE: ' + m, cancel_event=cancel, **cfg)
    thread = threading.Thread(target=consumer)
    thread.start()
    rpc = comm.RPCProducer(**cfg)
    try:
        assert rpc.push_message('hello') == 'RE: hello'
    finally:
        rpc.close()
        cancel.set()
        thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive()
    with pytest.raises(comm.ClosedError):
        consumer.start_consuming()


def test_consumer_receives_equal_messages_of_the_same_type(config):
    cfg = config()
    collector = Collector()
    with running_consumer(collector, **cfg):
        with comm.AsynchronProducer(**cfg) as prod:
            for message in MESSAGES:
                prod.push_message(message)
        received = collector.wait_for(len(MESSAGES))
    assert received == MESSAGES
    assert [type(m) for m in received] == [type(m) for m in MESSAGES]


def test_processor_gets_pargs_and_pkwargs(config):
    cfg = config()
    collector = Collector()
    cancel = threading.Event()
    consumer = comm.EventDrivenConsumer(collector, pargs=[1, 2],
                                        pkwargs={'k': 'v'},
                                        cancel_event=cancel, **cfg)
    with consumer:
        thread = threading.Thread(target=consumer)
        thread.start()
        with comm.AsynchronProducer(**cfg) as prod:
            prod.push_message('m')
        collector.wait_for(1)
        cancel.set()
        thread.join(JOIN_TIMEOUT)
    assert collector.messages == [('m', (1, 2), {'k': 'v'})]


def test_push_message_routing_key_overrides_config(config):
    target = config()
    collector = Collector()
    with running_consumer(collector, **target):
        with comm.AsynchronProducer(**config()) as prod:
            prod.push_message('elsewhere', routing_key=target['queue'])
        assert collector.wait_for(1) == ['elsewhere']


def test_push_message_of_unencodable_value_raises_type_error(config):
    with comm.AsynchronProducer(**config()) as prod:
        with pytest.raises(TypeError, match='set'):
            prod.push_message({1, 2})


def test_push_message_larger_than_max_message_size_raises(config):
    with comm.AsynchronProducer(**config(max_message_size=100)) as prod:
        with pytest.raises(comm.CriticalError, match='max_message_size') as info:
            prod.push_message('x' * 101)
    assert info.value.http_code == 413


@pytest.mark.parametrize('message', MESSAGES)
def test_rpc_returns_processor_result(config, message):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    with running_consumer(lambda m: m, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            result = rpc.push_message(message)
    assert result == message and type(result) is type(message)


def test_rpc_processor_exception_raises_application_error(config):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)

    def fail(message):
        raise ValueError('bad value: ' + message)
    with running_consumer(fail, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            with pytest.raises(comm.ApplicationError) as info:
                rpc.push_message('x')
            assert rpc.push_message.__self__ is rpc
    error = info.value
    assert not isinstance(error, comm.CommunicationError)
    assert (error.remote_type, error.remote_message) == ('ValueError', 'bad value: x')
    assert 'in fail' in error.remote_traceback


@pytest.mark.parametrize('response, error_class', [
    (comm.Response(404, 'no such node'), comm.CriticalError),
    (comm.Response(503, 'try later'), comm.TransientError),
    (comm.ExceptionResponse(503, 'cannot reach the cloud'), comm.TransientError),
])
def test_rpc_failure_response_raises_matching_error(config, response, error_class):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    with running_consumer(lambda m: response, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            with pytest.raises(error_class) as info:
                rpc.push_message('x')
    assert info.value.http_code == response.http_code
    assert info.value.reason == response.data


def test_rpc_success_response_returns_its_data(config):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    with running_consumer(lambda m: comm.Response(201, {'made': m}), **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            assert rpc.push_message('n') == {'made': 'n'}


def test_rpc_unencodable_result_raises_application_error(config):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    with running_consumer(lambda m: object(), **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            with pytest.raises(comm.ApplicationError, match='object'):
                rpc.push_message('x')


def test_rpc_without_consumer_raises_timeout_error(config):
    with comm.RPCProducer(**config(rpc_timeout=0.3)) as rpc:
        with pytest.raises(comm.RPCTimeoutError) as info:
            rpc.push_message('anyone?')
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, comm.CommunicationError)


def test_rpc_timeout_argument_overrides_config(config):
    with comm.RPCProducer(**config()) as rpc:
        with pytest.raises(comm.RPCTimeoutError, match='0.2'):
            rpc.push_message('anyone?', timeout=0.2)


def test_rpc_request_expires_when_its_caller_gave_up(config):
    cfg = config()
    with comm.RPCProducer(**cfg) as rpc:
        with pytest.raises(comm.RPCTimeoutError):
            rpc.push_message('stale', timeout=0.2)
    time.sleep(0.3)  # let the request's expiration pass, then start a consumer
    collector = Collector(result='fresh')
    with running_consumer(collector, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            assert rpc.push_message('fresh', timeout=JOIN_TIMEOUT) == 'fresh'
    assert [m for m, _, _ in collector.messages] == ['fresh']


def test_closing_rpc_producer_ends_a_waiting_call(config):
    cfg = config(rpc_timeout=60)
    received, release, outcome = threading.Event(), threading.Event(), []

    def hold(message):
        received.set()   # the caller is waiting for the reply now
        release.wait(JOIN_TIMEOUT)
        return message

    def call(rpc):
        try:
            outcome.append(rpc.push_message('held'))
        except comm.CommunicationError as e:
            outcome.append(e)
    with running_consumer(hold, **cfg):
        rpc = comm.RPCProducer(**cfg)
        with rpc:
            thread = threading.Thread(target=call, args=(rpc,))
            thread.start()
            assert received.wait(JOIN_TIMEOUT)
        thread.join(JOIN_TIMEOUT)   # far below the call's 60 s timeout
        release.set()
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], comm.CommunicationError)
    assert not isinstance(outcome[0], comm.RPCTimeoutError)
    assert 'closed' in str(outcome[0])


def test_rpc_producer_shared_by_threads_gives_each_its_answer(config):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    results, errors = {}, []

    def call(rpc, n):
        try:
            for i in range(20):
                results[(n, i)] = rpc.push_message({'n': n, 'i': i})
        except Exception as e:
            errors.append(e)
    with running_consumer(lambda m: [m['n'], m['i'] * 2], **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            threads = [threading.Thread(target=call, args=(rpc, n))
                       for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(JOIN_TIMEOUT)
    assert not errors
    assert results == {(n, i): [n, i * 2] for n in range(8) for i in range(20)}


def test_consumer_goes_on_after_processor_exception(config):
    cfg = config()

    def processor(message):
        if message == 'poison':
            raise RuntimeError('cannot process')
        collector(message)
    collector = Collector()
    with running_consumer(processor, **cfg):
        with comm.AsynchronProducer(**cfg) as prod:
            for message in ['a', 'poison', 'b']:
                prod.push_message(message)
        assert collector.wait_for(2) == ['a', 'b']


def test_competing_consumers_process_each_message_once(config):
    cfg = config(prefetch_count=1)
    first, second = Collector(), Collector()
    with running_consumer(first, **cfg), running_consumer(second, **cfg):
        with comm.AsynchronProducer(**cfg) as prod:
            for i in range(200):
                prod.push_message(i)
        deadline = time.monotonic() + JOIN_TIMEOUT
        while len(first.messages) + len(second.messages) < 200:
            assert time.monotonic() < deadline, 'messages did not all arrive'
            time.sleep(0.01)
    seen = [m for m, _, _ in first.messages + second.messages]
    assert sorted(seen) == list(range(200))


def test_cancel_event_stops_consumer_within_one_second(config):
    cfg = config()
    cancel = threading.Event()
    collector = Collector()
    consumer = comm.EventDrivenConsumer(collector, cancel_event=cancel, **cfg)
    with consumer:
        thread = threading.Thread(target=consumer)
        thread.start()
        with comm.AsynchronProducer(**cfg) as prod:
            prod.push_message('wake')
        collector.wait_for(1)   # it consumes, and has nothing left but to wait
        cancel.set()
        thread.join(1.0)
        stopped = not thread.is_alive()
        thread.join(JOIN_TIMEOUT)
    assert stopped, 'start_consuming did not return within 1 s of cancel'


def test_unknown_key_is_logged_once_with_a_suggestion(config, caplog):
    caplog.set_level('WARNING', logger='occo.util.communication')
    comm.comm._warned_keys.discard('exhange')
    comm.AsynchronProducer(exhange='', **config())
    comm.AsynchronProducer(exhange='', **config())
    warnings = [r.getMessage() for r in caplog.records if 'exhange' in r.getMessage()]
    assert warnings == ["Ignoring unknown configuration key 'exhange' (did you "
                        "mean 'exchange'?)"]


@pytest.mark.parametrize('key, value', [('port', 'many'), ('durable', 'yes'),
                                        ('rpc_timeout', -1), ('queue', 5)])
def test_bad_config_value_raises_configuration_error_naming_key(config, key, value):
    with pytest.raises(comm.ConfigurationError, match=key):
        comm.RPCProducer(**config(**{key: value}))


def test_push_message_without_any_routing_key_raises_configuration_error(config):
    cfg = config()
    del cfg['queue'], cfg['routing_key']
    with comm.AsynchronProducer(**cfg) as prod:
        with pytest.raises(comm.ConfigurationError, match='routing_key'):
            prod.push_message('nowhere')
    with comm.RPCProducer(**cfg) as rpc:
        with pytest.raises(comm.ConfigurationError, match='routing_key'):
            rpc.push_message('nowhere', timeout=1)


def test_consumer_cancelled_before_it_starts_stops_and_can_start_again(config):
    cfg = config()
    cancel = threading.Event()
    cancel.set()
    collector = Collector()
    consumer = comm.EventDrivenConsumer(collector, cancel_event=cancel, **cfg)
    with consumer:
        consumer.start_consuming()  # returns at once
        cancel.clear()
        thread = threading.Thread(target=consumer)
        thread.start()
        with comm.AsynchronProducer(**cfg) as prod:
            prod.push_message('second run')
        assert collector.wait_for(1) == ['second run']
        cancel.set()
        thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive()
