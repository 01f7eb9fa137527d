# SPDX-License-Identifier: Apache-2.0
"""What happens on each kind of failure: one table, and the code that reads it.

Every failure the wire, the broker or the socket can produce has exactly one
outcome: it is raised at once to the call that caused it (permanent), the
library reconnects or republishes with backoff a bounded number of times
(transient), or the message is rejected without requeue and the consumer goes
on (poison). :data:`OUTCOMES` lists them; ``docs/reliability.rst`` shows it,
and ``tests/test_failures.py`` has a test per row.

Two rules decide the rest of the code:

* :func:`translate_error` turns whatever pika or the socket raised into this
  package's :class:`~occo.util.exceptions.CommunicationError`, through the
  table :data:`BROKER_REPLY_CODES` for what the broker said;
* :func:`is_permanent` tells whether a translated error is worth another
  connection: a :class:`~occo.util.exceptions.CriticalError` is not, so no
  role ever reconnects in a loop on it.

:class:`Backoff` spaces reconnects that fail again soon after they opened,
and :class:`CoalescedLog` keeps a repeated warning to one line per interval.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import NamedTuple, Optional, Union

import pika.exceptions as pe
from pika.adapters.utils import connection_workflow as workflow

from ..exceptions import CommunicationError, CriticalError, TransientError

__all__ = ['Outcome', 'OUTCOMES', 'BROKER_REPLY_CODES', 'translate_error',
           'is_permanent', 'Backoff', 'CoalescedLog', 'render_outcomes']


class Outcome(NamedTuple):
    """One row of the failure table."""

    #: What failed: what the wire brought, what the broker said, what the
    #: socket did.
    kind: str
    #: What the caller gets (exception and ``http_code``), or ``-``.
    raised: str
    #: What the library does about it.
    action: str
    #: What it logs.
    logged: str


#: The outcome of every kind of failure, on both backends unless a row says
#: ``amqp``.
OUTCOMES: tuple[Outcome, ...] = (
    Outcome('bad setting (type, range, unknown protocol)',
            'ConfigurationError at construction', 'nothing is opened',
            'nothing'),
    Outcome('use after ``close()`` (or the ``with`` block)', 'ClosedError',
            '(none)', 'nothing'),
    Outcome('message not JSON-able', 'TypeError at push_message',
            'nothing is sent', 'nothing'),
    Outcome('message over ``max_message_size``', 'CriticalError 413 at '
            'push_message', 'nothing is sent', 'nothing'),
    Outcome('amqp: host unknown, connection refused, connect timeout',
            'TransientError 503/504 after ``connection_attempts`` rounds',
            'tries every host, rounds spaced by ``retry_delay`` doubling '
            'with jitter, at most 5 s', 'DEBUG per attempt'),
    Outcome('amqp: wrong user or password; vhost missing or forbidden',
            'CriticalError 403', 'raised at once, no retry', 'nothing'),
    Outcome('amqp: connection lost (socket error, heartbeat timeout, broker '
            'restart, broker closed the connection with a 3xx or 5xx code)',
            'TransientError 503 to an RPC call waiting (it may or may not '
            'have been processed)',
            'producers reconnect on the next call, consumers at once; '
            'unconfirmed messages are published again; a connection that '
            'fails again within 2 s waits a backoff first (doubling, '
            'jitter, at most 5 s)',
            'WARNING once per loss with the cause, INFO per reconnect; '
            'repeats coalesced'),
    Outcome('amqp: broker closed the channel: 403 access refused, 404 no '
            'such exchange, 406 precondition failed, 530 not allowed',
            'CriticalError with the broker\'s code and text, to the calls on '
            'that channel (unconfirmed messages: at the next push_message '
            'or flush, with their number)',
            'not republished, no reconnect loop: the next call reconnects '
            'once', 'nothing (the error says it)'),
    Outcome('queue exists with other arguments (at open)',
            'ConfigurationError naming the queue and the broker\'s text',
            'nothing is opened', 'nothing'),
    Outcome('routing key that no queue takes', 'CriticalError 404: at once '
            'for RPC, at flush for AsynchronProducer',
            'only the configured ``queue`` is ever declared', 'nothing'),
    Outcome('amqp: message nacked (queue full with x-overflow '
            'reject-publish, quorum queue without a leader)',
            'TransientError 503 at flush naming how many and why',
            'published again up to 10 times over 6 to 11 s (backoff 0.05 s '
            'doubling, jitter, at most 2 s)', 'one WARNING per episode, '
            'coalesced'),
    Outcome('confirms missing at flush', 'TransientError 504 naming how many',
            '(none)', 'nothing'),
    Outcome('RPC: no reply in time', 'RPCTimeoutError 504', 'the request '
            'expires in its queue', 'nothing'),
    Outcome('RPC: producer closed while a call waits', 'TransientError 503',
            '(none)', 'nothing'),
    Outcome('RPC: malformed reply', 'CriticalError 502', '(none)', 'nothing'),
    Outcome('RPC: reply for a call that does not wait for it',
            '(none)', 'dropped; correlation ids are unguessable',
            'WARNING, coalesced'),
    Outcome('RPC: remote processor raised', 'ApplicationError', '(none)',
            'ERROR with traceback at the consumer'),
    Outcome('RPC: processor returned Response 4xx / 5xx',
            'CriticalError / TransientError with that code', '(none)', 'nothing'),
    Outcome('consumed message undecodable, unsafe, nested deeper than '
            '``MAX_DEPTH``, YAML expanding beyond ``max_message_size``, a '
            'property that is not UTF-8', '400 error reply to an RPC caller',
            'rejected without requeue (dead-lettered where configured), '
            'consumer goes on', 'WARNING naming the message id, never the '
            'body; at most 10 a second per consumer, then a count'),
    Outcome('consumed message over ``max_message_size``',
            '413 error reply to an RPC caller',
            'rejected without requeue, consumer goes on', 'WARNING, as above'),
    Outcome('RPC request whose ``reply_to`` cannot be answered',
            '(none)', 'rejected without requeue, unprocessed', 'WARNING'),
    Outcome('one-way message whose processor raised', '(none)',
            'rejected without requeue (dead-lettered where configured)',
            'ERROR with traceback'),
    Outcome('amqp: the broker cancelled the consumer (queue deleted)',
            'CommunicationError from start_consuming if the queue cannot be '
            'declared again', 'declares the queue again and resumes',
            'WARNING'),
)


def render_outcomes() -> str:
    """:data:`OUTCOMES` as a reST list table (for the docs)."""
    lines = ['.. list-table::', '   :header-rows: 1', '   :widths: 25 25 30 20',
             '', '   * - failure', '     - the caller gets', '     - the library',
             '     - log']
    for row in OUTCOMES:
        lines.append('   * - ' + row.kind)
        lines.extend('     - ' + cell for cell in row[1:])
    return '\n'.join(lines)


#: What the broker's ``connection.close`` or ``channel.close`` reply codes
#: mean: ``code -> (permanent, http_code, wording)``. Codes not listed are
#: transient (the connection is reopened).
BROKER_REPLY_CODES: dict[int, tuple[bool, int, str]] = {
    403: (True, 403, 'access refused for {endpoint}: {text}'),
    404: (True, 404, '{text} ({endpoint})'),
    405: (True, 405, 'resource locked for {endpoint}: {text}'),
    406: (True, 406, 'precondition failed for {endpoint}: {text}'),
    530: (True, 403, 'not allowed for {endpoint}: {text} (AMQP 530)'),
}


def translate_error(error: BaseException, endpoint: str) -> CommunicationError:
    """Map a pika or socket error to a :class:`~occo.util.exceptions.CommunicationError`.

    The message names the user, host, port and vhost (``endpoint``) and,
    where the broker said so, the resource; never the password.

    :param error: the exception pika reported.
    :param endpoint: text naming the peer, e.g.
        ``"user 'guest' at 127.0.0.1:5672, vhost '/'"``.
    """
    if isinstance(error, CommunicationError):
        return error
    cause = _unwrap(error)
    if cause is not error:
        return translate_error(cause, endpoint)
    if isinstance(error, (pe.ConnectionClosedByBroker, pe.ChannelClosedByBroker)):
        return _broker_closed(error, endpoint)
    for kinds, make in _SOCKET_AND_PIKA:
        if isinstance(error, kinds):
            return make(error, endpoint)
    return TransientError(503, 'communication with {} failed: {}: {}'.format(
        endpoint, type(error).__name__, error))


def _unwrap(error: BaseException) -> BaseException:
    """The error a pika connection-workflow wrapper carries, else ``error``."""
    if isinstance(error, workflow.AMQPConnectionWorkflowFailed) and error.exceptions:
        return error.exceptions[-1]
    if isinstance(error, workflow.AMQPConnectorPhaseErrorBase):
        return error.exception
    if (isinstance(error, pe.AMQPConnectionError) and error.args
            and isinstance(error.args[0], BaseException)):
        return error.args[0]
    return error


def _broker_closed(
        error: Union[pe.ConnectionClosedByBroker, pe.ChannelClosedByBroker],
        endpoint: str) -> CommunicationError:
    code, text = error.reply_code, error.reply_text
    known = BROKER_REPLY_CODES.get(code)
    if known is None:
        return TransientError(503, 'the broker closed the connection of {}: '
                              '{} {}'.format(endpoint, code, text))
    _, http_code, wording = known
    return CriticalError(http_code, wording.format(endpoint=endpoint, text=text))


#: Builds the error for one row of :data:`_SOCKET_AND_PIKA`.
_Maker = Callable[[BaseException, str], CommunicationError]


def _maker(http_code: int, wording: str, critical: bool = False) -> _Maker:
    kind = CriticalError if critical else TransientError

    def make(error: BaseException, endpoint: str) -> CommunicationError:
        detail = getattr(error, 'strerror', None) or error
        return kind(http_code, wording.format(endpoint=endpoint, error=detail))
    return make


#: ``(exception types, maker)``, tried in order after the broker's codes.
_SOCKET_AND_PIKA: tuple[tuple[Union[type[BaseException], tuple[type[BaseException], ...]],
                              _Maker], ...] = (
    (workflow.AMQPConnectorStackTimeout,
     _maker(504, 'timed out connecting to {endpoint}')),
    ((pe.ProbableAuthenticationError, pe.AuthenticationError),
     _maker(403, 'access refused for {endpoint}: wrong user or password', True)),
    (pe.ProbableAccessDeniedError,
     _maker(403, 'access refused for {endpoint}: the vhost does not exist or '
            'the user may not use it', True)),
    (socket.gaierror,
     _maker(503, 'cannot resolve the host of {endpoint}: {error}')),
    (ConnectionRefusedError,
     _maker(503, 'connection refused by {endpoint}: is the broker running?')),
    ((socket.timeout, TimeoutError),
     _maker(504, 'timed out connecting to {endpoint}')),
    (pe.AMQPHeartbeatTimeout, _maker(503, 'heartbeat timeout on {endpoint}')),
    ((pe.StreamLostError, OSError),
     _maker(503, 'connection to {endpoint} lost: {error}')),
    ((pe.ConnectionClosedByClient, pe.ChannelClosedByClient),
     _maker(503, 'connection to {endpoint} closed')),
)


def is_permanent(error: CommunicationError) -> bool:
    """Whether repeating what failed cannot help (a 4xx): then the error is
    raised to the caller and the library does not reconnect on its own."""
    return isinstance(error, CriticalError)


#: A connection that dies within this many seconds after it opened counts as
#: failing again at once: the next reconnect waits a backoff first.
UNSTABLE_WITHIN = 2.0


class Backoff:
    """Delays between attempts: ``first`` doubling up to ``maximum``, with
    jitter (each delay is drawn from its upper half), so that many clients
    that lost the same broker do not come back in step.

    Thread-safe: :meth:`next_delay` and :meth:`reset` take a lock.
    """

    def __init__(self, first: float, maximum: float) -> None:
        self._first = first
        self._maximum = maximum
        self._lock = threading.Lock()
        #: Delays handed out since the last reset (``_lock``).
        self._count = 0

    def next_delay(self) -> float:
        """The next delay in seconds."""
        with self._lock:
            ceiling = min(self._maximum, self._first * 2 ** min(self._count, 30))
            self._count += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Start again from ``first``."""
        with self._lock:
            self._count = 0


