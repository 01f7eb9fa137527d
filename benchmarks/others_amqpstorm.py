# SPDX-License-Identifier: Apache-2.0
"""The benchmark's work through AMQPStorm (synchronous, thread-safe).

Same message, same timed spans as :mod:`benchmarks.raw`; only AMQPStorm's
public API. What was chosen:

* ``channel.basic.publish(body, routing_key, properties=...)``: the
  lowest public publishing call. ``Message.create(...).publish()`` is the
  higher-level one in its examples, but it also generates a message id and
  a timestamp per message, which the other clients do not send.
* Confirms: ``channel.confirm_deliveries()``. ``basic.publish`` then
  returns only after the broker's ack. AMQPStorm's reader is a thread of
  its own; the caller waits for the ack by polling its RPC slot with
  ``time.sleep(IDLE_WAIT)`` (10 ms in AMQPStorm 2 and 3), so a confirmed
  message takes at least one sleep. This row therefore runs a tenth of the
  confirmed count (``CONFIRMED``); its rate is per message, as for the
  others.
* Consuming: ``basic.qos``, ``basic.consume(callback, queue)`` and
  ``channel.process_data_events(auto_decode=False)`` in a loop with a
  deadline (bytes bodies, decoded with ``json.loads``; ``auto_decode``
  would turn them into ``str`` first); ``message.ack()`` per message.
* RPC: direct reply-to as raw pika does (AMQPStorm's example declares a
  callback queue; direct reply-to is RabbitMQ's faster way). The caller
  waits with ``process_data_events``, as in AMQPStorm's RPC example; it
  too sleeps 10 ms whenever nothing has arrived yet, so RPC also runs a
  tenth of the raw count (``RPC_DIVISOR``).
"""

import itertools
import json
import time

import amqpstorm

from .measure import Meter
from .others import timed_calls
from .raw import DIRECT_REPLY_TO, JSON
from .workload import encode

__all__ = ['publish', 'consume', 'rpc_sequential', 'CONFIRMED', 'RPC_DIVISOR',
           'NOTES']

#: (count name, divisor) for the confirmed row: 10 ms polling per confirm.
CONFIRMED = ('publish_confirmed', 10)
#: A call waits in the same 10 ms polling loop.
RPC_DIVISOR = 10
NOTES = {
    'publish': 'basic.publish, no confirms',
    'confirmed': 'confirm_deliveries(): waits per message (10 ms polling)',
    'consume': 'process_data_events, message.ack()',
    'rpc': 'raw server, direct reply-to, 10 ms polling',
}


def _connect(workload):
    return amqpstorm.Connection(workload.host, 'guest', 'guest',
                                port=workload.port, virtual_host='/',
                                timeout=10)


def publish(workload, queue, n, confirm):
    """Publish ``n`` transient messages; timed until the connection closed."""
    connection = _connect(workload)
    try:
        channel = connection.channel()
        channel.queue.declare(queue, durable=False)
        if confirm:
            channel.confirm_deliveries()
        properties = {'content_type': JSON, 'delivery_mode': 1}
        message = workload.message
        meter = Meter().start()
        for _ in range(n):
            ok = channel.basic.publish(encode(message), queue,
                                       properties=properties)
            if confirm and not ok:
                raise RuntimeError('amqpstorm: publish was not confirmed')
        connection.close()
        return meter.stop(n)
    finally:
        if connection.is_open:
            connection.close()


def consume(workload, queue, n, prefetch, timeout):
    """Consume ``n`` messages of a pre-filled ``queue``, one ack each."""
    connection = _connect(workload)
    try:
        channel = connection.channel()
        channel.basic.qos(prefetch_count=prefetch)
        count = [0]

        def on_message(message):
            json.loads(message.body)
            count[0] += 1
            message.ack()

        meter = Meter().start()
        tag = channel.basic.consume(on_message, queue, no_ack=False)
        deadline = time.monotonic() + timeout
        while count[0] < n:
            if time.monotonic() > deadline:
                raise TimeoutError('amqpstorm consumer got {} of {} messages '
                                   'in {} s'.format(count[0], n, timeout))
            channel.process_data_events(auto_decode=False)
        sample = meter.stop(count[0])
        channel.basic.cancel(tag)
        return sample
    finally:
        if connection.is_open:
            connection.close()


class _RPCClient:
    """Sequential calls on direct reply-to (see the module docstring)."""

    def __init__(self, workload):
        self._connection = _connect(workload)
        try:
            self._channel = self._connection.channel()
            self._replies = {}
            self._ids = itertools.count(1)
            self._channel.basic.consume(self._on_reply, DIRECT_REPLY_TO,
                                        no_ack=True)
        except BaseException:
            self._connection.close()
            raise

    def _on_reply(self, message):
        self._replies[message.correlation_id] = message.body

    def call(self, queue, message, timeout=10):
        correlation_id = str(next(self._ids))
        self._channel.basic.publish(
            encode(message), queue,
            properties={'content_type': JSON, 'reply_to': DIRECT_REPLY_TO,
                        'correlation_id': correlation_id})
        deadline = time.monotonic() + timeout
        while correlation_id not in self._replies:
            if time.monotonic() > deadline:
                raise TimeoutError('no reply from {} within {} s'.format(
                    queue, timeout))
            self._channel.process_data_events(auto_decode=False)
        envelope = json.loads(self._replies.pop(correlation_id))
        if envelope.get('code') != 200:
            raise RuntimeError('error reply: {!r}'.format(envelope))
        return envelope['data']

    def close(self):
        if self._connection.is_open:
            self._connection.close()


def rpc_sequential(workload, queue, n, server_pids, warmup=20):
    """``n`` sequential calls, each timed; as :func:`benchmarks.raw.rpc_sequential`."""
    client = _RPCClient(workload)
    try:
        return timed_calls(client, workload, queue, n, server_pids, warmup)
    finally:
        client.close()
