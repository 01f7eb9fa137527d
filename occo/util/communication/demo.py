# SPDX-License-Identifier: Apache-2.0
"""A short tour of the three roles, printed as it happens.

``occo-comm demo`` (or ``python -m occo.util.communication demo``) runs it
on the in-process ``memory`` backend; with ``--config FILE`` (a YAML file
with an ``mqconfig`` section), ``--url amqp://...`` or ``OCCO_AMQP_URL`` the
same tour runs on RabbitMQ (see :mod:`~occo.util.communication.cli`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Optional

from ..exceptions import ApplicationError, CommunicationError
from .comm import AsynchronProducer, EventDrivenConsumer, Message, RPCProducer

__all__ = ['run_demo']

#: Where the tour writes its lines.
_Output = Callable[[str], object]


def _processor(message: Message, out: _Output) -> Message:
    """Answer RPC requests; fail on purpose for ``'fail'``."""
    out('  consumer got {!r}'.format(message))
    if message == 'fail':
        raise ValueError('the demo processor refuses "fail"')
    if isinstance(message, dict) and 'x' in message:
        return {'square': message['x'] ** 2}
    return message


def run_demo(mqconfig: Optional[Mapping[str, Any]] = None,
             out: _Output = print, queue: Optional[str] = None) -> int:
    """Run the tour; return 0 if everything behaved as documented, else 1.

    :param mqconfig: the connection configuration; ``None`` uses the
        ``memory`` backend.
    :param out: where the lines go; called by one thread at a time (the
        consumer runs in a thread of its own).
    :param queue: the (transient) queue of the tour; by default a fresh
        ``occo-demo-...`` name. The tour does not delete it: on RabbitMQ the
        caller may.
    """
    queue = queue or 'occo-demo-' + uuid.uuid4().hex[:8]
    out = _serialized(out)
    config: dict[str, Any] = {'protocol': 'memory'}
    config.update(mqconfig or {})
    config.update(queue=queue, routing_key=queue, durable=False)
    config.setdefault('rpc_timeout', 10)
    out('OCCO communication demo on the {!r} backend, queue {!r}'.format(
        config['protocol'], queue))
    cancel = threading.Event()
    consumer = EventDrivenConsumer(_processor, pkwargs={'out': out},
                                   cancel_event=cancel, **config)
    with consumer:
        thread = threading.Thread(target=consumer, name='demo-consumer')
        thread.start()
        try:
            return _tour(config, out)
        finally:
            cancel.set()
            thread.join(10)


def _serialized(out: _Output) -> _Output:
    """``out`` behind a lock: ``print`` from two threads mixes lines."""
    lock = threading.Lock()

    def locked(line: str) -> None:
        with lock:
            out(line)
    return locked


def _tour(config: Mapping[str, Any], out: _Output) -> int:
    started = time.perf_counter()
    with AsynchronProducer(**config) as producer:
        for message in ['hello', {'x': 3}, b'raw bytes']:
            producer.push_message(message)
            out('AsynchronProducer pushed {!r}'.format(message))
    out('  all pushed messages confirmed in {:.1f} ms'.format(
        (time.perf_counter() - started) * 1000))
    ok = True
    with RPCProducer(**config) as rpc:
        started = time.perf_counter()
        result = rpc.push_message({'x': 12})
        out('RPCProducer got {!r} in {:.1f} ms'.format(
            result, (time.perf_counter() - started) * 1000))
        ok = ok and result == {'square': 144}
        try:
            rpc.push_message('fail')
            ok = False
        except ApplicationError as e:
            # 'Type: message' as ApplicationError words it: str() of a remote
            # builtin rebuilt as its class (a ValueError too) is the message.
            out('RPCProducer got the remote error: {}'.format(
                ApplicationError.__str__(e)))
        except CommunicationError as e:
            out('RPCProducer: transport failed: {}'.format(e))
            ok = False
    out('demo finished: {}'.format('OK' if ok else 'UNEXPECTED RESULTS'))
    return 0 if ok else 1
