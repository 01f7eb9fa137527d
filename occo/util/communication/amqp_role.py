# SPDX-License-Identifier: Apache-2.0
"""What the three AMQP classes share: connecting, with retries, and reconnecting.

``AmqpRole`` turns :class:`~occo.util.communication.settings.Settings`
into pika connection parameters (one per host, TLS included), opens an
:class:`~occo.util.communication.amqp_loop.AmqpLoop` trying each host in
turn for ``connection_attempts`` rounds spaced by ``retry_delay`` (doubling,
at most :data:`MAX_RETRY_DELAY`), and replaces a dead loop, logging each loss
once at WARNING and each reconnect at INFO with its duration.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional

import pika
import pika.channel

from ..exceptions import CommunicationError, ConfigurationError
from ..exceptions import CriticalError, TransientError
from . import codec
from .amqp_frames import MAX_SHORTSTR, shortstr
from .amqp_loop import AmqpLoop, Step
from .comm import warn_unknown_keys
from .failures import UNSTABLE_WITHIN, Backoff, CoalescedLog, pause
from .settings import Settings

__all__ = ['AmqpRole', 'MAX_RETRY_DELAY', 'CLUSTER_SETTLE']

log = logging.getLogger(__name__)

#: Longest pause between two connection attempts, in seconds.
MAX_RETRY_DELAY = 5.0
#: With several hosts (a cluster), seconds to wait at least before the first
#: reconnect after a loss, so that the cluster notices the lost node and
#: elects new queue leaders first: RabbitMQ 3.10 silently drops the
#: unconfirmed messages a channel publishes to a quorum queue when it opened
#: before that (measured: a channel opened at once lost every message; one
#: opened 0.5 s later none).
CLUSTER_SETTLE = 1.0
#: Longest wait between two looks at a cancel event or a pending count, in
#: seconds, where nothing else wakes the waiting thread.
POLL_INTERVAL = 0.25


#: Numbers the role objects, per kind, for thread names.
_numbers: dict[str, itertools.count[int]] = {}
_numbers_lock = threading.Lock()


class AmqpRole:
    """Connection handling shared by the three AMQP classes.

    Ownership: ``_loop`` is replaced only by the thread that reconnects
    (producers: the caller holding ``_reconnecting``; the consumer: the
    consuming thread); other threads read it. ``_on_lost`` runs with the
    dying loop's turn held and must compare the loop it is given with
    ``_loop``: a loop that is not the current one died too late to matter.
    """

    #: How thread names call this role (``occo-amqp-io-<kind>-<n>``).
    _kind = 'role'
    #: The current loop (see the class docstring).
    _loop: Optional[AmqpLoop] = None
    #: The last lost loop whose loss was logged (reconnecting thread).
    _reported_loss: Optional[AmqpLoop] = None
    #: Losses in a row of loops that died within UNSTABLE_WITHIN seconds of
    #: opening (reconnecting thread): from the second on, reconnects back off.
    _quick_losses = 0
    #: Hook run after each batch of operations (see AmqpLoop).
    _after_drain: Optional[Callable[[pika.channel.Channel], None]] = None
    #: ``_setup(channel, done)``, run by the I/O thread on a new channel
    #: (see AmqpLoop); each class defines it.
    _setup: Callable[[pika.channel.Channel, Callable[[], None]], None]

    def _configure(self, config: Mapping[str, Any]) -> None:
        warn_unknown_keys(config)
        self.settings = Settings(config)
        self._ids = itertools.count(1)
        with _numbers_lock:
            counter = _numbers.setdefault(self._kind, itertools.count(1))
            self._name = '{}-{}'.format(self._kind, next(counter))
        #: Held by the one thread that replaces a dead loop, never while
        #: waiting for a reply or holding another of this object's locks.
        self._reconnecting = threading.Lock()
        #: Spaces reconnects after connections that failed soon after
        #: opening (thread-safe).
        self._reconnect_backoff = Backoff(max(self.settings.retry_delay, 0.1),
                                          MAX_RETRY_DELAY)
        #: One warning line per kind of loss and interval (thread-safe).
        self._loss_log = CoalescedLog(log)
        self._id_prefix = '{:x}.{:x}.'.format(os.getpid(), id(self))

    def __repr__(self) -> str:
        s = self.settings
        return '<{} amqp://{}@{}:{}/{} queue={!r}>'.format(
            type(self).__name__, s.user, s.host, s.port, s.vhost, s.queue)

    def _parameters(self) -> list[pika.ConnectionParameters]:
        """One :class:`pika.ConnectionParameters` per host, in trying order."""
        s = self.settings
        hosts = list(s.hosts)
        if s.host_selection == 'shuffle':
            random.shuffle(hosts)
        credentials = pika.PlainCredentials(s.user, s.password)
        name = '{} pid {}'.format(type(self).__name__, os.getpid())
        return [pika.ConnectionParameters(
            host=host, port=port, virtual_host=s.vhost, credentials=credentials,
            heartbeat=s.heartbeat, connection_attempts=1,
            socket_timeout=s.connect_timeout, stack_timeout=s.connect_timeout,
            ssl_options=pika.SSLOptions(s.ssl_context(), s.ssl_options.get(
                'server_hostname') or host) if s.ssl else None,
            client_properties={'connection_name': name})
            for host, port in hosts]

    def _connect(self, cancel_event: Optional[threading.Event] = None) -> AmqpLoop:
        """Open a new loop: each host in turn, ``connection_attempts`` rounds
        spaced by ``retry_delay`` doubling, with jitter.

        :raises CommunicationError: with the cause of the last failure;
            a :class:`~occo.util.exceptions.CriticalError` (wrong password,
            no such vhost, the queue exists with other arguments) at once,
            without trying again.
        """
        s = self.settings
        backoff = Backoff(s.retry_delay, MAX_RETRY_DELAY)
        error: Optional[CommunicationError] = None
        for attempt in range(1, s.connection_attempts + 1):
            if attempt > 1 and pause(backoff.next_delay(), cancel_event):
                break
            for parameters in self._parameters():
                endpoint = "user {!r} at {}:{}, vhost {!r}".format(
                    s.user, parameters.host, parameters.port, s.vhost)
                loop = AmqpLoop(parameters, endpoint, self._setup,
                                self._on_lost, self._after_drain, self._name)
                try:
                    loop.start(s.connect_timeout)
                except CriticalError:
                    raise
                except CommunicationError as e:
                    error = e
                    log.debug('Cannot connect (attempt %d): %s', attempt, e)
                else:
                    self._loop = loop
                    return loop
        assert error is not None  # every host was tried and failed
        raise error

    def _reconnect(self, cancel_event: Optional[threading.Event] = None) -> AmqpLoop:
        """Replace a dead loop with a new one; log the cause once.

        The first reconnect after a loss is immediate. When loops keep dying
        within :data:`~.failures.UNSTABLE_WITHIN` seconds of opening, each
        further reconnect waits a backoff first (doubling, with jitter), so
        that a connection that opens fine and fails again at once does not
        turn into a reconnect loop.
        """
        lost = self._loop
        assert lost is not None  # only an opened object reconnects
        if lost is not self._reported_loss:
            self._reported_loss = lost
            lost.stop(timeout=2)
            self._loss_log.warning('loss', 'Reconnecting to %s after: %s',
                                   self.settings.endpoint, lost.error)
            self._quick_losses = self._quick_losses + 1 if _unstable(lost) else 0
            if len(self.settings.hosts) > 1:
                delay = random.uniform(1, 1.5) * CLUSTER_SETTLE
                if pause(delay, cancel_event):
                    raise TransientError(503, 'cancelled while reconnecting '
                                         'to {}'.format(self.settings.endpoint))
        if self._quick_losses >= 2:   # the last reconnect did not hold either
            if pause(self._reconnect_backoff.next_delay(), cancel_event):
                raise TransientError(503, 'cancelled while reconnecting to '
                                     '{}'.format(self.settings.endpoint))
        else:
            self._reconnect_backoff.reset()
        loop = self._connect(cancel_event)
        log.info('Reconnected to %s %.2f s after the connection was lost',
                 loop.endpoint, time.monotonic() - (lost.failed_at or time.monotonic()))
        return loop

    def _open_loop(self, cancel_event: Optional[threading.Event] = None) -> AmqpLoop:
        """The current loop if it is alive, else a new one: the first thread
        to find it dead reconnects, the others wait for it and share the
        result."""
        loop = self._loop
        assert loop is not None  # opened
        if loop.alive:
            return loop
        with self._reconnecting:
            if self._loop is not loop and self._loop is not None and self._loop.alive:
                return self._loop
            return self._reconnect(cancel_event)

    def _open(self) -> None:
        """Connect; a queue that exists with other arguments than configured
        is a :class:`~occo.util.exceptions.ConfigurationError`."""
        try:
            self._connect()
        except CriticalError as e:
            if e.http_code == 406:
                raise ConfigurationError(
                    'queue {!r} exists with other arguments than configured: '
                    '{}'.format(self.settings.queue, e.reason)) from e
            raise

    def _close(self) -> None:
        if self._loop is not None:
            self._loop.stop()

    def _on_lost(self, loop: AmqpLoop, error: CommunicationError) -> None:
        """``loop`` died of ``error`` (its turn held); see the class docs."""

    def _declare_steps(self, channel: pika.channel.Channel,
                       names: Iterable[Optional[str]]) -> list[Step]:
        durable = self.settings.durable
        arguments = self.settings.queue_arguments()
        return [functools.partial(_declare, channel, name, durable, arguments)
                for name in names if name]

    def _check_size(self, body: bytes) -> None:
        codec.check_size(body, self.settings.max_message_size)

    def _telemetry_peer(self) -> dict[str, Any]:
        """The broker as telemetry attributes name it."""
        return {'server_address': self.settings.host,
                'server_port': self.settings.port}

    def _next_id(self) -> str:
        return self._id_prefix + str(next(self._ids))

    def _target(self, routing_key: Optional[str]) -> str:
        """The routing key of one message: the call's, else the configured."""
        target = routing_key or self.settings.routing_key
        if target is None:
            raise ConfigurationError(
                "missing configuration key 'routing_key' (or 'queue'): "
                "where should the message go?")
        if len(target) > MAX_SHORTSTR // 4:   # may be too long in UTF-8
            shortstr(target, 'routing key')   # raises in the caller's thread
        return target


def _unstable(loop: AmqpLoop) -> bool:
    """Whether ``loop`` failed within :data:`~.failures.UNSTABLE_WITHIN`
    seconds of opening."""
    opened, failed = loop.opened_at, loop.failed_at
    return (opened is not None and failed is not None
            and failed - opened < UNSTABLE_WITHIN)


def _declare(channel: pika.channel.Channel, name: str, durable: bool,
             arguments: Optional[dict[str, Any]], done: Callable[..., None]) -> None:
    channel.queue_declare(name, durable=durable, arguments=arguments,
                          callback=done)
