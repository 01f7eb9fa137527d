# SPDX-License-Identifier: Apache-2.0
"""occo.util.communication.testing: the pytest plugin and its helpers, and
memory.isolated_broker beneath them.

The fixture is checked as a user gets it: through the ``pytest11`` entry
point of the installed package, in pytester's in-process runs (isolation
between tests, the global restored after) and in a subprocess that runs
``docs/examples/test_processor_example.py`` from a directory of its own.
"""

import logging
import os
import shutil
import subprocess
import sys
import threading

import pytest

import occo.util.communication as comm
from occo.util.communication import memory, testing
from occo.util.communication.testing import Collector, running_consumer
from occo.util.exceptions import TransientError

pytest_plugins = ['pytester']

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, 'docs', 'examples', 'test_processor_example.py')
#: A generous bound that turns a hang into a failure, never a speed check.
TIMEOUT = 10
#: Seconds of a wait that is meant to run out.
SHORT = 0.05


def double(message):
    return message * 2


# -- memory.isolated_broker --------------------------------------------------

def test_isolated_broker_installs_a_fresh_broker_and_restores_the_previous():
    before = memory.current_broker()
    before.queue('left-outside')
    with memory.isolated_broker() as broker:
        assert memory.current_broker() is broker is memory.default_broker
        assert broker is not before
        assert len(broker.queue('left-outside')) == 0
    assert memory.current_broker() is before


def test_isolated_broker_installs_the_broker_given():
    given = memory.MemoryBroker()
    with memory.isolated_broker(given) as broker:
        assert broker is given is memory.current_broker()


def test_isolated_broker_restores_the_previous_broker_when_the_body_raises():
    before = memory.current_broker()
    with pytest.raises(ValueError, match='body'):
        with memory.isolated_broker():
            raise ValueError('body')
    assert memory.current_broker() is before


def test_isolated_broker_nests_in_one_thread():
    before = memory.current_broker()
    with memory.isolated_broker() as outer:
        with memory.isolated_broker() as inner:
            assert memory.current_broker() is inner is not outer
        assert memory.current_broker() is outer
    assert memory.current_broker() is before


def test_isolated_broker_refuses_another_thread_until_the_owner_leaves():
    outcomes = {}

    def isolate(key):
        try:
            with memory.isolated_broker():
                outcomes[key] = 'isolated'
        except RuntimeError as e:
            outcomes[key] = e

    with memory.isolated_broker():
        thread = threading.Thread(target=isolate, args=('during',))
        thread.start()
        thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert isinstance(outcomes['during'], RuntimeError)
    assert 'MainThread' in str(outcomes['during'])
    thread = threading.Thread(target=isolate, args=('after',))
    thread.start()
    thread.join(TIMEOUT)
    assert outcomes['after'] == 'isolated'


def test_object_keeps_the_broker_it_was_constructed_with():
    outer = memory.current_broker()
    queue = 'kept-' + os.urandom(8).hex()
    before = comm.AsynchronProducer(protocol='memory', queue=queue)
    with memory.isolated_broker() as isolated:
        inside = comm.AsynchronProducer(protocol='memory', queue=queue)
        with before:
            before.push_message('made before')
    with inside:
        inside.push_message('made inside')
    assert outer.queue(queue).get(0).body == b'made before'
    assert isolated.queue(queue).get(0).body == b'made inside'
    assert len(outer.queue(queue)) == len(isolated.queue(queue)) == 0


# -- the fixture ---------------------------------------------------------------

def test_plugin_is_registered_through_its_entry_point(pytestconfig):
    plugin = pytestconfig.pluginmanager.get_plugin('occo_communication')
    assert plugin is testing


def test_memory_broker_fixture_is_not_autouse(request):
    assert 'memory_broker' not in request.fixturenames


def test_memory_broker_fixture_is_the_process_wide_broker(memory_broker):
    assert memory.current_broker() is memory_broker
    assert isinstance(memory_broker, memory.MemoryBroker)


def test_memory_broker_fixture_serves_rpc(memory_broker):
    config = dict(protocol='memory', queue='calls', rpc_timeout=TIMEOUT)
    with running_consumer(double, **config):
        with comm.RPCProducer(**config) as rpc:
            assert rpc.push_message(21) == 42


def test_memory_broker_fixture_serves_one_way_messages(memory_broker):
    collector = Collector()
    config = dict(protocol='memory', queue='events')
    with running_consumer(collector, pargs=['p'], pkwargs={'k': 1}, **config):
        with comm.AsynchronProducer(**config) as producer:
            producer.push_message('one')
            producer.push_message({'two': 2})
        assert collector.wait_for(2) == ['one', {'two': 2}]
    assert collector.calls == [('one', ('p',), {'k': 1}),
                               ({'two': 2}, ('p',), {'k': 1})]


# Two tests of one session: the first leaves a message and a consumer-less
# queue behind; the second must see neither, nor the first test's broker.
ISOLATION_TESTS = '''
import pytest

import occo.util.communication as comm
from occo.util.communication import memory

BROKERS = []

def test_first_leaves_a_message(memory_broker):
    BROKERS.append(memory_broker)
    with comm.AsynchronProducer(protocol='memory', queue='shared') as p:
        p.push_message('left behind')
    assert len(memory_broker.queue('shared')) == 1

def test_second_sees_nothing_of_the_first(memory_broker):
    assert memory_broker is not BROKERS[0]
    assert memory.current_broker() is memory_broker
    with comm.AsynchronProducer(protocol='memory', queue='other') as p:
        # no queue 'shared' here: the message cannot be routed
        p.push_message('to nowhere', routing_key='shared')
        with pytest.raises(comm.CriticalError, match='NO_ROUTE'):
            p.flush()
    assert len(memory_broker.queue('shared')) == 0
'''


