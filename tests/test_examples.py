# SPDX-License-Identifier: Apache-2.0
"""The examples of docs/examples run as the documentation says they do.

Each example runs as its own process (``sys.executable``, from a temporary
directory, with the repository root on ``PYTHONPATH``), as a user would run
it. The broker examples use the queue of ``docs/examples/config.yaml``,
which the ``example_queue`` fixture deletes before and after each test;
the Quickstart's RabbitMQ run uses the queue its page names, which
``quickstart_queue`` deletes likewise.
"""

import contextlib
import doctest
import os
import pathlib
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

import pika
import pytest

from occo.util.config import DefaultYAMLConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, 'docs', 'examples')
#: Seconds an example may take before the test fails instead of hanging.
TIMEOUT = 60
UNKNOWN_KEY_WARNING = ("Ignoring unknown configuration key 'exhange' "
                       "(did you mean 'exchange'?)")


def example_env():
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    paths = [ROOT] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
    env['PYTHONPATH'] = os.pathsep.join(paths)
    return env


def _default_sigint():
    # A child inherits an ignored SIGINT (e.g. from a shell's background
    # job), and Python then never raises KeyboardInterrupt: undo that.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_example(path, *args, cwd):
    """Run an example to its end; return the completed process."""
    return subprocess.run(
        [sys.executable, path, *args], cwd=cwd, env=example_env(),
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=TIMEOUT)


def example(name):
    return os.path.join(EXAMPLES, name)


