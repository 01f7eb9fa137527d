# SPDX-License-Identifier: Apache-2.0
"""The abstract communication roles, their backend registry, and responses.

Three roles let OCCO components talk to each other:

* :class:`AsynchronProducer` sends messages and does not wait for an answer;
* :class:`RPCProducer` sends a message and returns the remote result;
* :class:`EventDrivenConsumer` calls a processor for each message it receives.

Each role is abstract. Constructing one reads the ``protocol`` keyword and
returns an instance of the backend class registered for it (an *abstract
factory* in ``__new__``)::

    prod = AsynchronProducer(protocol='amqp', host='127.0.0.1', queue='test')
    type(prod)   # occo.util.communication.mq.MQAsynchronProducer

Backends register with :func:`register`. Every object is a context manager
around its connection: ``__enter__`` connects and returns the object,
``__exit__`` closes it, also when the body raised.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import difflib
import itertools
import logging
import signal
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from types import FrameType, TracebackType
from typing import Any, Optional, TypeVar, Union

from ..exceptions import ClosedError, ConfigurationError
from ..exceptions import CriticalError, TransientError
from ..factory import MultiBackend, backends, has_backend, register

__all__ = [
    'AsynchronProducer', 'RPCProducer', 'EventDrivenConsumer', 'register',
    'has_backend', 'backends', 'Response', 'ExceptionResponse', 'KNOWN_KEYS',
    'Message',
]

log = logging.getLogger(__name__)

#: A message, or an RPC result: a JSON-able value, a ``str`` or ``bytes``
#: (see :mod:`~occo.util.communication.codec`). It is ``Any`` because no
#: static type spells "JSON-able"; what cannot be sent is refused at run time.
Message = Any

#: Every configuration key some backend understands. A key outside this set
#: does not break construction; it is logged once as a warning that suggests
#: the nearest known key (``exhange`` -> ``exchange``).
KNOWN_KEYS = frozenset([
    'protocol', 'url', 'host', 'host_selection', 'port', 'vhost', 'user',
    'password', 'ssl', 'ssl_options', 'exchange', 'routing_key', 'queue',
    'durable', 'queue_type', 'delivery_limit', 'heartbeat', 'prefetch_count',
    'rpc_timeout', 'confirm', 'confirm_timeout', 'max_in_flight', 'max_in_flight_bytes',
    'rpc_max_in_flight',
    'connection_attempts', 'retry_delay', 'connect_timeout',
    'dead_letter_exchange', 'max_message_size',
    'max_workers', 'shutdown_grace',
])

_warned_keys: set[str] = set()
_warned_lock = threading.Lock()


def warn_unknown_keys(config: Mapping[str, Any]) -> None:
    """Log each configuration key that no backend knows, once per process.

    :param config: the keyword arguments given to a role.
    """
    for key in config:
        if key in KNOWN_KEYS:
            continue
        with _warned_lock:
            if key in _warned_keys:
                continue
            _warned_keys.add(key)
        close = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1)
        hint = ' (did you mean {!r}?)'.format(close[0]) if close else ''
        log.warning('Ignoring unknown configuration key %r%s', key, hint)


class _Role(MultiBackend, abstract=False):
    """Common base of the three roles: backend dispatch and resource state."""

    entry_point_group = 'occo.communication.backends'

    # -- resource state -------------------------------------------------
    #: ``_opened``, ``_closed`` and ``_opened_on_use`` change only under
    #: ``_lifecycle``; the fast path of :meth:`_check_open` reads the first
    #: two without it (a stale read only sends it to the locked path).
    _opened = False
    _closed = False
    #: Set when a call outside a ``with`` block opened the object.
    _opened_on_use = False
    #: Per object, made by ``__new__``: guards the state above.
    _lifecycle: threading.RLock
    #: The exit hook of an object opened on use (``_lifecycle``).
    _close_at_exit: _CloseAtExit

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        role = super().__new__(cls, *args, **kwargs)
        role._lifecycle = threading.RLock()
        return role

    def __enter__(self: _RoleT) -> _RoleT:
        self.open()
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    def open(self) -> None:
        """Connect. Called by ``__enter__``; a second call does nothing.

        :raises CommunicationError: when the connection cannot be made.
        :raises ClosedError: when the object was closed already.
        """
        with self._lifecycle:
            if self._closed:
                raise ClosedError('{} is closed; create a new one'.format(
                    type(self).__name__))
            if not self._opened:
                self._open()
                self._opened = True

    def close(self) -> None:
        """Release the connection. Safe to call several times."""
        with self._lifecycle:
            if self._opened_on_use:
                atexit.unregister(self._close_at_exit)
            if self._opened and not self._closed:
                try:
                    self._close()
                finally:
                    self._closed = True
            self._closed = True

    def _check_open(self) -> None:
        """Make sure the object is connected before it is used.

        Outside a ``with`` block, as the original code used the roles, the
        first call connects, and the connection stays open until
        ``close()`` (or the end of the program, which closes it: an
        asynchronous producer waits there for its confirms).

        :raises ClosedError: after ``close()``.
        """
        if self._opened and not self._closed:
            return
        with self._lifecycle:
            if self._closed:
                raise ClosedError(
                    '{} is closed: use it inside its context, "with obj: '
                    'obj.push_message(...)", or create a new one'.format(
                        type(self).__name__))
            if not self._opened:
                self.open()
                self._opened_on_use = True
                self._close_at_exit = _CloseAtExit(self)
                atexit.register(self._close_at_exit)

    def _open(self) -> None:
        """Backend hook: acquire the connection."""

    def _close(self) -> None:
        """Backend hook: release the connection."""


_RoleT = TypeVar('_RoleT', bound=_Role)


class _CloseAtExit:
    """Closes a role opened outside a ``with`` block when the program ends;
    holds it weakly, so it does not keep the object alive."""

    def __init__(self, role: _Role) -> None:
        self._role = weakref.ref(role)

    def __call__(self) -> None:
        role = self._role()
        if role is not None:
            try:
                role.close()
            except Exception as e:   # at exit there is no caller to tell
                log.warning('Closing %s at exit failed: %s', type(role).__name__, e)

#: Entry-point group through which other distributions add backends: the
#: entry point's name is the protocol, its value the module that registers it.
ENTRY_POINT_GROUP = _Role.entry_point_group


class AsynchronProducer(_Role, abstract=True):
    """Sends messages without waiting for an answer.

    Construct it as ``AsynchronProducer(protocol=..., **config)``; the
    protocol selects the backend class.

    ``push_message`` hands the message over. Once :meth:`flush` returns, or
    the ``with`` block exits, every message pushed is the broker's
    responsibility, or an exception said otherwise.
    """

    def push_message(self, message: Message, routing_key: Optional[str] = None,
                     headers: Optional[Mapping[str, Any]] = None) -> None:
        """Send ``message`` (a JSON-able value, ``str`` or ``bytes``).

        :param routing_key: overrides the configured routing key; it must
            name an existing queue (only the configured ``queue`` is
            declared), else :meth:`flush` raises
            :class:`~occo.util.exceptions.CriticalError` (404).
        :param headers: sent with the message; the processor reads them
            from :func:`~.message_context.current_message`. Values: what
            AMQP tables carry (see :mod:`~.message_context`), else
            :class:`TypeError` before anything is sent.
        :raises ClosedError: after ``close()`` (outside a ``with`` block
            the first call connects).
        :raises CommunicationError: when the message cannot be sent.
        """
        raise NotImplementedError

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until every message pushed so far is confirmed.

        :param timeout: seconds to wait at most; ``None`` waits for ever.
        :raises CommunicationError: naming how many messages were not
            confirmed.
        """
        raise NotImplementedError


