# SPDX-License-Identifier: Apache-2.0
"""Measurements behind ``occo-comm bench``: throughput and RPC latency.

:func:`run_bench` pushes messages with an :class:`~.comm.AsynchronProducer`
until the broker confirmed them all, consumes them with an
:class:`~.comm.EventDrivenConsumer`, then times sequential
:class:`~.comm.RPCProducer` calls against an echo consumer in the same
process. Everything goes through the library, on fresh queues deleted
afterwards (:func:`~.diagnose.delete_queues`). :func:`summary` words the
results as the command prints them; :class:`Progress` shows how far a phase
got, on a terminal only.

``python -m benchmarks`` (the repository's benchmark suite) compares the
library with raw pika; this module only answers "how fast is it here?".
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Optional, TextIO

from ..exceptions import TransientError
from .comm import AsynchronProducer, EventDrivenConsumer, Message, RPCProducer
from .diagnose import delete_queues

__all__ = ['run_bench', 'summary', 'Progress', 'ProgressFunction']

#: What :func:`run_bench` calls now and then: ``progress(phase, done, total)``.
ProgressFunction = Callable[[str, int, int], None]


def run_bench(config: Mapping[str, Any], messages: int = 5000, calls: int = 500,
              size: int = 64, progress: Optional[ProgressFunction] = None,
              timeout: float = 60.0) -> dict[str, Any]:
    """Measure throughput and RPC latency through the library.

    Pushes ``messages`` messages of ``size`` bytes with an
    :class:`~.comm.AsynchronProducer` (until all are confirmed), consumes them
    with an :class:`~.comm.EventDrivenConsumer`, then makes ``calls``
    sequential :class:`~.comm.RPCProducer` calls against an echo consumer in
    this process. Uses two fresh queues named after the configured queue,
    deleted afterwards.

    :param config: the configuration of any backend.
    :param progress: called as ``progress(phase, done, total)`` now and then.
    :param timeout: seconds a phase may take before it fails.
    :returns: a mapping of results: ``push_rate``, ``consume_rate`` (messages
        per second), ``rpc_p50_ms``, ``rpc_p99_ms``, ``rpc_rate``, and the
        parameters.
    :raises ~occo.util.exceptions.CommunicationError: when a phase fails or
        runs out of time.
    """
    report: ProgressFunction = progress or _no_progress
    base = config.get('queue') or config.get('routing_key') or 'occo-comm'
    tag = uuid.uuid4().hex[:12]
    flow, echo = base + '.bench-' + tag, base + '.bench-rpc-' + tag
    payload = 'x' * size
    try:
        flow_config = dict(config, queue=flow, routing_key=flow)
        push_s = _push(flow_config, messages, payload, report, timeout)
        consume_s = _consume(flow_config, messages, report, timeout)
        latencies = _rpc(dict(config, queue=echo, routing_key=echo), calls,
                         payload, report, timeout)
    finally:
        delete_queues(config, [flow, echo])
    ordered = sorted(latencies)
    return {
        'protocol': config.get('protocol'), 'messages': messages,
        'size': size, 'push_seconds': push_s,
        'push_rate': messages / push_s, 'consume_seconds': consume_s,
        'consume_rate': messages / consume_s, 'calls': calls,
        'rpc_p50_ms': _percentile(ordered, 50) * 1000,
        'rpc_p99_ms': _percentile(ordered, 99) * 1000,
        'rpc_rate': calls / sum(latencies),
    }


def summary(result: Mapping[str, Any]) -> list[str]:
    """The lines ``occo-comm bench`` prints for a :func:`run_bench` result."""
    return [
        'push     {messages} messages of {size} bytes in {push_seconds:.2f} s:'
        ' {push_rate:.0f} msg/s (confirmed)'.format(**result),
        'consume  {messages} messages in {consume_seconds:.2f} s: '
        '{consume_rate:.0f} msg/s'.format(**result),
        'rpc      {calls} sequential calls: p50 {rpc_p50_ms:.2f} ms, '
        'p99 {rpc_p99_ms:.2f} ms, {rpc_rate:.0f} calls/s'.format(**result),
    ]


class Progress:
    """A ``\\r``-updated counter on a terminal; silent otherwise.

    A :data:`ProgressFunction`; call :meth:`clear` when done to erase it.

    :param stream: where the counter goes, usually :data:`sys.stderr`.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.shown = False
        self.last = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (done < total and now - self.last < 0.1):
            return
        self.last = now
        self.stream.write('\r{:<8} {}/{} '.format(phase, done, total))
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        """Erase the counter, if it was shown."""
        if self.shown:
            self.stream.write('\r' + ' ' * 40 + '\r')
            self.stream.flush()


def _no_progress(phase: str, done: int, total: int) -> None:
    """The default :data:`ProgressFunction`: report nothing."""


def _percentile(ordered: list[float], percent: int) -> float:
    """Nearest-rank percentile of a sorted, non-empty list."""
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[rank - 1]


def _push(config: Mapping[str, Any], messages: int, payload: str,
          progress: ProgressFunction, timeout: float) -> float:
    step = max(1, messages // 100)
    with AsynchronProducer(**config) as producer:
        started = time.perf_counter()
        for done in range(1, messages + 1):
            producer.push_message(payload)
            if done % step == 0:
                progress('push', done, messages)
        producer.flush(timeout)
        return time.perf_counter() - started


def _consume(config: Mapping[str, Any], messages: int,
             progress: ProgressFunction, timeout: float) -> float:
    cancel, received = threading.Event(), [0]

    def count(message: Message) -> None:
        received[0] += 1
        if received[0] >= messages:
            cancel.set()

    with _consuming(count, cancel, config) as started:
        deadline = started + timeout
        while not cancel.wait(0.1):
            progress('consume', received[0], messages)
            if time.perf_counter() > deadline:
                raise TransientError(504, 'only {} of {} messages came back '
                                     'within {} s'.format(received[0],
                                                          messages, timeout))
        elapsed = time.perf_counter() - started
    progress('consume', messages, messages)
    return elapsed


def _echo(message: Message) -> Message:
    return message


def _rpc(config: Mapping[str, Any], calls: int, payload: str,
         progress: ProgressFunction, timeout: float) -> list[float]:
    latencies = []
    with _consuming(_echo, threading.Event(), config):
        with RPCProducer(**config) as rpc:
            rpc.push_message(payload, timeout=timeout)   # warm-up
            for done in range(1, calls + 1):
                started = time.perf_counter()
                rpc.push_message(payload, timeout=timeout)
                latencies.append(time.perf_counter() - started)
                progress('rpc', done, calls)
    return latencies


@contextlib.contextmanager
def _consuming(processor: Callable[[Message], Message],
               cancel: threading.Event,
               config: Mapping[str, Any]) -> Iterator[float]:
    """Run a consumer in a thread; yield its start time; stop it on exit."""
    errors: list[BaseException] = []

    with EventDrivenConsumer(processor, cancel_event=cancel,
                             **config) as consumer:

        def run() -> None:
            try:
                consumer.start_consuming()
            except BaseException as e:  # re-raised in the calling thread
                errors.append(e)
                cancel.set()

        thread = threading.Thread(target=run, name='occo-comm-bench')
        started = time.perf_counter()
        thread.start()
        try:
            yield started
        finally:
            cancel.set()
            thread.join(10)
    if errors:
        raise errors[0]
