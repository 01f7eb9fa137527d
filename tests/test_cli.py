# SPDX-License-Identifier: Apache-2.0
"""The ``occo-comm`` command line, driven as a user drives it.

Every test runs ``python -m occo.util.communication`` in a subprocess, with
a timeout; where a component is the other side, the test talks to the
command through the library. Tests marked ``broker`` talk to the RabbitMQ
of ``conftest`` on queues named with a uuid, deleted afterwards; the others
need no broker.
"""

import contextlib
import json
import os
import queue as queue_module
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pika
import pika.exceptions
import pytest

from conftest import BROKER_HOST, BROKER_PORT

import occo.util.communication as comm
from occo.util.communication import __version__
from occo.util.communication.cli import DEFAULT_QUEUE
from occo.util.exceptions import CriticalError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROKER_URL = 'amqp://guest:guest@{}:{}/'.format(BROKER_HOST, BROKER_PORT)
#: Bounds every subprocess call: a hang fails the test, it is no speed check.
TIMEOUT = 60
STEPS = ['dns', 'tcp', 'auth', 'vhost', 'declare', 'publish', 'consume']

pytestmark = pytest.mark.timeout(180)


def cli_env(*paths, **variables):
    """The environment of a child: the repository importable, no broker URL
    unless given."""
    env = {k: v for k, v in os.environ.items() if k != 'OCCO_AMQP_URL'}
    env['PYTHONPATH'] = os.pathsep.join((ROOT,) + tuple(map(str, paths)))
    env.update(variables)
    return env


def broker_env(*paths):
    return cli_env(*paths, OCCO_AMQP_URL=BROKER_URL)


def occo_comm(*args, env=None, input=None):
    """Run the command to its end; return the CompletedProcess."""
    return subprocess.run(
        [sys.executable, '-m', 'occo.util.communication'] + list(args),
        cwd=ROOT, env=env or cli_env(), input=input, capture_output=True,
        text=True, timeout=TIMEOUT)


def unused_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def step_lines(stdout):
    """``{step: (status, detail)}`` of the ``check`` report."""
    steps = {}
    for line in stdout.splitlines():
        status, name, detail = (line.split(None, 2) + [''])[:3]
        steps[name] = (status, detail)
    return steps


@pytest.fixture
def queue():
    """A fresh queue name, deleted from the broker after the test."""
    name = 'test-cli-' + uuid.uuid4().hex
    yield name
    params = pika.ConnectionParameters(BROKER_HOST, BROKER_PORT)
    with contextlib.closing(pika.BlockingConnection(params)) as connection:
        connection.channel().queue_delete(name)


