# SPDX-License-Identifier: Apache-2.0
"""Extra, isolated RabbitMQ nodes on loopback for fault-injection tests.

:class:`RabbitNode` runs one ``rabbitmq-server`` of the local installation
with everything of its own: node name, AMQP and distribution ports, data, log
and config files in one directory, and an Erlang cookie in a private
``HOME``. It never touches the system broker (``rabbit@localhost``): that one
has a different cookie, so even a wrong ``-n`` cannot reach it.
:class:`RabbitCluster` joins several such nodes into one cluster.

Both are context managers: ``with`` starts, and the exit always stops and
removes the temporary directory. Nodes still running when the interpreter
exits are killed (``atexit``). Every wait has a deadline; a failure raises
:class:`RabbitNodeError` with the tail of the node's log.

Node names get ``-<pid>-<n>`` appended, so parallel runs, and nodes left over
by a crashed run, never collide. The Debian wrappers in ``/usr/sbin`` switch
to the ``rabbitmq`` user when run as root, so the real scripts in
``/usr/lib/rabbitmq/bin`` are used when present (override:
``OCCO_RABBITMQ_SCRIPTS_DIR``).
"""

import atexit
import concurrent.futures
import contextlib
import itertools
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

log = logging.getLogger(__name__)

__all__ = ['RabbitNodeError', 'RabbitNode', 'RabbitCluster', 'epmd_names']

#: Ports are picked here: below the kernel's ephemeral range, away from the
#: CLI tools' distribution ports (35672-35682).
_PORT_RANGE = (20000, 32000)
_SCRIPT_DIRS = ('/usr/lib/rabbitmq/bin', '/usr/local/lib/rabbitmq/bin')
_lock = threading.Lock()
_ports_taken = set()
_sequence = itertools.count(1)
_running = set()


class RabbitNodeError(RuntimeError):
    """A test node failed to start, stop or answer ``rabbitmqctl``."""


def free_port():
    """A loopback TCP port nobody listens on, never the same one twice."""
    with _lock:
        for _ in range(500):
            port = random.randrange(*_PORT_RANGE)
            if port in _ports_taken:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(('127.0.0.1', port))
                except OSError:
                    continue
            _ports_taken.add(port)
            return port
    raise RabbitNodeError('no free port in range {}-{}'.format(*_PORT_RANGE))


