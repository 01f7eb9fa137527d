# SPDX-License-Identifier: Apache-2.0
"""The benchmark's work through kombu (synchronous, on py-amqp).

Same message, same counts, same timed spans as :mod:`benchmarks.raw`; only
kombu's public API. What was chosen, and why it is kombu's fast path:

* ``kombu.Producer.publish`` with the body already encoded (the same
  compact JSON as raw pika) and ``content_type`` given, so kombu passes it
  through instead of running its serializer registry. That is how kombu's
  documentation says to send pre-serialized data, and it keeps the bytes
  on the wire identical to the other clients'.
* Confirms: the transport option ``confirm_publish=True``. py-amqp then
  waits for the broker's ack after every ``basic_publish`` (one round trip
  per message, like raw pika's ``confirm_delivery()``); kombu has no way
  to keep several confirms outstanding, so this row runs with the
  confirmed count (``publish_confirmed``).
* Consuming: ``kombu.Consumer`` with ``prefetch_count``, a callback that
  receives the body decoded by kombu (``accept=['json']``) and acks with
  ``message.ack()``; ``Connection.drain_events(timeout=...)`` in a loop
  with a deadline.
* RPC: direct reply-to (``amq.rabbitmq.reply-to``, ``no_ack=True``) as
  raw pika does, a correlation id per call, ``drain_events`` until the
  reply is there. kombu's own RPC example declares a callback queue; the
  direct reply-to pseudo-queue is RabbitMQ's faster, recommended way and
  keeps the comparison to raw pika about the client alone. The reply is
  the library's envelope, decoded with ``json.loads`` (its content type is
  not in kombu's serializer registry).
"""

import contextlib
import itertools
import json
import socket
import time

import kombu

from .measure import Meter
from .others import timed_calls
from .raw import DIRECT_REPLY_TO, JSON
from .workload import encode

__all__ = ['publish', 'consume', 'rpc_sequential', 'CONFIRMED', 'RPC_DIVISOR',
           'NOTES']

#: (count name, divisor) for the confirmed publish row: one round trip each.
CONFIRMED = ('publish_confirmed', 1)
#: Sequential RPC runs the raw count.
RPC_DIVISOR = 1
#: What each row does, for the table's notes.
NOTES = {
    'publish': 'Producer.publish, no confirms',
    'confirmed': 'confirm_publish: waits per message',
    'consume': 'Consumer callback, message.ack()',
    'rpc': 'raw server, direct reply-to',
}


def _connect(workload, confirm=False):
    connection = kombu.Connection(
        hostname=workload.host, port=workload.port, userid='guest',
        password='guest', virtual_host='/', connect_timeout=10,
        transport_options={'confirm_publish': True} if confirm else {})
    connection.connect()
    return connection


def _drain(connection, until, timeout, what):
    """Run ``drain_events`` until ``until()`` is true or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while not until():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError('kombu: {} not done within {} s'.format(
                what, timeout))
        with contextlib.suppress(socket.timeout):   # nothing came: look again
            connection.drain_events(timeout=min(0.25, remaining))


def publish(workload, queue, n, confirm):
    """Publish ``n`` transient messages; timed until the connection closed."""
    connection = _connect(workload, confirm)
    try:
        channel = connection.channel()
        kombu.Queue(queue, durable=False, channel=channel).declare()
        producer = kombu.Producer(channel, auto_declare=False)
        message = workload.message
        meter = Meter().start()
        for _ in range(n):
            producer.publish(encode(message), routing_key=queue,
                             content_type=JSON, content_encoding='utf-8',
                             delivery_mode=1)
        connection.close()
        return meter.stop(n)
    finally:
        connection.release()


def consume(workload, queue, n, prefetch, timeout):
    """Consume ``n`` messages of a pre-filled ``queue``, one ack each."""
    connection = _connect(workload)
    try:
        channel = connection.channel()
        count = [0]

        def on_message(body, message):
            count[0] += 1
            message.ack()

        consumer = kombu.Consumer(
            channel, queues=[kombu.Queue(queue, no_declare=True)],
            callbacks=[on_message], accept=['json'], prefetch_count=prefetch)
        meter = Meter().start()
        consumer.consume()
        _drain(connection, lambda: count[0] >= n, timeout,
               'consuming {} messages'.format(n))
        sample = meter.stop(count[0])
        consumer.cancel()
        return sample
    finally:
        connection.release()


class _RPCClient:
    """Sequential calls on direct reply-to (see the module docstring)."""

    def __init__(self, workload):
        self._connection = _connect(workload)
        try:
            channel = self._connection.channel()
            self._producer = kombu.Producer(channel, auto_declare=False)
            self._replies = {}
            self._ids = itertools.count(1)
            kombu.Consumer(channel, queues=[kombu.Queue(DIRECT_REPLY_TO,
                                                        no_declare=True)],
                           on_message=self._on_reply, no_ack=True).consume()
        except BaseException:
            self._connection.release()
            raise

    def _on_reply(self, message):
        self._replies[message.properties['correlation_id']] = message.body

    def call(self, queue, message, timeout=10):
        correlation_id = str(next(self._ids))
        self._producer.publish(encode(message), routing_key=queue,
                               content_type=JSON, content_encoding='utf-8',
                               reply_to=DIRECT_REPLY_TO,
                               correlation_id=correlation_id)
        _drain(self._connection, lambda: correlation_id in self._replies,
               timeout, 'reply from {}'.format(queue))
        envelope = json.loads(self._replies.pop(correlation_id))
        if envelope.get('code') != 200:
            raise RuntimeError('error reply: {!r}'.format(envelope))
        return envelope['data']

    def close(self):
        self._connection.release()


def rpc_sequential(workload, queue, n, server_pids, warmup=20):
    """``n`` sequential calls, each timed; as :func:`benchmarks.raw.rpc_sequential`."""
    client = _RPCClient(workload)
    try:
        return timed_calls(client, workload, queue, n, server_pids, warmup)
    finally:
        client.close()
