# SPDX-License-Identifier: Apache-2.0
"""The same work written directly on pika's ``BlockingConnection``.

These are the baselines each library row is divided by. They are written
the way a careful application would use pika without a helper library:
one blocking connection, JSON bodies encoded per message like the library
does, manual acks, direct reply-to for RPC. Nothing here imports
``occo``; the only library constant used (the reply content type) is
copied, so a change in the library cannot make the baseline faster or
slower.

Every loop has a deadline and raises :class:`TimeoutError` when it passes.
"""

import contextlib
import itertools
import json
import os
import time

import pika

from .measure import Meter, timed_echo_calls
from .workload import encode

__all__ = ['connect', 'admin', 'delete_queues', 'broker_version',
           'expect_count', 'prefill',
           'publish', 'consume', 'RPCClient', 'rpc_sequential', 'echo_server']

JSON = 'application/json'
#: The content type of the library's RPC reply envelope (see ``codec.py``).
REPLY_CONTENT_TYPE = 'application/vnd.occo.reply+json'
DIRECT_REPLY_TO = 'amq.rabbitmq.reply-to'


def connect(workload):
    """Open a :class:`pika.BlockingConnection` to the benchmark broker."""
    return pika.BlockingConnection(pika.ConnectionParameters(
        host=workload.host, port=workload.port, virtual_host='/',
        credentials=pika.PlainCredentials('guest', 'guest'),
        connection_attempts=1, socket_timeout=10, blocked_connection_timeout=30,
        client_properties={'connection_name': 'benchmark raw pid {}'.format(
            os.getpid())}))


@contextlib.contextmanager
def admin(workload):
    """A connection and channel for set-up and clean-up, closed on exit."""
    connection = connect(workload)
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


def delete_queues(workload, queues):
    """Delete ``queues`` (missing ones are fine) so nothing accumulates."""
    queues = [q for q in queues if q]
    if not queues:
        return
    with admin(workload) as channel:
        for queue in queues:
            channel.queue_delete(queue)


def broker_version(workload):
    """Return the broker's product and version, e.g. ``RabbitMQ 3.10.8``."""
    connection = connect(workload)
    try:
        props = connection._impl.server_properties
        return '{} {}'.format(props.get('product', b'?'),
                              props.get('version', b'?'))
    finally:
        connection.close()


def _wait_count(channel, queue, n, deadline):
    while True:
        count = channel.queue_declare(queue, passive=True).method.message_count
        if count >= n:
            return count
        if time.monotonic() > deadline:
            raise TimeoutError('queue {} holds {} of {} messages'.format(
                queue, count, n))
        time.sleep(0.05)


def expect_count(workload, queue, n, timeout=10):
    """Check that ``queue`` holds ``n`` messages: nothing was lost.

    Run after a publish window (untimed), so a baseline cannot look fast
    by dropping messages.
    """
    with admin(workload) as channel:
        count = _wait_count(channel, queue, n, time.monotonic() + timeout)
    if count != n:
        raise RuntimeError('queue {} holds {} messages, {} were published'
                           .format(queue, count, n))


def prefill(workload, queue, n, timeout=120):
    """Put ``n`` copies of the message into a new non-durable ``queue``.

    Published without confirms for speed; the queue's message count is
    then polled until all ``n`` are there, so consuming starts from a
    full queue.
    """
    with admin(workload) as channel:
        channel.queue_declare(queue, durable=False)
        properties = pika.BasicProperties(content_type=JSON, delivery_mode=1)
        for _ in range(n):
            channel.basic_publish('', queue, workload.body, properties)
        _wait_count(channel, queue, n, time.monotonic() + timeout)


def publish(workload, queue, n, durable, confirm):
    """Publish ``n`` messages to ``queue`` on the default exchange.

    Timed from the first publish until ``connection.close()`` returned,
    the same span as the library's pushes plus its ``with`` exit. Without
    confirms, ``basic_publish`` returns once the frame is written to the
    socket; with ``confirm_delivery()`` it waits for the broker's ack, one
    round trip per message.
    """
    connection = connect(workload)
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=durable)
        if confirm:
            channel.confirm_delivery()
        properties = pika.BasicProperties(
            content_type=JSON, delivery_mode=2 if durable else 1)
        message = workload.message
        meter = Meter().start()
        for _ in range(n):
            channel.basic_publish('', queue, encode(message), properties)
        connection.close()
        return meter.stop(n)
    finally:
        if connection.is_open:
            connection.close()


