# SPDX-License-Identifier: Apache-2.0
"""Helpers for testing code that uses this package, and a pytest plugin.

Installing the package registers this module as a pytest plugin (the
``pytest11`` entry point ``occo_communication``), so any test can ask for
the :func:`memory_broker` fixture: the test gets a ``memory`` broker of its
own, with no queue and no message of another test, and the previous broker
is back after it. Nothing here is ``autouse``: a test that does not ask for
the fixture runs as before. ``pytest -p no:occo_communication`` turns the
plugin off.

:func:`running_consumer` runs a consumer of a processor in a thread for a
``with`` block and stops it afterwards; :class:`Collector` wraps a processor
(or stands in for one) and lets the test wait until it has handled some
messages. Every wait has a timeout, :data:`DEFAULT_TIMEOUT` unless given.
See :doc:`/testing` for a whole example.

The helpers do not need pytest: this module imports it only to define the
fixture, and only when it is installed. ``import occo.util.communication``
does not import this module.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple, Optional

from . import memory
from .comm import EventDrivenConsumer, Message

try:
    import pytest
except ImportError:  # a test dependency only: the helpers work without it
    pytest = None  # type: ignore[assignment]

__all__ = ['DEFAULT_TIMEOUT', 'Call', 'Collector', 'running_consumer',
           'memory_broker']

log = logging.getLogger(__name__)

#: Seconds a helper waits at most, unless told otherwise: a bound that turns
#: a hang into a failure, not a speed check.
DEFAULT_TIMEOUT = 10.0

#: Numbers the consumer threads of :func:`running_consumer` (``next`` is
#: atomic).
_thread_ids = itertools.count(1)


if pytest is not None:
    @pytest.fixture
    def memory_broker() -> Iterator[memory.MemoryBroker]:
        """A fresh process-wide ``memory`` broker for the test (a fixture).

        Every memory object the test constructs, in any thread, uses it
        (see :func:`~occo.util.communication.memory.isolated_broker`): it
        starts with no queue and no message, and what the test leaves in it
        is dropped after the test, when the previous broker is restored. The
        value is the :class:`~occo.util.communication.memory.MemoryBroker`,
        for a test that looks into a queue::

            def test_order_is_queued(memory_broker):
                with comm.AsynchronProducer(**config) as producer:
                    producer.push_message({'item': 'tea'})
                assert len(memory_broker.queue('orders')) == 1

        Tests of one session run one at a time in one thread (as pytest runs
        them); a test that starts threads of its own should stop them before
        it ends.
        """
        with memory.isolated_broker() as broker:
            yield broker


@contextlib.contextmanager
def running_consumer(processor: Callable[..., Any], *,
                     pargs: Iterable[Any] = (),
                     pkwargs: Optional[Mapping[str, Any]] = None,
                     timeout: float = DEFAULT_TIMEOUT,
                     **config: Any) -> Iterator[EventDrivenConsumer]:
    """Consume with ``processor`` in a thread of its own for the ``with`` body.

    Constructs ``EventDrivenConsumer(processor, pargs=pargs,
    pkwargs=pkwargs, **config)`` (any backend), opens it, so its queue
    exists before the body runs, and runs :meth:`start_consuming
    <occo.util.communication.comm.EventDrivenConsumer.start_consuming>` in a
    thread. On exit it sets the consumer's cancel event, waits for the
    thread and closes the consumer. An exception of the body propagates
    unchanged; otherwise the exit checks that consuming ended well::

        with running_consumer(process, protocol='memory', queue='q') as consumer:
            with comm.RPCProducer(protocol='memory', routing_key='q') as rpc:
                assert rpc.push_message(2) == 4

    :param processor: called for each message, as by the consumer.
    :param timeout: seconds to wait for the thread to end after cancelling.
    :param config: the consumer's configuration (``protocol``, ``queue``...).
    :returns: a context manager whose ``as`` target is the consumer.
    :raises TimeoutError: on exit, when the thread did not end in time.
    :raises Exception: on exit, what ``start_consuming`` raised in the
        thread (a :class:`~occo.util.exceptions.CommunicationError`, say).
        An exception of the processor is not one: the consumer reports it
        to the caller, or logs it.
    """
    cancel = threading.Event()
    consumer = EventDrivenConsumer(processor, pargs=pargs, pkwargs=pkwargs,
                                   cancel_event=cancel, **config)
    #: What start_consuming raised; written by the thread, read after join.
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            consumer.start_consuming()
        except BaseException as exc:   # reported by the thread that waits
            errors.append(exc)

    with consumer:
        thread = threading.Thread(
            target=consume, daemon=True,   # a stuck one must not block exit
            name='occo-test-consumer-{}'.format(next(_thread_ids)))
        thread.start()
        body_ok = False
        try:
            yield consumer
            body_ok = True
        finally:
            cancel.set()
            thread.join(timeout)
            if errors and not body_ok:   # the body's exception goes first
                log.error('The consumer thread %s raised too', thread.name,
                          exc_info=errors[0])
        if thread.is_alive():
            raise TimeoutError('the consumer thread {} did not end within {} s '
                               'after its cancel event was set'.format(
                                   thread.name, timeout))
        if errors:
            raise errors[0]


class Call(NamedTuple):
    """One call of a :class:`Collector`: what the processor was given."""

    #: The message, decoded.
    message: Message
    #: The consumer's ``pargs``.
    args: tuple[Any, ...]
    #: The consumer's ``pkwargs``.
    kwargs: dict[str, Any]


class Collector:
    """A processor that records each message it has handled.

    Give it to a consumer in place of a processor, or wrapped around one:
    it calls ``processor(message, *args, **kwargs)`` (when given), returns
    its result or lets its exception propagate, and then records the call,
    so once :meth:`wait_for` returns, the processor has finished with those
    messages and the test can check what it did. Thread-safe.

    :param processor: the processor to wrap; ``None`` returns ``None``
        for each message.
    """

    def __init__(self, processor: Optional[Callable[..., Any]] = None) -> None:
        self.processor = processor
        #: Guards _calls; notified after each call is recorded.
        self._recorded = threading.Condition()
        #: The calls handled so far, in order (_recorded).
        self._calls: list[Call] = []

    def __call__(self, message: Message, *args: Any, **kwargs: Any) -> Any:
        try:
            if self.processor is None:
                return None
            return self.processor(message, *args, **kwargs)
        finally:
            with self._recorded:
                self._calls.append(Call(message, args, kwargs))
                self._recorded.notify_all()

    @property
    def calls(self) -> list[Call]:
        """A copy of the calls handled so far, in order."""
        with self._recorded:
            return list(self._calls)

    @property
    def messages(self) -> list[Message]:
        """The messages handled so far, in order."""
        return [call.message for call in self.calls]

    def wait_for(self, count: int = 1,
                 timeout: float = DEFAULT_TIMEOUT) -> list[Message]:
        """Wait until ``count`` messages have been handled; return them all.

        :param count: how many messages, at least.
        :param timeout: seconds to wait at most.
        :returns: every message handled so far (``count`` or more), in order.
        :raises TimeoutError: when fewer arrived in time, saying how many.
        """
        with self._recorded:
            if not self._recorded.wait_for(lambda: len(self._calls) >= count,
                                           timeout):
                raise TimeoutError('the processor handled {} of {} messages '
                                   'within {} s'.format(len(self._calls), count,
                                                        timeout))
            return [call.message for call in self._calls]