def port_open(port, host='127.0.0.1', timeout=1.0):
    """Whether ``host:port`` accepts a TCP connection."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def epmd_names():
    """``{short node name: distribution port}`` of the local epmd (NAMES_REQ)."""
    try:
        with socket.create_connection(
                ('127.0.0.1', int(os.environ.get('ERL_EPMD_PORT', 4369))), timeout=2) as sock:
            sock.sendall(b'\x00\x01n')
            data = b''
            while chunk := sock.recv(4096):
                data += chunk
    except OSError:
        return {}
    names = {}
    for line in data[4:].decode('utf-8', 'replace').splitlines():
        parts = line.split()  # name NAME at port PORT
        if len(parts) == 5 and parts[0] == 'name':
            names[parts[1]] = int(parts[4])
    return names


def _scripts_dir():
    candidates = [os.environ.get('OCCO_RABBITMQ_SCRIPTS_DIR'), *_SCRIPT_DIRS]
    exe = shutil.which('rabbitmq-server',
                       path=os.environ.get('PATH', '') + ':/usr/sbin:/usr/local/sbin')
    if exe:
        candidates.append(os.path.dirname(os.path.realpath(exe)))
    for directory in candidates:
        if directory and os.access(os.path.join(directory, 'rabbitmq-server'), os.X_OK):
            return directory
    raise RabbitNodeError('rabbitmq-server not found (looked in {})'.format(
        ', '.join(filter(None, candidates))))


def _tail(path, lines=30):
    try:
        with open(path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode('utf-8', 'replace')
    except OSError:
        return '<no {}>'.format(path)
    return '\n'.join(text.splitlines()[-lines:])


def _beam_alive(pid, home):
    """Whether ``pid`` is still an Erlang VM run with ``-home home``.

    The node name is not on the command line (3.10 sets it at boot), but the
    private ``HOME`` is, which also guards against reused pids.
    """
    try:
        with open('/proc/{}/cmdline'.format(pid), 'rb') as f:
            args = f.read().split(b'\0')
        with open('/proc/{}/stat'.format(pid), 'rb') as f:
            state = f.read().rsplit(b')', 1)[1].split()[0]
    except OSError:
        return False
    return state != b'Z' and home.encode() in args


_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def make_certificates(directory, days=2):
    """Write a throw-away CA, a server and a client certificate (EC P-256).

    The server certificate is for ``localhost`` and ``127.0.0.1``. Uses the
    ``openssl`` command line tool.

    :returns: a dict of paths: ``ca``, ``ca_key``, ``server_cert``,
        ``server_key``, ``client_cert``, ``client_key``.
    """
    openssl = shutil.which('openssl')
    if openssl is None:
        raise RabbitNodeError('tls=True needs the openssl command line tool')
    os.makedirs(directory, exist_ok=True)
    path = lambda name: os.path.join(directory, name)  # noqa: E731
    with open(path('openssl.cnf'), 'w') as f:
        f.write(_OPENSSL_CNF)
    newkey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
              '-nodes', '-config', path('openssl.cnf')]

    def run(*args):
        result = subprocess.run([openssl, *args], capture_output=True,
                                text=True, timeout=30)
        if result.returncode:
            raise RabbitNodeError('openssl {} failed: {}'.format(
                args[0], result.stderr.strip()))

    run('req', '-x509', *newkey, '-extensions', 'ca', '-days', str(days),
        '-subj', '/CN=OCCO test CA', '-keyout', path('ca_key.pem'),
        '-out', path('ca_certificate.pem'))
    for role, cn in (('server', 'localhost'), ('client', 'occo-test-client')):
        run('req', '-new', *newkey, '-subj', '/CN=' + cn,
            '-keyout', path(role + '_key.pem'), '-out', path(role + '.csr'))
        run('x509', '-req', '-in', path(role + '.csr'), '-days', str(days),
            '-CA', path('ca_certificate.pem'), '-CAkey', path('ca_key.pem'),
            '-set_serial', str(secrets.randbits(63)),
            '-extfile', path('openssl.cnf'), '-extensions', role,
            '-out', path(role + '_certificate.pem'))
    return dict(ca=path('ca_certificate.pem'), ca_key=path('ca_key.pem'),
                server_cert=path('server_certificate.pem'),
                server_key=path('server_key.pem'),
                client_cert=path('client_certificate.pem'),
                client_key=path('client_key.pem'))


class _Started:
    """``with`` starts the node(s) and always cleans up, also when starting
    failed halfway."""

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc):
        self.cleanup()


class RabbitNode(_Started):
    """One RabbitMQ node of its own on 127.0.0.1.

    :param name: prefix of the node name; the node is
        ``<name>-<pid>-<n>@localhost``.
    :param amqp_port: AMQP port; a free one when ``None``.
    :param base_dir: directory for all files of the node (created if
        needed, kept afterwards); a temporary one, removed when the ``with``
        block ends, when ``None``.
    :param tls: also listen for AMQPS on :attr:`tls_port` with generated
        certificates (:attr:`ca_file`, :attr:`client_cert`, :attr:`client_key`).
    :param cookie: Erlang cookie; random when ``None``. Nodes of a cluster
        share one.
    """

    def __init__(self, name='occotest1', amqp_port=None, base_dir=None,
                 tls=False, cookie=None, *, _node=None):
        #: Full Erlang node name, ``name-pid-n@localhost``.
        self.node = _node or '{}-{}-{}@localhost'.format(
            name, os.getpid(), next(_sequence))
        self.amqp_port = amqp_port or free_port()
        #: Erlang distribution port (``RABBITMQ_DIST_PORT``).
        self.dist_port = free_port()
        self.tls = tls
        #: AMQPS port, ``None`` without TLS.
        self.tls_port = free_port() if tls else None
        self._owns_dir = base_dir is None
        self.base_dir = os.path.abspath(
            base_dir or tempfile.mkdtemp(prefix='occo-rabbit-'))
        self._cookie = cookie or secrets.token_hex(16).upper()
        tls_dir = os.path.join(self.base_dir, 'tls')
        #: CA certificate that signed the server and client certificates.
        self.ca_file = os.path.join(tls_dir, 'ca_certificate.pem') if tls else None
        self.client_cert = os.path.join(tls_dir, 'client_certificate.pem') if tls else None
        self.client_key = os.path.join(tls_dir, 'client_key.pem') if tls else None
        #: Seconds the last :meth:`start` took.
        self.start_seconds = None
        self._proc = None
        self._pid = None

    def __repr__(self):
        return '<RabbitNode {} amqp=127.0.0.1:{} {}>'.format(
            self.node, self.amqp_port, 'running' if self.running else 'stopped')

    @property
    def url(self):
        """AMQP URL of the node (guest on loopback)."""
        return 'amqp://guest:guest@127.0.0.1:{}/%2F'.format(self.amqp_port)

    @property
    def log_file(self):
        """The node's main log file."""
        return os.path.join(self.base_dir, 'log', self.node + '.log')

    def _path(self, name):
        return os.path.join(self.base_dir, name)

    @property
    def env(self):
        """Environment for ``rabbitmq-server`` and ``rabbitmqctl`` of this node."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(
            ('RABBITMQ_', 'ERL_FLAGS', 'ERL_AFLAGS', 'ERL_ZFLAGS'))}
        loopback = '-kernel inet_dist_use_interface {127,0,0,1}'
        env.update(
            HOME=self._path('home'), ERL_EPMD_ADDRESS='127.0.0.1',
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_CONF_ENV_FILE=self._path('rabbitmq-env.conf'),
            RABBITMQ_CONFIG_FILE=self._path('rabbitmq.conf'),
            RABBITMQ_CONFIG_FILES=self._path('conf.d'),
            RABBITMQ_ADVANCED_CONFIG_FILE=self._path('advanced.config'),
            RABBITMQ_ENABLED_PLUGINS_FILE=self._path('enabled_plugins'),
            RABBITMQ_MNESIA_BASE=self._path('mnesia'),
            RABBITMQ_LOG_BASE=self._path('log'),
            RABBITMQ_PID_FILE=self._path('rabbitmq.pid'),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=loopback,
            RABBITMQ_CTL_ERL_ARGS=loopback)
        return env

    def _prepare(self):
        for sub in ('home', 'conf.d', 'mnesia', 'log'):
            os.makedirs(self._path(sub), exist_ok=True)
        cookie = self._path('home/.erlang.cookie')
        if not os.path.exists(cookie):
            fd = os.open(cookie, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, 'w') as f:
                f.write(self._cookie)
        with open(self._path('rabbitmq-env.conf'), 'w') as f:
            f.write('# empty: keeps /etc/rabbitmq/rabbitmq-env.conf out\n')
        with open(self._path('enabled_plugins'), 'w') as f:
            f.write('[].\n')
        conf = ['listeners.tcp.1 = 127.0.0.1:{}'.format(self.amqp_port),
                'log.console = false']
        if self.tls:
            if not os.path.exists(self.client_key):
                files = make_certificates(self._path('tls'))
            else:
                files = dict(ca=self.ca_file,
                             server_cert=self._path('tls/server_certificate.pem'),
                             server_key=self._path('tls/server_key.pem'))
            conf += ['listeners.ssl.1 = 127.0.0.1:{}'.format(self.tls_port),
                     'ssl_options.cacertfile = ' + files['ca'],
                     'ssl_options.certfile = ' + files['server_cert'],
                     'ssl_options.keyfile = ' + files['server_key'],
                     'ssl_options.verify = verify_peer',
                     'ssl_options.fail_if_no_peer_cert = false']
        with open(self._path('rabbitmq.conf'), 'w') as f:
            f.write('\n'.join(conf) + '\n')

    def _error(self, message):
        return RabbitNodeError('{}: {}\n--- {} (tail) ---\n{}\n--- stdout ---\n{}'.format(
            self.node, message, self.log_file, _tail(self.log_file),
            _tail(self._path('stdout.log'), 10)))

    def ctl(self, *args, timeout=60):
        """Run ``rabbitmqctl -n NODE ARGS`` for this node; return its stdout.

        :raises RabbitNodeError: on a non-zero exit or after ``timeout`` seconds.
        """
        cmd = [os.path.join(_scripts_dir(), 'rabbitmqctl'), '-n', self.node, *args]
        try:
            result = subprocess.run(cmd, env=self.env, capture_output=True,
                                    text=True, timeout=timeout,
                                    stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RabbitNodeError('rabbitmqctl {} timed out after {}s'.format(
                ' '.join(args), timeout)) from None
        if result.returncode:
            raise RabbitNodeError('rabbitmqctl {} failed ({}): {}'.format(
                ' '.join(args), result.returncode,
                (result.stderr or result.stdout).strip()))
        return result.stdout

    @property
    def running(self):
        """Whether the node's Erlang VM is alive."""
        if self._proc is not None and self._proc.poll() is None:
            return True
        pid = self._read_pid()
        return pid is not None and _beam_alive(pid, self._path('home'))

    def _read_pid(self):
        try:
            with open(self._path('rabbitmq.pid')) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return self._pid

    def start(self, timeout=60):
        """Start the node and wait until it is booted and serves AMQP.

        :raises RabbitNodeError: when it exits or is not up within ``timeout``
            seconds; the node is killed then.
        """
        if self.running:
            raise RabbitNodeError(self.node + ' is already running')
        started = time.monotonic()
        deadline = started + timeout
        self._prepare()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path('rabbitmq.pid'))
        with open(self._path('stdout.log'), 'ab') as out:
            self._proc = subprocess.Popen(
                [os.path.join(_scripts_dir(), 'rabbitmq-server')], env=self.env,
                cwd=self.base_dir, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        with _lock:
            _running.add(self)
        try:
            self._wait_started(deadline, timeout)
        except BaseException:
            self.kill()
            raise
        self._pid = self._read_pid()
        self.start_seconds = time.monotonic() - started
        log.info('%s up in %.1fs on port %s', self.node, self.start_seconds,
                 self.amqp_port)
        return self

    def _wait_started(self, deadline, timeout):
        # rabbitmqctl fails at once while the node is not registered with
        # epmd, and each call costs a second of CPU: poll epmd first. It
        # also proves that the node is ours (our distribution port).
        while epmd_names().get(self.node.split('@')[0]) != self.dist_port:
            if self._proc.poll() is not None:
                raise self._error('exited with status {} while starting'.format(
                    self._proc.returncode))
            if time.monotonic() > deadline:
                raise self._error('not registered with epmd after {}s'.format(timeout))
            time.sleep(0.1)
        remaining = max(5, int(deadline - time.monotonic()))
        try:
            self.ctl('await_startup', '--timeout', str(remaining),
                     timeout=remaining + 10)
        except RabbitNodeError as e:
            raise self._error(str(e)) from None
        for port in filter(None, (self.amqp_port, self.tls_port)):
            if not port_open(port):
                raise self._error('booted, but port {} is closed'.format(port))

    def stop(self, timeout=30):
        """Stop the node cleanly (``rabbitmqctl stop``), kill it if that fails.

        Afterwards nothing of the node runs. Safe to call when stopped.
        """
        if self.running:
            started = time.monotonic()
            try:
                self.ctl('stop', timeout=timeout)
            except RabbitNodeError as e:
                log.warning('%s: clean stop failed, killing it: %s', self.node, e)
            self._wait_gone(time.monotonic() + 15)
            log.info('%s stopped in %.1fs', self.node, time.monotonic() - started)
        self.kill()

    def kill(self):
        """SIGKILL the node's Erlang VM (crash test); wait until it is gone."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        pid = self._read_pid()
        if pid is not None and _beam_alive(pid, self._path('home')):
            os.kill(pid, signal.SIGKILL)
        if not self._wait_gone(time.monotonic() + 15):
            raise self._error('still running after SIGKILL')
        if self._proc is not None:
            self._proc.wait()
        with _lock:
            _running.discard(self)

    def _wait_gone(self, deadline):
        while self.running:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def restart(self, timeout=60, kill=False):
        """Stop (or with ``kill`` crash) and start again on the same data."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start(timeout)

    def close_all_connections(self, reason='closed by test'):
        """Close every client connection (``rabbitmqctl close_all_connections``)."""
        return self.ctl('close_all_connections', reason)

    def cleanup(self):
        """Stop the node and remove its directory if it is a temporary one."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def detach(self):
        """Leave the node running when this process exits (no ``atexit`` kill)."""
        self._pid = self._read_pid()
        self._proc = None
        self._owns_dir = False
        with _lock:
            _running.discard(self)

    def state(self):
        """What :meth:`from_state` needs to find and stop the node later."""
        return dict(node=self.node, amqp_port=self.amqp_port,
                    dist_port=self.dist_port, tls_port=self.tls_port,
                    base_dir=self.base_dir, pid=self._read_pid(), url=self.url)

    @classmethod
    def from_state(cls, state):
        """A handle on a node started by another process (see :meth:`state`)."""
        self = cls(amqp_port=state['amqp_port'], base_dir=state['base_dir'],
                   tls=state.get('tls_port') is not None, _node=state['node'])
        self.dist_port = state['dist_port']
        self.tls_port = state.get('tls_port')
        self._pid = state.get('pid')
        return self


class RabbitCluster(_Started):
    """``nodes`` RabbitMQ nodes on loopback joined into one cluster.

    Nodes are started in parallel, then ``nodes[1:]`` join ``nodes[0]``
    (``stop_app``, ``join_cluster``, ``start_app``). Indexes in :meth:`kill`,
    :meth:`start` and :meth:`stop` are positions in :attr:`nodes` (from 0).

    :param nodes: number of nodes.
    :param base_dir: parent of the nodes' directories; temporary (removed by
        the ``with`` exit) when ``None``.
    """

    def __init__(self, nodes=3, name='occoclu', base_dir=None, tls=False):
        self._owns_dir = base_dir is None
        self.base_dir = os.path.abspath(
            base_dir or tempfile.mkdtemp(prefix='occo-cluster-'))
        cookie = secrets.token_hex(16).upper()
        #: The :class:`RabbitNode` objects, seed first.
        self.nodes = []
        for i in range(nodes):
            node = RabbitNode('{}{}'.format(name, i + 1), tls=tls, cookie=cookie,
                              base_dir=self.base_dir + '/node{}'.format(i + 1))
            self.nodes.append(node)
        #: Seconds the last whole-cluster :meth:`start` took.
        self.start_seconds = None

    def __repr__(self):
        return '<RabbitCluster {}>'.format(' '.join(n.node for n in self.nodes))

    @property
    def urls(self):
        """AMQP URLs of all nodes."""
        return [n.url for n in self.nodes]

    def _each(self, method, nodes):
        with concurrent.futures.ThreadPoolExecutor(len(nodes) or 1) as pool:
            for future in [pool.submit(method, n) for n in nodes]:
                future.result()

    def start(self, i=None, timeout=120):
        """Start and join all nodes, or restart node ``i``.

        A restarted node rejoins by itself. It waits at boot for the peers
        that were running when it went down, so after :meth:`stop` restart
        the node that stopped last first (RabbitMQ clustering rules).
        """
        if i is not None:
            self.nodes[i].start(timeout)
            return self.wait_running([n for n in self.nodes if n.running],
                                     timeout=timeout)
        started = time.monotonic()
        try:
            self._each(lambda n: n.start(timeout), self.nodes)
            seed = self.nodes[0].node
            for node in self.nodes[1:]:
                node.ctl('stop_app')
                node.ctl('join_cluster', seed)
                node.ctl('start_app')
            self.wait_running(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        log.info('cluster of %d up in %.1fs', len(self.nodes), self.start_seconds)
        return self

    def running_nodes(self):
        """Running node names as ``cluster_status`` of a live node reports them."""
        error = None
        for node in self.nodes:
            if node.running:
                try:
                    output = node.ctl('cluster_status', '--formatter', 'json')
                except RabbitNodeError as e:  # stopping just now: ask the next
                    error = e
                    continue
                return sorted(json.loads(output)['running_nodes'])
        if error is not None:
            raise error
        return []

    def wait_running(self, nodes=None, timeout=60):
        """Wait until ``cluster_status`` lists ``nodes`` (default: all) as running."""
        expected = sorted(n.node for n in (nodes or self.nodes))
        deadline = time.monotonic() + timeout
        while True:
            try:
                running = self.running_nodes()
            except RabbitNodeError as e:
                running = str(e)
            if running == expected:
                return self
            if time.monotonic() > deadline:
                raise self.nodes[0]._error('cluster running {}, expected {}'.format(
                    running, expected))
            time.sleep(0.5)

    def stop(self, i=None):
        """Stop all nodes (in parallel) or node ``i``."""
        self._each(RabbitNode.stop, self.nodes if i is None else [self.nodes[i]])

    def kill(self, i):
        """SIGKILL node ``i``."""
        self.nodes[i].kill()

    def detach(self):
        """Leave all nodes running when this process exits."""
        self._owns_dir = False
        for node in self.nodes:
            node.detach()

    def state(self):
        """What :meth:`from_state` needs to find and stop the cluster later."""
        return dict(base_dir=self.base_dir, nodes=[n.state() for n in self.nodes])

    @classmethod
    def from_state(cls, state):
        """A handle on a cluster started by another process."""
        self = cls(nodes=0, base_dir=state['base_dir'])
        self.nodes = [RabbitNode.from_state(s) for s in state['nodes']]
        return self

    def cleanup(self):
        """Stop all nodes and remove the directory if it is a temporary one."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)


@atexit.register
def _kill_leftovers():
    for node in list(_running):
        try:
            node.kill()
        except Exception:  # exiting anyway: report, go on with the others
            log.exception('could not kill %s', node.node)
        else:
            if node._owns_dir:
                shutil.rmtree(node.base_dir, ignore_errors=True)
