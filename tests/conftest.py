# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: broker address, unique queues, running consumers.

Broker tests carry the ``broker`` marker and talk to the RabbitMQ given by
``OCCO_TEST_AMQP_HOST``/``OCCO_TEST_AMQP_PORT`` (default 127.0.0.1:5672,
guest/guest). Where it cannot be reached they are skipped, except in CI
(``CI`` set), where they fail: CI never skips the broker.

Fault and cluster tests record figures with the ``figures`` fixture; the
run prints them as one table at its end (the tables of
``docs/reliability.rst`` and ``docs/cluster.rst``) and writes them as JSON
to ``$OCCO_FAULT_FIGURES`` when that is set.
"""

import contextlib
import importlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import uuid

import pytest

import occo.util.communication as comm

BROKER_HOST = os.environ.get('OCCO_TEST_AMQP_HOST', '127.0.0.1')
BROKER_PORT = int(os.environ.get('OCCO_TEST_AMQP_PORT', '5672'))
#: A generous bound that turns a hang into a failure, never a speed check.
JOIN_TIMEOUT = 10
#: A megabyte, the size of the large messages tests send.
MB = 1024 * 1024


def _broker_reachable():
    try:
        socket.create_connection((BROKER_HOST, BROKER_PORT), timeout=2).close()
        return True
    except OSError:
        return False


def pytest_collection_modifyitems(config, items):
    if not any(item.get_closest_marker('broker') for item in items):
        return
    if _broker_reachable():
        return
    if os.environ.get('CI'):
        raise pytest.UsageError('RabbitMQ is not reachable at {}:{} and CI '
                                'must not skip broker tests'.format(
                                    BROKER_HOST, BROKER_PORT))
    skip = pytest.mark.skip(reason='RabbitMQ not reachable at {}:{}'.format(
        BROKER_HOST, BROKER_PORT))
    for item in items:
        if item.get_closest_marker('broker'):
            item.add_marker(skip)


#: Queues that amqp_config named on the test broker during the current
#: test; :func:`delete_named_queues` deletes them after it.
_NAMED_QUEUES = []


def amqp_config(**overrides):
    """Configuration of the test broker with a fresh queue name."""
    queue = 'test-' + uuid.uuid4().hex
    config = dict(protocol='amqp', host=BROKER_HOST, port=BROKER_PORT,
                  vhost='/', user='guest', password='guest', queue=queue,
                  routing_key=queue, durable=False, connect_timeout=5)
    config.update(overrides)
    if (config['host'], config['port']) == (BROKER_HOST, BROKER_PORT):
        _NAMED_QUEUES.append(queue)
    return config


@pytest.fixture(autouse=True)
def delete_named_queues():
    """Leave the shared broker as the test found it."""
    yield
    queues = list(_NAMED_QUEUES)
    _NAMED_QUEUES.clear()
    if queues:
        _delete_queues(queues)


def memory_config(**overrides):
    queue = 'test-' + uuid.uuid4().hex
    config = dict(protocol='memory', queue=queue, routing_key=queue)
    config.update(overrides)
    return config


@pytest.fixture(params=['memory', pytest.param('amqp', marks=pytest.mark.broker)])
def backend(request):
    """The name of each backend in turn, for the contract tests."""
    return request.param


@pytest.fixture
def config(backend):
    """A fresh configuration (own queue) for the backend under test."""
    def make(**overrides):
        maker = amqp_config if backend == 'amqp' else memory_config
        return maker(**overrides)
    return make


@contextlib.contextmanager
def raw_channel():
    """A plain pika channel on the test broker, for what the API cannot do."""
    import pika
    connection = pika.BlockingConnection(
        pika.ConnectionParameters(BROKER_HOST, BROKER_PORT))
    try:
        yield connection.channel()
    finally:
        connection.close()


#: Erlang for ``rabbitmqctl eval``: each classic queue's storage version,
#: as ``name version`` lines.
_STORAGE_VERSIONS = (
    'io:format("~s", [[io_lib:format("~s ~p~n", [element(4, '
    'amqqueue:get_name(Q)), proplists:get_value(version, '
    'proplists:get_value(backing_queue_status, rabbit_amqqueue:info('
    'Q, [backing_queue_status])))]) || Q <- rabbit_amqqueue:list(), '
    'amqqueue:get_type(Q) =:= rabbit_classic_queue]]).')


def rabbitmqctl(*args):
    """Run ``rabbitmqctl -q ARGS`` on the test broker's node, for what
    AMQP does not tell or do; return its output (a failure raises)."""
    return subprocess.run(('rabbitmqctl', '-q') + args, check=True,
                          capture_output=True, text=True, timeout=60).stdout


def classic_queue_version(queue):
    """The storage version (1 or 2) the test broker keeps ``queue`` in."""
    out = rabbitmqctl('eval', _STORAGE_VERSIONS)
    versions = dict(line.split() for line in out.splitlines() if ' ' in line)
    return int(versions[queue])


#: The checkout: ``benchmarks`` lives here, beside ``tests``, not installed.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def benchmark_module(monkeypatch):
    """Import a module of the ``benchmarks`` package, which lives beside
    ``tests`` and is not installed: ``benchmark_module('broker')``."""
    monkeypatch.syspath_prepend(REPO_ROOT)
    return lambda name: importlib.import_module('benchmarks.' + name)


def run_benchmark(*args, timeout=180, module='benchmarks', cpus=None,
                  **environment):
    """Run ``python -m benchmarks --quick ARGS`` in the checkout against the
    test broker; return the finished process, its output captured.

    ``module`` runs another of the package's commands instead
    (``benchmarks.own_core``); ``cpus`` (a set of CPU numbers) restricts
    the process to those CPUs from its start, as ``taskset -c`` would.
    Other keyword arguments change its environment: ``PATH='/x'`` sets one
    variable, ``CI=None`` leaves one out.
    """
    env = dict(os.environ, OCCO_TEST_AMQP_HOST=BROKER_HOST,
               OCCO_TEST_AMQP_PORT=str(BROKER_PORT))
    for name, value in environment.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        [sys.executable, '-m', module, '--quick'] + [str(a) for a in args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
        preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus))


def _delete_queues(queues):
    import pika
    params = pika.ConnectionParameters(BROKER_HOST, BROKER_PORT)
    with contextlib.closing(pika.BlockingConnection(params)) as connection:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)


@contextlib.contextmanager
def running_consumer(processor, **config):
    """Run an EventDrivenConsumer in a thread for the ``with`` body.

    Yields the consumer; on exit sets its cancel event and checks that the
    thread ended within :data:`JOIN_TIMEOUT` and raised nothing.
    """
    cancel = threading.Event()
    errors = []

    def run():
        try:
            consumer.start_consuming()
        except BaseException as e:  # reported to the test below
            errors.append(e)

    consumer = comm.EventDrivenConsumer(processor, cancel_event=cancel, **config)
    with consumer:
        thread = threading.Thread(target=run, name='test-consumer')
        thread.start()
        try:
            yield consumer
        finally:
            cancel.set()
            thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive(), 'consumer did not stop after cancel_event'
    assert not errors, errors


class Collector:
    """A processor that records messages and lets tests wait for them."""

    def __init__(self, result=None):
        self.messages = []
        self._lock = threading.Condition()
        self.result = result

    def __call__(self, message, *args, **kwargs):
        with self._lock:
            self.messages.append((message, args, kwargs))
            self._lock.notify_all()
        if isinstance(self.result, BaseException):
            raise self.result
        if callable(self.result):
            return self.result(message)
        return self.result

    def wait_for(self, count, timeout=JOIN_TIMEOUT):
        """Wait until ``count`` messages arrived; fail the test otherwise."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.messages) >= count,
                                       timeout):
                pytest.fail('got {} of {} messages'.format(
                    len(self.messages), count))
        return [m for m, _, _ in self.messages]