class Running:
    """A command running in the background, its output read by threads."""

    def __init__(self, args, env):
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'occo.util.communication'] + list(args),
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_default_sigint if _SIGINT_IGNORED else None)
        self.stdout, self.stderr = [], []
        self._stderr_lines = queue_module.Queue()
        self._readers = [
            threading.Thread(target=self._read, daemon=True,
                             args=(self.proc.stdout, self.stdout, None)),
            threading.Thread(target=self._read, daemon=True,
                             args=(self.proc.stderr, self.stderr,
                                   self._stderr_lines))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, lines, notify):
        for line in stream:
            lines.append(line)
            if notify is not None:
                notify.put(line)

    def wait_for_stderr(self, text, timeout=30):
        """Wait until a line of standard error contains ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._stderr_lines.get(timeout=deadline - time.monotonic())
            except queue_module.Empty:
                break
            if text in line:
                return line
        self.proc.kill()
        pytest.fail('no {!r} on stderr within {} s: {}'.format(
            text, timeout, ''.join(self.stderr)))

    def finish(self, signum=None, timeout=30):
        """Signal the process if asked, wait for it; return its exit status."""
        if signum is not None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            for reader in self._readers:
                reader.join(timeout)

    @property
    def out(self):
        return ''.join(self.stdout)


#: A shell starts background jobs with SIGINT ignored, and children inherit
#: that; a user's Ctrl-C in a terminal is not ignored, so restore it.
_SIGINT_IGNORED = signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def consumer(*args, env=None):
    """Run ``consume ARGS`` until it is ready; stop it after the block."""
    running = Running(('consume',) + args, env or broker_env())
    try:
        running.wait_for_stderr('consuming ')
        yield running
    finally:
        if running.proc.poll() is None:
            running.finish(signal.SIGTERM)


# -- no broker needed -------------------------------------------------------
def test_cli_version_prints_package_version():
    proc = occo_comm('--version')
    assert proc.returncode == 0
    assert proc.stdout.split() == ['occo-comm', __version__]


def test_cli_demo_runs_on_memory_backend_by_default():
    proc = occo_comm('demo')
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "on the 'memory' backend" in lines[0]
    assert "AsynchronProducer pushed 'hello'" in lines
    assert any(line.startswith("RPCProducer got {'square': 144}")
               for line in lines)
    assert ('RPCProducer got the remote error: ValueError: the demo processor '
            'refuses "fail"') in lines
    assert lines[-1] == 'demo finished: OK'


def test_cli_without_command_is_usage_error():
    proc = occo_comm()
    assert proc.returncode == 2
    assert 'usage: occo-comm' in proc.stderr


@pytest.mark.parametrize('spec, problem', [
    ('no_colon', 'must look like module:function'),
    ('no_such_module_for_occo_tests:f', 'No module named'),
    ('json:no_such_function', 'has no attribute'),
    ('json:__doc__', 'is not callable'),
])
def test_cli_consume_bad_processor_spec_exits_2(spec, problem):
    proc = occo_comm('consume', '--processor', spec)
    assert proc.returncode == 2
    assert proc.stderr.startswith('error: --processor {!r}'.format(spec))
    assert problem in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_cli_bad_url_is_configuration_error():
    proc = occo_comm('push', '--url', 'http://127.0.0.1/', 'message')
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: configuration key 'url'")


def test_cli_missing_config_file_is_usage_error(tmp_path):
    missing = tmp_path / 'missing.yaml'
    proc = occo_comm('push', '--config', str(missing), 'message')
    assert proc.returncode == 2
    assert proc.stderr.strip() == 'error: cannot read {}: No such file or ' \
        'directory'.format(missing)


def test_cli_check_unused_port_fails_tcp_step_with_exit_3():
    port = unused_port()
    proc = occo_comm('check', '--url',
                     'amqp://guest:guest@127.0.0.1:{}/'.format(port))
    assert proc.returncode == 3
    steps = step_lines(proc.stdout)
    assert steps['dns'][0] == 'ok'
    assert steps['tcp'][0] == 'FAIL'
    assert 'connection refused by 127.0.0.1:{}'.format(port) in steps['tcp'][1]
    assert {steps[name][0] for name in STEPS[2:]} == {'skip'}


def test_cli_check_on_memory_backend_is_configuration_error(tmp_path):
    config = tmp_path / 'memory.yaml'
    config.write_text('mqconfig:\n  protocol: memory\n')
    proc = occo_comm('check', '--config', str(config))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: check needs a RabbitMQ broker")


@pytest.mark.parametrize('args', [
    ['--url', '{url}', 'push', 'message'],
    ['push', '--url', '{url}', 'message'],
    ['-v', '--url', '{url}', '--queue', 'q', '--json', 'push', 'message'],
])
def test_cli_shared_options_work_before_and_after_the_command(args):
    port = unused_port()
    url = 'amqp://guest:guest@127.0.0.1:{}/'.format(port)
    proc = occo_comm(*[arg.format(url=url) for arg in args])
    assert proc.returncode == 3, proc.stderr
    error = proc.stderr.splitlines()[-1]
    assert error.startswith('error: connection refused by')
    assert '127.0.0.1:{},'.format(port) in error


def test_cli_demo_refuses_queue_given_before_the_command():
    proc = occo_comm('--queue', 'mine', 'demo')
    assert proc.returncode == 2
    assert proc.stderr == ('error: demo takes neither --queue nor --json: it '
                           'prints its tour, on a queue of its own\n')


def test_cli_help_says_where_shared_options_go():
    proc = occo_comm('--help')
    assert proc.returncode == 0
    assert 'go before or after COMMAND' in ' '.join(proc.stdout.split())


def test_cli_environment_url_is_used_without_url_option():
    env = cli_env(OCCO_AMQP_URL='amqp://guest:guest@127.0.0.1:{}/'.format(
        unused_port()))
    proc = occo_comm('push', 'message', env=env)
    assert proc.returncode == 3
    assert proc.stderr.startswith('error: connection refused by')
    assert 'Traceback' not in proc.stderr


# -- against the broker -------------------------------------------------------
@pytest.mark.broker
def test_cli_demo_runs_on_broker_with_url():
    proc = occo_comm('demo', '--url', BROKER_URL)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "on the 'amqp' backend" in lines[0]
    assert lines[-1] == 'demo finished: OK'


@pytest.mark.broker
def test_cli_push_then_consume_count_receives_in_order(queue):
    pushed = occo_comm('push', '--queue', queue, 'one', 'two words',
                       env=broker_env())
    assert pushed.returncode == 0, pushed.stderr
    piped = occo_comm('push', '--queue', queue, '--json', env=broker_env(),
                      input='three\n\nfour\n')
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout) == {'pushed': 2, 'queue': queue}
    proc = occo_comm('consume', '--queue', queue, '--count', '4',
                     env=broker_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ['one', 'two words', 'three', 'four']


@pytest.mark.broker
def test_cli_consume_count_leaves_later_messages_in_queue(queue):
    pushed = occo_comm('push', '--queue', queue, 'a', 'b', 'c',
                       env=broker_env())
    assert pushed.returncode == 0, pushed.stderr
    first = occo_comm('consume', '--queue', queue, '--count', '1',
                      env=broker_env())
    rest = occo_comm('consume', '--queue', queue, '--count', '2',
                     env=broker_env())
    assert (first.returncode, rest.returncode) == (0, 0), rest.stderr
    assert (first.stdout, rest.stdout) == ('a\n', 'b\nc\n')


@pytest.mark.broker
def test_cli_consume_json_prints_objects_with_fields(queue):
    pushed = occo_comm('push', '--queue', queue, '--as-json', '{"x": [1, 2]}',
                       '42', '"text"', env=broker_env())
    assert pushed.returncode == 0, pushed.stderr
    proc = occo_comm('consume', '--queue', queue, '--count', '3', '--json',
                     env=broker_env())
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert records == [
        {'n': 1, 'queue': queue, 'message': {'x': [1, 2]}},
        {'n': 2, 'queue': queue, 'message': 42},
        {'n': 3, 'queue': queue, 'message': 'text'}]


@pytest.mark.broker
def test_cli_push_as_json_refuses_invalid_json_before_sending(queue):
    proc = occo_comm('push', '--queue', queue, '--as-json', '{"ok": 1}',
                     '{bad', env=broker_env())
    assert proc.returncode == 2
    assert proc.stderr.startswith('error: MESSAGE 2 is not JSON')


@pytest.mark.broker
def test_cli_rpc_against_echo_consumer_returns_message(queue):
    with consumer('--queue', queue, '--echo', '--count', '2') as running:
        text = occo_comm('rpc', '--queue', queue, 'hello there',
                         env=broker_env())
        data = occo_comm('rpc', '--queue', queue, '--as-json',
                         '{"a": [1, 2]}', env=broker_env())
        assert running.finish() == 0
    assert text.returncode == 0, text.stderr
    assert text.stdout == 'hello there\n'
    assert data.returncode == 0, data.stderr
    assert json.loads(data.stdout) == {'a': [1, 2]}
    assert running.out.splitlines() == ['hello there', '{"a": [1, 2]}']


@pytest.mark.broker
def test_cli_rpc_against_failing_processor_exits_4(queue, tmp_path):
    (tmp_path / 'cli_test_processors.py').write_text(
        'def fail(message):\n'
        '    raise ValueError("cannot handle " + message)\n')
    with consumer('--queue', queue, '--count', '1', '--processor',
                  'cli_test_processors:fail',
                  env=broker_env(tmp_path)) as running:
        proc = occo_comm('rpc', '--queue', queue, 'this', env=broker_env())
        assert running.finish() == 0
    assert proc.returncode == 4
    assert proc.stdout == ''
    assert proc.stderr == 'error: remote ValueError: cannot handle this\n'
    assert running.out == 'this\n'
    assert ('processor failed on message 1: ValueError: cannot handle this'
            in ''.join(running.stderr))


@pytest.mark.broker
def test_cli_rpc_without_consumer_times_out_with_exit_3(queue):
    proc = occo_comm('rpc', '--queue', queue, '--timeout', '0.5', 'anyone?',
                     env=broker_env())
    assert proc.returncode == 3
    assert proc.stderr.startswith('error: no reply from {!r} within 0.5 s'
                                  .format(queue))


@pytest.mark.broker
@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_cli_consume_stops_cleanly_on_signal(queue, signum):
    with consumer('--queue', queue) as running:
        assert running.finish(signum) == 0
    assert 'consumed 0 message(s)' in ''.join(running.stderr)
    assert 'Traceback' not in ''.join(running.stderr)


@pytest.mark.broker
def test_cli_url_option_wins_over_environment(queue):
    env = cli_env(OCCO_AMQP_URL='amqp://guest:guest@127.0.0.1:{}/'.format(
        unused_port()))
    proc = occo_comm('push', '--url', BROKER_URL, '--queue', queue, 'm',
                     env=env)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.broker
def test_cli_config_file_wins_over_environment(queue, tmp_path):
    config = tmp_path / 'occo.yaml'
    config.write_text(
        'mq:\n  protocol: amqp\n  host: {}\n  port: {}\n  queue: {}\n'
        '  durable: false\n'.format(BROKER_HOST, BROKER_PORT, queue))
    env = cli_env(OCCO_AMQP_URL='amqp://guest:guest@127.0.0.1:{}/'.format(
        unused_port()))
    pushed = occo_comm('push', '--config', str(config), '--section', 'mq',
                       'from config', env=env)
    assert pushed.returncode == 0, pushed.stderr
    proc = occo_comm('consume', '--config', str(config), '--section', 'mq',
                     '--count', '1', env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == 'from config\n'


@pytest.mark.broker
def test_cli_option_after_the_command_wins_over_the_same_before(queue):
    refused = 'amqp://guest:guest@127.0.0.1:{}/'.format(unused_port())
    proc = occo_comm('--url', refused, '--queue', 'not-this-' + queue, 'push',
                     '--url', BROKER_URL, '--queue', queue, '--json', 'm')
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {'pushed': 1, 'queue': queue}


@pytest.mark.broker
def test_cli_consume_without_echo_prints_and_refuses_rpc_with_405(queue):
    with consumer('--queue', queue, '--count', '1') as running:
        assert 'RPC requests are refused' in ''.join(running.stderr)
        with comm.RPCProducer(protocol='amqp', host=BROKER_HOST,
                              port=BROKER_PORT, queue=queue,
                              rpc_timeout=TIMEOUT) as rpc:
            with pytest.raises(CriticalError, match='does not answer RPC '
                               'requests: start it with --echo') as refused:
                rpc.push_message('anyone?')
        assert running.finish() == 0
    assert refused.value.http_code == 405
    assert running.out == 'anyone?\n'


@pytest.mark.broker
def test_cli_rpc_reports_the_refusal_of_consume_without_echo(queue):
    with consumer('--queue', queue, '--count', '1') as running:
        proc = occo_comm('rpc', '--queue', queue, 'anyone?', env=broker_env())
        assert running.finish() == 0
    assert proc.returncode == 3
    assert proc.stderr == (
        'error: occo-comm consume on {!r} prints messages and does not answer '
        'RPC requests: start it with --echo or --processor MODULE:FUNCTION '
        '(code 405)\n'.format(queue))


def queue_exists(name):
    """Whether the broker has a queue ``name`` (a passive declare)."""
    params = pika.ConnectionParameters(BROKER_HOST, BROKER_PORT)
    with contextlib.closing(pika.BlockingConnection(params)) as connection:
        try:
            connection.channel().queue_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as e:
            if e.reply_code != 404:
                raise
            return False
    return True


@pytest.mark.broker
def test_cli_check_without_queue_leaves_no_queue_on_the_broker():
    params = pika.ConnectionParameters(BROKER_HOST, BROKER_PORT)
    with contextlib.closing(pika.BlockingConnection(params)) as connection:
        connection.channel().queue_delete(DEFAULT_QUEUE)  # left by older versions
    proc = occo_comm('check', env=broker_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = step_lines(proc.stdout)
    assert {status for status, _ in steps.values()} == {'ok'}
    temporary = [re.search(r"temporary queue '([^']+)'", steps[name][1]).group(1)
                 for name in ('declare', 'publish')]
    assert temporary[0].startswith('amq.gen-')
    for name in [DEFAULT_QUEUE] + temporary:
        assert not queue_exists(name), name


@pytest.mark.broker
def test_cli_check_passes_every_step_against_broker(queue):
    proc = occo_comm('check', '--queue', queue, env=broker_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = step_lines(proc.stdout)
    assert list(steps) == STEPS
    assert {status for status, _ in steps.values()} == {'ok'}
    assert steps['dns'][1] == '{0} -> {0}'.format(BROKER_HOST)
    assert repr(queue) in steps['declare'][1]


@pytest.mark.broker
def test_cli_check_json_reports_steps(queue):
    proc = occo_comm('check', '--queue', queue, '--json', env=broker_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report['ok'] is True
    assert [step['name'] for step in report['steps']] == STEPS


@pytest.mark.broker
@pytest.mark.parametrize('verbose', [[], ['-v']])
def test_cli_check_wrong_password_fails_auth_and_never_shows_it(queue,
                                                               verbose):
    password = 'not-the-password-' + uuid.uuid4().hex
    proc = occo_comm('check', *verbose, '--queue', queue, '--url',
                     'amqp://guest:{}@{}:{}/'.format(password, BROKER_HOST,
                                                     BROKER_PORT))
    assert proc.returncode == 3
    steps = step_lines(proc.stdout)
    assert steps['auth'][0] == 'FAIL'
    assert steps['auth'][1].startswith("access refused for user 'guest'")
    assert steps['auth'][1].endswith('wrong user or password')
    assert {steps[name][0] for name in STEPS[3:]} == {'skip'}
    assert password not in proc.stdout + proc.stderr


@pytest.mark.broker
def test_cli_check_missing_vhost_fails_vhost_step_naming_it(queue):
    vhost = 'no-such-vhost-' + uuid.uuid4().hex[:8]
    proc = occo_comm('check', '--queue', queue, '--url', '{}{}'.format(
        BROKER_URL, vhost))
    assert proc.returncode == 3
    steps = step_lines(proc.stdout)
    assert steps['auth'][0] == 'ok'
    assert steps['vhost'][0] == 'FAIL'
    assert repr(vhost) in steps['vhost'][1]


@pytest.mark.broker
def test_cli_check_tls_against_plain_port_fails_tls_step(queue):
    proc = occo_comm('check', '--queue', queue, '--timeout', '5', '--url',
                     'amqps://guest:guest@{}:{}/'.format(BROKER_HOST,
                                                         BROKER_PORT))
    assert proc.returncode == 3
    steps = step_lines(proc.stdout)
    assert steps['tcp'][0] == 'ok'
    assert steps['tls'][0] == 'FAIL'
    assert steps['auth'][0] == 'skip'


@pytest.mark.broker
def test_cli_bench_json_gives_positive_numbers(queue):
    proc = occo_comm('bench', '--queue', queue, '--json', '-n', '20',
                     '--calls', '5', env=broker_env())
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result['messages'], result['calls']) == (20, 5)
    for key in ('push_rate', 'consume_rate', 'rpc_p50_ms', 'rpc_p99_ms',
                'rpc_rate'):
        assert result[key] > 0, key
    assert result['rpc_p99_ms'] >= result['rpc_p50_ms']
    assert '\r' not in proc.stderr   # no progress display without a terminal