class Background:
    """An example running in the background, its output read by threads."""

    def __init__(self, path, cwd):
        self.process = subprocess.Popen(
            [sys.executable, path], cwd=cwd, env=example_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
        self.lines = queue.Queue()
        self.stdout = []
        self.stderr = []
        self._readers = [
            threading.Thread(target=self._read, daemon=True,
                             args=(self.process.stdout, self.stdout, True)),
            threading.Thread(target=self._read, daemon=True,
                             args=(self.process.stderr, self.stderr, False)),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, sink, announce):
        for line in stream:
            sink.append(line)
            if announce:
                self.lines.put(line.rstrip('\n'))
        if announce:
            self.lines.put(None)

    def wait_for_line(self, text, timeout=TIMEOUT):
        """Wait until the example prints a line equal to ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0))
            except queue.Empty:
                pytest.fail('no line {!r} within {} s; stdout: {!r}; stderr: '
                            '{!r}'.format(text, timeout, self.stdout,
                                          ''.join(self.stderr)))
            if line is None:
                self.process.wait(TIMEOUT)
                pytest.fail('the example ended (exit {}) before printing {!r};'
                            ' stderr: {}'.format(self.process.returncode, text,
                                                 ''.join(self.stderr)))
            if line == text:
                return

    def interrupt(self):
        """Press Ctrl-C; return the exit code once the example ended."""
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(TIMEOUT)
        for reader in self._readers:
            reader.join(TIMEOUT)
        return code

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)
        for stream in (self.process.stdout, self.process.stderr):
            stream.close()


@contextlib.contextmanager
def background(path, cwd):
    running = Background(path, cwd)
    try:
        yield running
    finally:
        running.kill()


def example_mqconfig():
    with open(example('config.yaml')) as f:
        return DefaultYAMLConfig(f).mqconfig


@contextlib.contextmanager
def broker_channel():
    """A plain pika channel on the broker of the examples' config.yaml."""
    cfg = example_mqconfig()
    connection = pika.BlockingConnection(pika.ConnectionParameters(
        host=cfg['host'], virtual_host=cfg['vhost'],
        credentials=pika.PlainCredentials(cfg['user'], cfg['password'])))
    try:
        yield connection.channel()
    finally:
        connection.close()


@pytest.fixture
def example_queue():
    """The name of the examples' queue, empty before and deleted after."""
    name = example_mqconfig()['queue']
    with broker_channel() as channel:
        channel.queue_delete(name)
    yield name
    with broker_channel() as channel:
        channel.queue_delete(name)


@pytest.fixture
def rpc_server(example_queue, tmp_path):
    """rpc_server.py, running and ready; stopped with Ctrl-C afterwards."""
    with background(example('rpc_server.py'), tmp_path) as server:
        server.wait_for_line('serving; press Ctrl-C to stop')
        yield server
        assert server.interrupt() == 0, ''.join(server.stderr)
    assert server.stdout[-1] == 'stopped\n'


@pytest.mark.broker
def test_producer_example_pushes_the_message(example_queue, tmp_path):
    message = 'hello ' + uuid.uuid4().hex
    result = run_example(example('producer.py'), message, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'sent: {}\n'.format(message)
    with broker_channel() as channel:
        method, properties, body = channel.basic_get(example_queue,
                                                     auto_ack=True)
    assert body == message.encode('utf-8')
    assert properties.content_type == 'text/plain; charset=utf-8'


@pytest.mark.broker
def test_producer_example_runs_without_warnings(example_queue, tmp_path):
    result = run_example(example('producer.py'), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'sent: test message\n'
    assert result.stderr == ''


@pytest.mark.broker
def test_original_config_works_and_warns_about_the_exhange_typo(
        example_queue, tmp_path):
    # producer.py reads config.yaml beside it: give it the original's.
    shutil.copy(example('producer.py'), tmp_path)
    shutil.copy(example('original_config.yaml'), tmp_path / 'config.yaml')
    result = run_example(str(tmp_path / 'producer.py'), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'sent: test message\n'
    assert result.stderr.splitlines() == [UNKNOWN_KEY_WARNING]
    with broker_channel() as channel:
        method, properties, body = channel.basic_get(example_queue,
                                                     auto_ack=True)
    assert body == b'test message'


def test_original_config_differs_from_the_examples_only_by_the_typo():
    def settings(name):
        with open(example(name)) as f:
            return [line for line in f if not line.startswith('#')]
    fixed = [line.replace('exhange', 'exchange')
             for line in settings('original_config.yaml')]
    assert fixed == settings('config.yaml')


@pytest.mark.broker
def test_consumer_example_prints_what_producer_sent_and_stops_on_ctrl_c(
        example_queue, tmp_path):
    message = 'hello ' + uuid.uuid4().hex
    with background(example('consumer.py'), tmp_path) as consumer:
        consumer.wait_for_line('waiting for messages; press Ctrl-C to stop')
        sent = run_example(example('producer.py'), message, cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr
        consumer.wait_for_line('received: ' + message)
        code = consumer.interrupt()
    stderr = ''.join(consumer.stderr)
    assert code == 0, stderr
    assert consumer.stdout[-1] == 'stopped\n'
    assert 'Traceback' not in stderr


@pytest.mark.broker
def test_rpc_producer_example_prints_the_result_of_the_server_example(
        rpc_server, tmp_path):
    result = run_example(example('rpc_producer.py'), 'hello', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'result: HELLO\n'
    assert 'Traceback' not in result.stderr


@pytest.mark.broker
def test_rpc_producer_example_reports_the_server_failure(rpc_server,
                                                         tmp_path):
    result = run_example(example('rpc_producer.py'), '', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'the server failed: ValueError: empty message\n'
    assert 'Traceback' not in result.stderr


@pytest.mark.broker
def test_rpc_producer_example_times_out_without_a_server(example_queue,
                                                         tmp_path):
    started = time.monotonic()
    result = run_example(example('rpc_producer.py'), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "communication failed: no reply from 'test' within 5.0 s (code 504)\n")
    assert time.monotonic() - started < TIMEOUT / 2


@pytest.mark.broker
def test_threaded_consumer_example_ends_by_itself(example_queue, tmp_path):
    result = run_example(example('threaded_consumer.py'), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        'worker-1 received: hello from the main thread',
        'consumer thread ended: True',
    ]
    assert 'Traceback' not in result.stderr


def test_memory_example_runs_without_a_broker(tmp_path):
    # A copy whose config.yaml names a broker that cannot exist.
    shutil.copy(example('memory.py'), tmp_path)
    with open(example('config.yaml')) as f:
        config = f.read()
    assert 'host: 127.0.0.1' in config
    (tmp_path / 'config.yaml').write_text(
        config.replace('host: 127.0.0.1', 'host: broker.invalid\n    port: 1'))
    result = run_example(str(tmp_path / 'memory.py'), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        'consumer got: hello',
        "consumer got: {'add': [1, 2, 3]}",
        'result: 6',
    ]
    assert 'Traceback' not in result.stderr


def test_metadata_example_prints_what_the_processor_saw(tmp_path):
    result = run_example(example('metadata.py'), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r'order 1 for tenant acme, message id memory\.\w+\.1, '
                        r'redelivered: False', lines[0])
    assert lines[1:] == ['order 2 for tenant acme, message id None, redelivered: False',
                         "{'accepted': 2, 'priority': 5}"]


def test_configuration_page_doctests_pass():
    results = doctest.testfile(
        os.path.join(ROOT, 'docs', 'configuration.rst'),
        module_relative=False, optionflags=doctest.ELLIPSIS)
    assert results.attempted > 0
    assert results.failed == 0


# -- the Quickstart ----------------------------------------------------------
QUICKSTART_OUTPUT = [
    'received: hello',
    "received: {'add': [1, 2, 3]}",
    'result: 6',
]


def quickstart_amqp_config_line():
    """The configuration line the Quickstart tells the reader to use for
    RabbitMQ (the local broker, as for the other examples)."""
    page = pathlib.Path(ROOT, 'docs', 'quickstart.rst').read_text()
    lines = re.findall(r"^ +(config = \{'protocol': 'amqp'.*)$", page, re.M)
    assert len(lines) == 1, lines
    return lines[0].strip()


@pytest.fixture
def quickstart_queue():
    """The queue of the Quickstart's RabbitMQ run, absent before and after."""
    name = re.search(r"'queue': '([^']+)'",
                     quickstart_amqp_config_line()).group(1)
    with broker_channel() as channel:
        channel.queue_delete(name)
    yield name
    with broker_channel() as channel:
        channel.queue_delete(name)


def test_quickstart_example_runs_on_the_memory_backend(tmp_path):
    result = run_example(example('quickstart.py'), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == QUICKSTART_OUTPUT
    assert result.stderr == ''


@pytest.mark.broker
def test_quickstart_example_runs_on_rabbitmq_with_the_documented_line(
        quickstart_queue, tmp_path):
    with open(example('quickstart.py')) as f:
        code = f.read()
    memory_line = "config = {'protocol': 'memory', 'queue': 'quickstart'}"
    assert memory_line in code
    script = tmp_path / 'quickstart.py'
    script.write_text(code.replace(memory_line, quickstart_amqp_config_line()))
    result = run_example(str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == QUICKSTART_OUTPUT
    # It logs at INFO level: pika's ~15 lines per connection are quieted.
    assert result.stderr == ''
    with broker_channel() as channel:
        declared = channel.queue_declare(quickstart_queue, passive=True)
    assert declared.method.message_count == 0