def consume(workload, queue, n, prefetch, timeout):
    """Consume ``n`` messages from a pre-filled ``queue``, one ack each.

    Timed from ``basic_consume`` until the ``n``-th message was decoded and
    acknowledged.
    """
    connection = connect(workload)
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=prefetch)
        count = [0]

        def on_message(ch, method, properties, body):
            json.loads(body)
            count[0] += 1
            ch.basic_ack(method.delivery_tag)

        meter = Meter().start()
        tag = channel.basic_consume(queue, on_message)
        deadline = time.monotonic() + timeout
        while count[0] < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError('raw consumer got {} of {} messages in {} s'
                                   .format(count[0], n, timeout))
            connection.process_data_events(time_limit=min(0.25, remaining))
        sample = meter.stop(count[0])
        channel.basic_cancel(tag)
        return sample
    finally:
        if connection.is_open:
            connection.close()


class RPCClient:
    """A sequential RPC client on direct reply-to.

    It consumes ``amq.rabbitmq.reply-to`` with ``auto_ack=True`` (as
    RabbitMQ requires), publishes a request with ``reply_to`` and a
    correlation id, then runs ``process_data_events`` until that reply
    arrived or the timeout passed. The reply is the library's envelope
    ``{"code": 200, "data": ...}``, decoded as JSON.
    """

    def __init__(self, workload):
        self._connection = connect(workload)
        self._channel = self._connection.channel()
        self._channel.basic_consume(DIRECT_REPLY_TO, self._on_reply,
                                    auto_ack=True)
        self._replies = {}
        self._ids = itertools.count(1)

    def _on_reply(self, channel, method, properties, body):
        self._replies[properties.correlation_id] = body

    def call(self, queue, message, timeout=10):
        correlation_id = str(next(self._ids))
        self._channel.basic_publish('', queue, encode(message),
                                    pika.BasicProperties(
                                        content_type=JSON,
                                        reply_to=DIRECT_REPLY_TO,
                                        correlation_id=correlation_id))
        deadline = time.monotonic() + timeout
        while correlation_id not in self._replies:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError('no reply from {} within {} s'.format(
                    queue, timeout))
            self._connection.process_data_events(time_limit=remaining)
        envelope = json.loads(self._replies.pop(correlation_id))
        if envelope.get('code') != 200:
            raise RuntimeError('error reply: {!r}'.format(envelope))
        return envelope['data']

    def close(self):
        if self._connection.is_open:
            self._connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def rpc_sequential(workload, queue, n, server_pids, warmup=20):
    """``n`` sequential calls through :class:`RPCClient`, each timed.

    Same warm-up and check as the library's
    :func:`benchmarks.lib.rpc_sequential`.
    """
    with RPCClient(workload) as client:
        return timed_echo_calls(lambda message: client.call(queue, message),
                                workload.message, n, server_pids, warmup)


def echo_server(workload_dict, queue, ready, stop, max_seconds):
    """Run a raw pika echo server until ``stop`` is set (child process).

    It answers each request with the library's reply envelope and content
    type, so both the raw client and the library's ``RPCProducer`` accept
    its replies; then it acks the request. Prefetch 100, like the
    library's default. It also ends after ``max_seconds`` or when its
    parent is gone, so it never outlives the benchmark.
    """
    from .workload import Workload
    workload = Workload.from_dict(workload_dict)
    parent = os.getppid()
    connection = connect(workload)
    channel = connection.channel()
    channel.queue_declare(queue, durable=False)
    channel.basic_qos(prefetch_count=100)

    def on_request(ch, method, properties, body):
        reply = encode({'code': 200, 'data': json.loads(body)})
        ch.basic_publish('', properties.reply_to, reply, pika.BasicProperties(
            content_type=REPLY_CONTENT_TYPE,
            correlation_id=properties.correlation_id))
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(queue, on_request)
    ready.set()
    end = time.monotonic() + max_seconds
    try:
        while (not stop.is_set() and time.monotonic() < end
               and os.getppid() == parent):
            connection.process_data_events(time_limit=0.25)
    finally:
        if connection.is_open:
            connection.close()
