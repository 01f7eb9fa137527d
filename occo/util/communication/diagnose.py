# SPDX-License-Identifier: Apache-2.0
"""Diagnostics behind ``occo-comm check``.

:func:`run_check` walks the path from a configuration to a working broker
one step at a time and says which step fails and why:

=========== =================================================================
step        what it does
=========== =================================================================
``dns``     :func:`socket.getaddrinfo` of each configured host
``tcp``     :func:`socket.create_connection` to its port
``tls``     a TLS handshake with the configured ``ssl_options`` (only with
            ``ssl``, e.g. an ``amqps://`` URL)
``auth``    an AMQP login through the library (an
            :class:`~.comm.RPCProducer` that declares nothing)
``vhost``   the virtual host opens for that user
``declare`` the library declares the configured queue with the configured
            arguments (configure permission, or a queue that exists with
            other arguments); with no queue configured, a temporary
            server-named exclusive queue (configure permission)
``publish`` a probe message to a temporary exclusive, auto-delete queue,
            confirmed by the broker (write permission)
``consume`` the probe comes back from that queue (read permission)
=========== =================================================================

Once a step fails, the steps that depend on it are reported as ``skip``.

A check leaves no queue behind that nobody asked for: only a configured
queue outlives it. The library declares only durable or transient queues,
never exclusive or auto-delete ones, so the temporary ``declare`` queue, the
``publish`` and ``consume`` probe (and the queue clean-up of
:func:`delete_queues`) use pika directly: this module is the only place in
the command line that does.

``occo-comm bench`` measures through :mod:`~occo.util.communication.bench`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Optional, Union, cast

import pika
import pika.exceptions as pe

from ..exceptions import CommunicationError, ConfigurationError
from .failures import translate_error
from .comm import AsynchronProducer, RPCProducer
from .settings import Settings

__all__ = ['Step', 'OK', 'FAIL', 'SKIP', 'run_check', 'delete_queues']

log = logging.getLogger(__name__)

#: Status of a step that worked.
OK = 'ok'
#: Status of a step that failed; ``check`` then exits with status 3.
FAIL = 'FAIL'
#: Status of a step not run, because one it needs failed.
SKIP = 'skip'



class Step(NamedTuple):
    """One line of the check report."""

    #: :data:`OK`, :data:`FAIL` or :data:`SKIP`.
    status: str
    #: The step: ``dns``, ``tcp``, ``tls``, ``auth``...
    name: str
    #: What happened, never a password.
    detail: str


#: The name of the step that failed, or ``True`` when it worked.
_Outcome = Union[str, bool]

#: How the library words a rejected login (:func:`.failures.translate_error`).
_WRONG_PASSWORD = 'wrong user or password'


def run_check(config: Mapping[str, Any], timeout: float = 5.0,
              report: Optional[Callable[[Step], object]] = None) -> list[Step]:
    """Check every step from name resolution to a message round trip.

    :param config: the configuration of the ``amqp`` backend (``url`` or
        ``host``, ``port``, ``vhost``, ``user``, ``password``, ``ssl``,
        ``queue``...).
    :param timeout: seconds each network step may take.
    :param report: called with each :class:`Step` as soon as it is known.
    :returns: the list of :class:`Step`.
    :raises ConfigurationError: when the configuration is invalid, or does
        not select the ``amqp`` protocol.
    """
    return _Check(config, timeout, report or _ignore).run()


def _ignore(step: Step) -> None:
    """The default ``report``: nothing."""


class _Check:

    def __init__(self, config: Mapping[str, Any], timeout: float,
                 report: Callable[[Step], object]) -> None:
        if config.get('protocol') != 'amqp':
            raise ConfigurationError(
                'check needs a RabbitMQ broker (protocol \'amqp\'), the '
                'configuration selects protocol {!r}'.format(
                    config.get('protocol')))
        self.config = dict(config, connection_attempts=1,
                           connect_timeout=timeout)
        self.settings = Settings(self.config)
        self.timeout = timeout
        self.report = report
        self.steps: list[Step] = []

    def add(self, status: str, name: str, detail: object) -> bool:
        step = Step(status, name, str(detail))
        self.steps.append(step)
        self.report(step)
        return status == OK

    def skip(self, names: Iterable[str], cause: str) -> None:
        for name in names:
            self.add(SKIP, name, 'not run: {}'.format(cause))

    def run(self) -> list[Step]:
        reachable = [(host, port) for host, port in self.settings.hosts
                     if self.network(host, port)]
        later = ['auth', 'vhost', 'declare', 'publish', 'consume']
        if not reachable:
            self.skip(later, 'no broker host is reachable')
            return self.steps
        for step in (self.login, self.declare, self.round_trip):
            done = step(*reachable[0])
            if isinstance(done, str):
                self.skip(later[later.index(done) + 1:],
                          '{} failed'.format(done))
                break
        return self.steps

    # -- dns, tcp, tls ---------------------------------------------------
    def network(self, host: str, port: int) -> bool:
        names = ['dns', 'tcp'] + (['tls'] if self.settings.ssl else [])
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as e:
            self.add(FAIL, 'dns', 'cannot resolve {!r}: {}'.format(
                host, getattr(e, 'strerror', None) or e))
            self.skip(names[1:], 'dns failed for {}'.format(host))
            return False
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        self.add(OK, 'dns', '{} -> {}'.format(host, ', '.join(addresses)))
        started = time.perf_counter()
        try:
            sock = socket.create_connection((host, port), self.timeout)
        except OSError as e:
            self.add(FAIL, 'tcp', _tcp_failure(host, port, e, self.timeout))
            self.skip(names[2:], 'tcp failed for {}:{}'.format(host, port))
            return False
        with sock:
            self.add(OK, 'tcp', 'connected to {}:{} in {:.1f} ms'.format(
                host, port, (time.perf_counter() - started) * 1000))
            return not self.settings.ssl or self.tls(sock, host, port)

    def tls(self, sock: socket.socket, host: str, port: int) -> bool:
        options = self.settings.ssl_options
        server_name = options.get('server_hostname') or host
        try:
            context = self.settings.ssl_context()
            with context.wrap_socket(sock, server_hostname=server_name) as tls:
                version = tls.version()
        except ssl.SSLCertVerificationError as e:
            return self.add(FAIL, 'tls', 'certificate of {} not trusted: {}: '
                            'set ssl_options.ca_file to the CA that signed it'
                            .format(server_name, e.verify_message))
        except (ssl.SSLError, OSError) as e:
            return self.add(FAIL, 'tls', 'TLS handshake with {}:{} failed: {}: '
                            'does the port speak TLS (usually 5671)?'.format(
                                host, port, getattr(e, 'reason', None) or e))
        verified = ('certificate verified for {!r}'.format(server_name)
                    if context.verify_mode == ssl.CERT_REQUIRED else
                    'certificate NOT verified (ssl_options.verify is false)')
        return self.add(OK, 'tls', '{}, {}'.format(version, verified))

    # -- auth, vhost, declare (through the library) ----------------------
    def login(self, host: str, port: int) -> _Outcome:
        s = self.settings
        try:
            with RPCProducer(**dict(self.config, queue=None, routing_key=None)):
                pass
        except CommunicationError as e:
            if e.http_code == 403 and _WRONG_PASSWORD not in str(e.reason):
                self.add(OK, 'auth', 'user {!r} logged in'.format(s.user))
                self.add(FAIL, 'vhost', e.reason)
                return 'vhost'
            self.add(FAIL, 'auth', e.reason)
            return 'auth'
        self.add(OK, 'auth', 'user {!r} logged in'.format(s.user))
        self.add(OK, 'vhost', 'vhost {!r} opened'.format(s.vhost))
        return True

    def declare(self, host: str, port: int) -> _Outcome:
        s = self.settings
        if not s.queue:
            return self.declare_temporary(host, port)
        try:
            with AsynchronProducer(**self.config):
                pass
        except ConfigurationError as e:
            self.add(FAIL, 'declare', str(e))
            return 'declare'
        except CommunicationError as e:
            hint = (': the user needs configure permission on it'
                    if e.http_code == 403 else '')
            self.add(FAIL, 'declare', '{}{}'.format(e.reason, hint))
            return 'declare'
        self.add(OK, 'declare', 'queue {!r} ({}, {})'.format(
            s.queue, 'durable' if s.durable else 'transient', s.queue_type))
        return True

    def declare_temporary(self, host: str, port: int) -> _Outcome:
        """No queue configured: declare a server-named exclusive queue.

        The broker deletes it when its connection closes, at the end of this
        step, so the check leaves nothing behind.
        """
        s = self.settings
        endpoint = _endpoint(s, host, port)
        try:
            connection = pika.BlockingConnection(
                _parameters(s, host, port, self.timeout))
            with contextlib.closing(connection):
                declared = connection.channel().queue_declare('', exclusive=True)
        except (pe.AMQPError, OSError) as e:
            self.add(FAIL, 'declare', 'temporary queue: {}'.format(
                _amqp_failure(e, endpoint)))
            return 'declare'
        self.add(OK, 'declare', 'temporary queue {!r}, deleted again (no '
                 'queue configured; --queue NAME checks yours)'.format(
                     declared.method.queue))
        return True

    # -- publish, consume (pika: exclusive probe queue) ------------------
    def round_trip(self, host: str, port: int) -> _Outcome:
        s = self.settings
        endpoint = _endpoint(s, host, port)
        probe = '{}.check-{}'.format(s.queue or 'occo-comm', uuid.uuid4().hex)
        try:
            connection = pika.BlockingConnection(
                _parameters(s, host, port, self.timeout))
        except (pe.AMQPError, OSError) as e:
            self.add(FAIL, 'publish', translate_error(e, endpoint).reason)
            return 'publish'
        with contextlib.closing(connection):
            return self._probe(connection, probe, endpoint)

    def _probe(self, connection: pika.BlockingConnection, probe: str,
               endpoint: str) -> _Outcome:
        body = uuid.uuid4().hex.encode('ascii')
        started = time.perf_counter()
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.queue_declare(probe, exclusive=True, auto_delete=True)
            channel.basic_publish('', probe, body, pika.BasicProperties(
                content_type='application/octet-stream'), mandatory=True)
        except (pe.AMQPError, OSError) as e:
            self.add(FAIL, 'publish', 'probe to {!r}: {}'.format(
                probe, _amqp_failure(e, endpoint)))
            return 'publish'
        self.add(OK, 'publish', 'probe confirmed by the broker, temporary '
                 'queue {!r}'.format(probe))
        try:
            received = None
            for method, _, data in channel.consume(
                    probe, inactivity_timeout=self.timeout):
                if method is not None:
                    channel.basic_ack(cast(int, method.delivery_tag))
                    received = data
                break
            channel.cancel()
        except (pe.AMQPError, OSError) as e:
            self.add(FAIL, 'consume', _amqp_failure(e, endpoint))
            return 'consume'
        if received != body:
            self.add(FAIL, 'consume', 'probe did not come back within {} s'
                     .format(self.timeout))
            return 'consume'
        self.add(OK, 'consume', 'probe received back after {:.1f} ms'.format(
            (time.perf_counter() - started) * 1000))
        return True


def _endpoint(settings: Settings, host: str, port: int) -> str:
    """Who connects where, as error messages name it (no password)."""
    return "user {!r} at {}:{}, vhost {!r}".format(
        settings.user, host, port, settings.vhost)


def _tcp_failure(host: str, port: int, error: OSError, timeout: float) -> str:
    where = '{}:{}'.format(host, port)
    if isinstance(error, ConnectionRefusedError):
        return ('connection refused by {}: is the broker running, and is '
                '{} its AMQP port?'.format(where, port))
    if isinstance(error, (socket.timeout, TimeoutError)):
        return ('no answer from {} within {} s: wrong address, or a '
                'firewall drops the packets'.format(where, timeout))
    return 'cannot connect to {}: {}'.format(where, error.strerror or error)


def _amqp_failure(error: BaseException, endpoint: str) -> str:
    if isinstance(error, pe.ChannelClosedByBroker):
        hint = (': check the user\'s permissions on the vhost'
                if error.reply_code == 403 else '')
        return '{} {}{}'.format(error.reply_code, error.reply_text, hint)
    if isinstance(error, pe.UnroutableError):
        return 'the broker could not route it'
    if isinstance(error, pe.NackError):
        return 'the broker refused it (nack)'
    return str(translate_error(error, endpoint).reason)


def _parameters(settings: Settings, host: str, port: int,
                timeout: float) -> pika.ConnectionParameters:
    ssl_options = None
    if settings.ssl:
        ssl_options = pika.SSLOptions(
            settings.ssl_context(),
            settings.ssl_options.get('server_hostname') or host)
    return pika.ConnectionParameters(
        host=host, port=port, virtual_host=settings.vhost,
        credentials=pika.PlainCredentials(settings.user, settings.password),
        ssl_options=ssl_options, connection_attempts=1, socket_timeout=timeout,
        stack_timeout=timeout, blocked_connection_timeout=timeout,
        client_properties={'connection_name': 'occo-comm'})


def delete_queues(config: Mapping[str, Any], names: list[str],
                  timeout: float = 5.0) -> None:
    """Delete the queues ``names`` from the broker ``config`` points to.

    Best effort: a failure is logged, not raised. Does nothing for another
    protocol than ``amqp``.

    :param config: the configuration of the ``amqp`` backend.
    :param names: queue names.
    """
    if config.get('protocol') != 'amqp' or not names:
        return
    settings = Settings(config)
    host, port = settings.hosts[0]
    try:
        connection = pika.BlockingConnection(
            _parameters(settings, host, port, timeout))
        with contextlib.closing(connection):
            channel = connection.channel()
            for name in names:
                channel.queue_delete(name)
    except (pe.AMQPError, OSError) as e:
        log.warning('Cannot delete the queue(s) %s: %s', ', '.join(names),
                    translate_error(e, settings.endpoint).reason)