_FIGURES = []
_COLUMNS = ['scenario', 'messages', 'rate/s', 'faults', 'bad inputs', 'lost',
            'duplicates', 'reconnect p50 s', 'reconnect max s', 'longest pause s',
            'rss growth MB']


@pytest.fixture
def figures(request):
    """Record this test's figures: ``figures(messages=..., faults=...)``."""
    def record(**values):
        row = {'scenario': request.node.name.replace('test_', '', 1)}
        row.update(values)
        _FIGURES.append(row)
    return record


def reconnect_figures(records):
    """``{'reconnect p50 s': ..., 'reconnect max s': ...}`` from log records.

    The library logs ``Reconnected to ... N s after the connection was
    lost`` at INFO for each reconnect.
    """
    seconds = sorted(float(m.group(1)) for m in (
        re.search(r' ([0-9.]+) s after the connection was lost', r.getMessage())
        for r in records) if m)
    if not seconds:
        return {}
    return {'reconnect p50 s': seconds[len(seconds) // 2],
            'reconnect max s': seconds[-1]}


def pytest_terminal_summary(terminalreporter):
    if not _FIGURES:
        return
    rows = [[_cell(row.get(column)) for column in _COLUMNS] for row in _FIGURES]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLUMNS)]
    write = terminalreporter.write_line
    terminalreporter.section('reliability figures')
    write('  '.join(c.ljust(w) for c, w in zip(_COLUMNS, widths)))
    write('  '.join('-' * w for w in widths))
    for row in rows:
        write('  '.join(c.ljust(w) for c, w in zip(row, widths)))
    path = os.environ.get('OCCO_FAULT_FIGURES')
    if path:
        with open(path, 'w') as stream:
            json.dump(_FIGURES, stream, indent=2)


def _cell(value):
    if value is None:
        return '-'
    if isinstance(value, float):
        return '{:.2f}'.format(value)
    if isinstance(value, int):
        return '{:,}'.format(value)
    return str(value)