class RPCProducer(_Role, abstract=True):
    """Sends a message and returns the remote processor's result.

    One object may be shared by several threads: each call gets its own
    answer. One thread may also keep many calls in flight with
    :meth:`submit` (a :class:`~concurrent.futures.Future` per call) or
    :meth:`map` (results in order); see :doc:`/rpc_futures`.
    """

    #: How many calls made with :meth:`submit` (or :meth:`map`) may be in
    #: flight at once, from all threads together: beyond it ``submit``
    #: blocks until one completes, and :meth:`map` keeps this many in
    #: flight. The ``rpc_max_in_flight`` configuration key sets it (64 by
    #: default); ``push_message`` calls are not counted.
    rpc_max_in_flight = 64

    def push_message(self, message: Message, routing_key: Optional[str] = None,
                     timeout: Optional[float] = None,
                     headers: Optional[Mapping[str, Any]] = None) -> Message:
        """Send ``message`` and wait for its result.

        :param routing_key: overrides the configured routing key; it must
            name an existing queue (only the configured ``queue`` is
            declared).
        :param timeout: seconds to wait for the reply; overrides the
            ``rpc_timeout`` key; ``None`` there and here waits for ever.
            The request expires in its queue after that long.
        :param headers: sent with the request, as
            :meth:`AsynchronProducer.push_message` sends them.
        :returns: what the remote processor returned.
        :raises ApplicationError: when the remote processor raised.
        :raises RPCTimeoutError: when no reply came in time.
        :raises CriticalError: on a 4xx response (do not retry); 404 when no
            queue takes the request; 502 for a malformed reply.
        :raises TransientError: on a 5xx response or a transport failure.
        :raises ValueError: when ``timeout`` is not a finite positive number
            of seconds within :data:`~.settings.MAX_RPC_TIMEOUT`.
        """
        raise NotImplementedError

    def submit(self, message: Message, routing_key: Optional[str] = None,
               timeout: Optional[float] = None,
               headers: Optional[Mapping[str, Any]] = None) -> Future[Message]:
        """submit(message, routing_key=None, timeout=None, headers=None)

        Send ``message`` and return at once a future of its result.

        The future's result, or its exception, is exactly what
        :meth:`push_message` with the same arguments would return, or raise
        once the request is sent: the remote result,
        :class:`~occo.util.exceptions.ApplicationError` (also of the remote
        builtin class), a :class:`~occo.util.exceptions.CriticalError` or
        :class:`~occo.util.exceptions.TransientError` response,
        :class:`~occo.util.exceptions.RPCTimeoutError` at the call's
        deadline (whether or not anybody waits on the future), a
        :class:`~occo.util.exceptions.CriticalError` 404 when no queue takes
        the request, a :class:`~occo.util.exceptions.TransientError` "may or
        may not have been processed" when the connection is lost, and a
        :class:`~occo.util.exceptions.TransientError` 503 when the producer
        is closed first. The futures work with
        :func:`concurrent.futures.wait` and
        :func:`concurrent.futures.as_completed`.

        What ``push_message`` raises before anything is sent, ``submit``
        raises itself: an unencodable message, a bad ``timeout`` or
        headers, a message above ``max_message_size``, use after
        ``close()``, a connection that cannot be (re)opened.

        **Backpressure**: at most :attr:`rpc_max_in_flight` calls made with
        ``submit`` are in flight at once; beyond that ``submit`` blocks
        until one completes (or raises
        :class:`~occo.util.exceptions.ClosedError` when the producer is
        closed meanwhile).

        **Cancelling**: the future is running when ``submit`` returns, so
        :meth:`~concurrent.futures.Future.cancel` returns ``False``: the
        broker may have the request already, and nothing can take it back.
        Give the call a ``timeout`` to bound it; a request whose caller gave
        up expires in its queue.

        **Threads**: the future is completed, and its done-callbacks run, in
        the thread that learns the outcome: the thread reading the
        connection (the AMQP I/O thread, or a thread waiting in
        ``push_message``), the memory consumer's thread, the thread calling
        ``close()``, or the producer's deadline thread. Done-callbacks must
        therefore be quick and must not block, nor wait for another call of
        the same producer.

        :param routing_key: as for :meth:`push_message`.
        :param timeout: seconds from now until the call fails with
            :class:`~occo.util.exceptions.RPCTimeoutError`; overrides the
            ``rpc_timeout`` key; ``None`` there and here waits for ever.
            The request expires in its queue after that long.
        :param headers: as for :meth:`push_message`.
        :returns: a future of the result.
        :rtype: concurrent.futures.Future
        :raises ClosedError: after ``close()``, also while waiting for room.

        .. versionadded:: 1.1
        """
        raise NotImplementedError

    def map(self, messages: Iterable[Message], routing_key: Optional[str] = None,
            timeout: Optional[float] = None,
            headers: Optional[Mapping[str, Any]] = None) -> Iterator[Message]:
        """Call the remote processor for each of ``messages``; yield the
        results in order, keeping up to :attr:`rpc_max_in_flight` calls in
        flight, like :meth:`concurrent.futures.Executor.map`.

        The first calls are sent when ``map`` is called, the rest as results
        are taken: the iterator sends the next message before it yields a
        result, so the calls stay in flight while the caller works, and
        ``messages`` may be long or endless.

        Results and errors come in order, as from ``[push_message(m) for m
        in messages]``: the first call that fails raises its exception from
        the iterator, after the results before it, and the iterator ends. A
        message that cannot be sent (what :meth:`submit` raises itself: an
        unencodable message, a bad ``timeout``, a closed producer) fails
        likewise in its place, and no message after it is sent. Calls in
        flight when the iterator ends, or is dropped early, complete on
        their own: nothing can take back a sent request.

        :param timeout: seconds **per call**, as for :meth:`push_message`
            (not a deadline for the whole map, unlike ``Executor.map``):
            each call fails with
            :class:`~occo.util.exceptions.RPCTimeoutError` that long after
            it was sent, and its request expires in its queue after that
            long.
        :param routing_key: as for :meth:`push_message`, for every call.
        :param headers: as for :meth:`push_message`, for every call.
        :returns: an iterator of the results, in the order of ``messages``.

        .. versionadded:: 1.1
        """
        messages = iter(messages)
        in_flight: collections.deque[Future[Message]] = collections.deque()
        sending = self._send_more(in_flight, messages, self.rpc_max_in_flight,
                                  routing_key, timeout, headers)
        return self._results_in_order(in_flight, messages, sending,
                                      routing_key, timeout, headers)

    def _send_more(self, in_flight: collections.deque[Future[Message]],
                   messages: Iterator[Message], count: int,
                   routing_key: Optional[str], timeout: Optional[float],
                   headers: Optional[Mapping[str, Any]]) -> bool:
        """Submit up to ``count`` more of ``messages`` (for :meth:`map`).

        A message that cannot be sent gets a failed future in its place, so
        that its error comes in order.

        :returns: ``False`` once a message could not be sent: send no more.
        """
        for message in itertools.islice(messages, count):
            try:
                future = self.submit(message, routing_key, timeout, headers)
            except Exception as e:   # raised in its place by the iterator
                future = Future()
                future.set_exception(e)
                in_flight.append(future)
                return False
            in_flight.append(future)
        return True

    def _results_in_order(self, in_flight: collections.deque[Future[Message]],
                          messages: Iterator[Message], sending: bool,
                          routing_key: Optional[str], timeout: Optional[float],
                          headers: Optional[Mapping[str, Any]]) -> Iterator[Message]:
        """The iterator of :meth:`map`: wait for the oldest call, send the
        next message, yield the result."""
        while in_flight:
            result = in_flight[0].result()
            in_flight.popleft()
            if sending:
                sending = self._send_more(in_flight, messages, 1, routing_key,
                                          timeout, headers)
            yield result