class CoalescedLog:
    """Logs at most ``burst`` warnings per key every ``interval`` seconds;
    the next line logged after that says how many were left out.

    Thread-safe. ``key`` groups warnings that say the same thing with other
    details (another message id, another count).
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0,
                 burst: int = 1) -> None:
        self._logger = logger
        self._interval = interval
        self._burst = burst
        self._lock = threading.Lock()
        #: key -> (start of its interval, lines logged in it, lines left
        #: out since the last one logged) (_lock).
        self._seen: dict[str, tuple[float, int, int]] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        """Log ``message % args`` at WARNING, unless ``key`` had its
        ``burst`` of lines in the current interval (then count it)."""
        now = time.monotonic()
        with self._lock:
            start, logged, left_out = self._seen.get(key, (now, 0, 0))
            if now - start >= self._interval:
                start, logged = now, 0
            if logged >= self._burst:
                self._seen[key] = (start, logged, left_out + 1)
                return
            self._seen[key] = (start, logged + 1, 0)
        if left_out:
            message += ' (%d more like it were not logged)'
            args += (left_out,)
        self._logger.warning(message, *args, stacklevel=2)


def pause(seconds: float, cancel_event: Optional[threading.Event]) -> bool:
    """Sleep ``seconds``; return ``True`` early if ``cancel_event`` is set."""
    if cancel_event is None:
        time.sleep(seconds)
        return False
    return cancel_event.wait(seconds)


__doc__ = (__doc__ or '') + '\nThe failure table\n-----------------\n\n' + render_outcomes() + '\n'