def test_memory_broker_fixture_isolates_tests_and_restores_the_global(
        pytester):
    before = memory.current_broker()
    pytester.makepyfile(test_isolation=ISOLATION_TESTS)
    result = pytester.runpytest('-p', 'no:cacheprovider')
    result.assert_outcomes(passed=2)
    assert memory.current_broker() is before


def test_memory_broker_fixture_restores_the_global_after_a_failing_test(
        pytester):
    before = memory.current_broker()
    pytester.makepyfile(test_failing='''
        def test_fails(memory_broker):
            raise ValueError('the test failed')
    ''')
    result = pytester.runpytest('-p', 'no:cacheprovider')
    result.assert_outcomes(failed=1)
    assert memory.current_broker() is before


def _user_pytest(cwd, *args):
    """``python -m pytest`` as a user runs it, with the installed plugins."""
    env = dict(os.environ)
    env.pop('PYTEST_DISABLE_PLUGIN_AUTOLOAD', None)
    env.pop('PYTEST_ADDOPTS', None)
    return subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *args],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=60)


def test_processor_example_passes_as_a_users_test_file(tmp_path):
    shutil.copy(EXAMPLE, tmp_path)
    result = _user_pytest(tmp_path, 'test_processor_example.py')
    assert result.returncode == 0, result.stdout + result.stderr
    assert '5 passed' in result.stdout


def test_processor_example_needs_the_entry_point_plugin(tmp_path):
    shutil.copy(EXAMPLE, tmp_path)
    result = _user_pytest(tmp_path, '-p', 'no:occo_communication',
                          'test_processor_example.py')
    assert result.returncode == 1
    assert "fixture 'memory_broker' not found" in result.stdout


# -- running_consumer ----------------------------------------------------------

def test_running_consumer_raises_timeout_error_when_the_thread_does_not_end(
        memory_broker):
    entered = threading.Event()
    release = threading.Event()

    def blocking(message):
        entered.set()
        release.wait(TIMEOUT)

    config = dict(protocol='memory', queue='stuck')
    try:
        with pytest.raises(TimeoutError, match='did not end within'):
            with running_consumer(blocking, timeout=SHORT, **config):
                with comm.AsynchronProducer(**config) as producer:
                    producer.push_message('block')
                assert entered.wait(TIMEOUT)
    finally:
        release.set()
    stuck = [t for t in threading.enumerate()
             if t.name.startswith('occo-test-consumer-')]
    for thread in stuck:
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def test_running_consumer_raises_what_start_consuming_raised(
        memory_broker, monkeypatch):
    def fail(self):
        raise TransientError(503, 'connection lost')

    monkeypatch.setattr(memory.MemoryEventDrivenConsumer, 'start_consuming', fail)
    with pytest.raises(TransientError, match='connection lost'):
        with running_consumer(double, protocol='memory', queue='q'):
            pass


def test_running_consumer_lets_the_body_exception_through_and_logs_its_own(
        memory_broker, monkeypatch, caplog):
    def fail(self):
        raise TransientError(503, 'connection lost')

    monkeypatch.setattr(memory.MemoryEventDrivenConsumer, 'start_consuming', fail)
    with caplog.at_level(logging.ERROR, logger=testing.__name__):
        with pytest.raises(ValueError, match='the body'):
            with running_consumer(double, protocol='memory', queue='q'):
                raise ValueError('the body')
    [record] = caplog.records
    assert record.getMessage().startswith('The consumer thread occo-test-consumer-')
    assert isinstance(record.exc_info[1], TransientError)


def test_running_consumer_stops_the_consumer_and_closes_it(memory_broker):
    with running_consumer(double, protocol='memory', queue='q') as consumer:
        assert consumer.cancel_event.is_set() is False
    assert consumer.cancel_event.is_set()
    with pytest.raises(comm.ClosedError):
        consumer.open()


# -- Collector -------------------------------------------------------------------

def test_collector_returns_what_the_wrapped_processor_returned():
    collector = Collector(double)
    assert collector(4) == 8
    assert collector.messages == [4]


def test_collector_records_a_call_whose_processor_raised():
    def fails(message, *args, **kwargs):
        raise KeyError(message)

    collector = Collector(fails)
    with pytest.raises(KeyError):
        collector('x', 1, k=2)
    assert collector.calls == [testing.Call('x', (1,), {'k': 2})]


def test_collector_records_after_the_processor_finished():
    seen = []
    collector = Collector(lambda message: seen.append(list(collector.messages)))
    collector('first')
    assert seen == [[]]
    assert collector.wait_for(1, timeout=SHORT) == ['first']


def test_collector_wait_for_raises_timeout_error_saying_how_many_came():
    collector = Collector()
    collector('only one')
    with pytest.raises(TimeoutError, match='handled 1 of 2 messages'):
        collector.wait_for(2, timeout=SHORT)


# -- no pytest at run time -------------------------------------------------------

def test_importing_the_package_does_not_import_pytest_or_testing():
    code = ('import sys, occo.util.communication\n'
            'print(sorted(m for m in ("pytest", "occo.util.communication.testing")'
            ' if m in sys.modules))')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == '[]\n'


def test_helpers_work_without_pytest():
    code = '''
import sys
sys.modules['pytest'] = None            # importing pytest fails
from occo.util.communication import RPCProducer, memory, testing
assert not hasattr(testing, 'memory_broker')
collector = testing.Collector(lambda m: m + 1)
with memory.isolated_broker():
    config = dict(protocol='memory', queue='q', rpc_timeout=10)
    with testing.running_consumer(collector, **config):
        with RPCProducer(**config) as rpc:
            print(rpc.push_message(1), collector.wait_for(1))
'''
    result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == '2 [1]\n'