class EventDrivenConsumer(_Role, abstract=True):
    """Calls ``processor(msg, *pargs, **pkwargs)`` for each message.

    Construct it as ``EventDrivenConsumer(processor, pargs=(), pkwargs=None,
    cancel_event=None, protocol=..., **config)`` (``pargs`` any iterable,
    ``pkwargs`` any mapping). For an RPC message the processor's return value
    (or a :class:`Response`) goes back to the caller. The object is a valid
    ``threading.Thread`` target: calling it runs :meth:`start_consuming`,
    which connects first when the object is used outside a ``with`` block,
    and closes it again when it returns.

    With the ``max_workers`` key above 1 (default 1), up to that many
    messages are processed at once, each in a worker thread of the
    consumer (``occo-worker-<queue>-<n>``), and each is acknowledged, or
    rejected, and answered by its worker when its processor returns, in
    any order. A stop (``cancel_event``, SIGTERM, :meth:`close`) starts no
    new message, gives the running ones up to ``shutdown_grace`` seconds
    (default 30) and puts the others back in the queue; see
    :doc:`/workers`.

    .. versionadded:: 1.1 ``max_workers`` and ``shutdown_grace``.
    """

    def __init__(self, processor: Callable[..., Any], pargs: Iterable[Any] = (),
                 pkwargs: Optional[Mapping[str, Any]] = None,
                 cancel_event: Optional[threading.Event] = None,
                 **config: Any) -> None:
        if not callable(processor):
            raise ConfigurationError(
                'processor must be callable, got {!r}'.format(processor))
        self.processor = processor
        self.pargs = tuple(pargs)
        self.pkwargs = dict(pkwargs or {})
        self.cancel_event = cancel_event or threading.Event()

    def __call__(self) -> None:
        self.start_consuming()

    def start_consuming(self) -> None:
        """Process messages until ``cancel_event`` is set (or Ctrl-C).

        Returns within one second after ``cancel_event`` is set. In the main
        thread, SIGTERM and Ctrl-C end it cleanly too: after SIGTERM the
        message being processed is finished and acknowledged; Ctrl-C
        interrupts it and it stays unacknowledged, so the broker delivers it
        again. Either way the connection is closed by the ``with`` block.

        With ``max_workers`` above 1, ``cancel_event``, SIGTERM and Ctrl-C
        alike stop taking messages at once, put those received but not
        started back in the queue, and wait up to ``shutdown_grace``
        seconds for the running ones, which are acknowledged as they
        finish (a second Ctrl-C stops the wait). A worker still running
        then is logged at ERROR and left to finish; its message stays
        unacknowledged until it does, and goes back to the queue if the
        consumer is closed first.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Stop consuming, then release the connection. Safe to call several
        times, from any thread.

        A :meth:`start_consuming` running in another thread stops (as after
        SIGTERM); with ``max_workers`` above 1, ``close()`` first waits up
        to ``shutdown_grace`` seconds for the running messages (see
        :meth:`start_consuming`), and puts the unstarted ones back in the
        queue.
        """
        self._terminated = True
        self._finish_workers()
        super().close()

    def _finish_workers(self) -> None:
        """Backend hook (``max_workers`` above 1): start no new message, put
        the unstarted ones back in the queue, wait for the running ones
        until the ``shutdown_grace`` deadline of this stop."""

    #: Set by SIGTERM and by :meth:`close`: the consuming loop ends (any
    #: thread writes it; a stale read only delays the stop by one pass).
    _terminated = False

    def _keep_consuming(self) -> bool:
        return not (self._terminated or self.cancel_event.is_set())

    @contextlib.contextmanager
    def _consuming_session(self, name: Optional[str]) -> Iterator[None]:
        """Run the consuming loop: SIGTERM stops it, Ctrl-C ends it quietly."""
        self._terminated = False
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            yield
        except KeyboardInterrupt:
            log.info('Interrupted; stopped consuming %r', name)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if self._opened_on_use:   # start_consuming opened it: close it
                self.close()

    def _on_sigterm(self, signum: int, frame: Optional[FrameType]) -> None:
        log.info('SIGTERM: finishing the running messages, then stopping')
        self._terminated = True


class Response:
    """What a processor may return to choose the status of its reply.

    A 2xx response's ``data`` reaches the caller; 4xx raises
    :class:`~occo.util.exceptions.CriticalError` and 5xx
    :class:`~occo.util.exceptions.TransientError` at the caller, both
    carrying ``http_code`` and ``data`` as the reason.

    :param http_code: HTTP-like status code.
    :param data: the payload (a JSON-able value, ``str`` or ``bytes``).
    """

    def __init__(self, http_code: int, data: Message = None) -> None:
        self.http_code = int(http_code)
        self.data = data

    @property
    def success(self) -> bool:
        """``True`` for a 2xx code."""
        return 200 <= self.http_code < 300

    def check(self) -> Message:
        """Return ``data`` for a 2xx code, else raise the matching error.

        :raises CriticalError: for a 4xx code.
        :raises TransientError: for any other non-2xx code.
        """
        if self.success:
            return self.data
        if 400 <= self.http_code < 500:
            raise CriticalError(self.http_code, self.data)
        raise TransientError(self.http_code, self.data)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Response) and type(self) is type(other)
                and (self.http_code, self.data) == (other.http_code, other.data))

    def __repr__(self) -> str:
        return '{}({!r}, {!r})'.format(
            type(self).__name__, self.http_code, self.data)


class ExceptionResponse(Response):
    """A failure the processor reports with its exception and a code.

    ``return ExceptionResponse(404, e)`` reaches the caller as ``e`` would
    if the processor had raised it (see :mod:`~.remote_errors`): an
    :class:`~occo.util.exceptions.ApplicationError`, also of ``e``'s class
    where that is safe, whose ``http_code`` is 404. Given a ``str`` instead
    of an exception, it is a :class:`Response` with that text as data (4xx:
    :class:`~occo.util.exceptions.CriticalError`, 5xx:
    :class:`~occo.util.exceptions.TransientError`).

    :param http_code: HTTP-like status code, 500 by default.
    :param exception: the exception (or a message) to report.
    """

    def __init__(self, http_code: int = 500,
                 exception: Union[BaseException, str, None] = None) -> None:
        super().__init__(http_code, None if exception is None else str(exception))
        self.exception = exception
