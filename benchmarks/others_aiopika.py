# SPDX-License-Identifier: Apache-2.0
"""The benchmark's work through aio-pika (asyncio, on aiormq).

Same message, same timed spans as :mod:`benchmarks.raw`; only aio-pika's
public API. Each function runs its own event loop (``asyncio.run``); the
timed span is inside the coroutine, so starting the loop is not measured.
What was chosen:

* ``aio_pika.connect`` (not ``connect_robust``: reconnection bookkeeping
  is not what is measured, and the other clients do not reconnect
  either); ``channel.default_exchange.publish(Message(...), routing_key,
  mandatory=False)``: ``mandatory`` defaults to true in aio-pika, while
  every other client here publishes without it.
* Unconfirmed: ``connection.channel(publisher_confirms=False)`` and one
  ``await`` per message, which returns once the frames are handed to the
  connection's writer.
* Confirmed: aio-pika's fastest documented strategy (its port of
  RabbitMQ's publisher-confirms tutorial, "publishing asynchronously"): a
  task per message, confirms awaited as they come. Here at most
  :data:`WINDOW` are outstanding at a time, so memory stays bounded at
  1 MB messages; the window end waits for every confirm. So this row,
  unlike kombu's and AMQPStorm's, runs the full publish count.
* Consuming: ``channel.set_qos(prefetch_count)`` and ``queue.consume`` with
  an ``async`` callback that decodes and awaits ``message.ack()``. The
  ``queue.iterator()`` form (``async for``), the other documented way,
  was measured too and was slower here (20,000 messages of 100 B, two
  rounds: 1,700 and 2,000 msg/s against 2,700 and 3,000).
* RPC: direct reply-to as raw pika does (the ``amq.rabbitmq.reply-to``
  pseudo-queue, consumed with ``no_ack=True``), futures keyed by
  correlation id as in aio-pika's RPC tutorial, which declares a callback
  queue instead. ``aio_pika.patterns.RPC`` is not used: it has a wire
  format of its own that the raw echo server does not speak.
"""

import asyncio
import itertools
import json
import time

import aio_pika

from .measure import Meter
from .raw import DIRECT_REPLY_TO, JSON
from .workload import encode

__all__ = ['publish', 'consume', 'rpc_sequential', 'CONFIRMED', 'RPC_DIVISOR',
           'NOTES', 'WINDOW']

#: Confirmed publishes outstanding at a time.
WINDOW = 256
#: (count name, divisor) for the confirmed row: confirms overlap, full count.
CONFIRMED = ('publish', 1)
RPC_DIVISOR = 1
NOTES = {
    'publish': 'publisher_confirms=False',
    'confirmed': 'tasks, {} confirms outstanding'.format(WINDOW),
    'consume': 'queue.consume callback, await ack()',
    'rpc': 'raw server, direct reply-to',
}


def _connect(workload):
    return aio_pika.connect(
        'amqp://guest:guest@{}:{}/'.format(workload.host, workload.port),
        timeout=10)


def _message(body, **properties):
    return aio_pika.Message(body, content_type=JSON,
                            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
                            **properties)


async def _publish(workload, queue, n, confirm):
    connection = await _connect(workload)
    try:
        channel = await connection.channel(publisher_confirms=confirm)
        await channel.declare_queue(queue, durable=False)
        exchange = channel.default_exchange
        message = workload.message
        meter = Meter().start()
        if confirm:
            pending = set()
            for _ in range(n):
                if len(pending) >= WINDOW:
                    done, pending = await asyncio.wait(
                        pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()   # a nack or a closed channel raises
                pending.add(asyncio.ensure_future(exchange.publish(
                    _message(encode(message)), queue, mandatory=False)))
            await asyncio.gather(*pending)
        else:
            for _ in range(n):
                await exchange.publish(_message(encode(message)), queue,
                                       mandatory=False)
        await connection.close()
        return meter.stop(n)
    finally:
        if not connection.is_closed:
            await connection.close()


def publish(workload, queue, n, confirm):
    """Publish ``n`` transient messages; timed until the connection closed."""
    return asyncio.run(_publish(workload, queue, n, confirm))


async def _consume(workload, queue, n, prefetch, timeout):
    connection = await _connect(workload)
    try:
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)
        source = await channel.get_queue(queue, ensure=False)
        count = [0]
        done = asyncio.Event()

        async def on_message(message):
            json.loads(message.body)
            await message.ack()
            count[0] += 1
            if count[0] >= n:
                done.set()

        meter = Meter().start()
        tag = await source.consume(on_message)
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError('aio-pika consumer got {} of {} messages in '
                               '{} s'.format(count[0], n, timeout)) from None
        sample = meter.stop(count[0])
        await source.cancel(tag)
        return sample
    finally:
        await connection.close()


def consume(workload, queue, n, prefetch, timeout):
    """Consume ``n`` messages of a pre-filled ``queue``, one ack each."""
    return asyncio.run(_consume(workload, queue, n, prefetch, timeout))


class _RPCClient:
    """Sequential calls on direct reply-to (see the module docstring)."""

    def __init__(self, connection):
        self._connection = connection
        self._futures = {}
        self._ids = itertools.count(1)
        self._exchange = None

    async def start(self):
        channel = await self._connection.channel(publisher_confirms=False)
        self._exchange = channel.default_exchange
        replies = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
        await replies.consume(self._on_reply, no_ack=True)
        return self

    async def _on_reply(self, message):
        future = self._futures.pop(message.correlation_id, None)
        if future is not None and not future.done():
            future.set_result(message.body)

    async def call(self, queue, message, timeout=10):
        correlation_id = str(next(self._ids))
        future = asyncio.get_running_loop().create_future()
        self._futures[correlation_id] = future
        try:
            await self._exchange.publish(
                _message(encode(message), reply_to=DIRECT_REPLY_TO,
                         correlation_id=correlation_id),
                queue, mandatory=False)
            body = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError('no reply from {} within {} s'.format(
                queue, timeout)) from None
        finally:
            self._futures.pop(correlation_id, None)
        envelope = json.loads(body)
        if envelope.get('code') != 200:
            raise RuntimeError('error reply: {!r}'.format(envelope))
        return envelope['data']


async def _rpc_sequential(workload, queue, n, server_pids, warmup):
    connection = await _connect(workload)
    try:
        client = await _RPCClient(connection).start()
        message = workload.message
        if await client.call(queue, message) != message:
            raise RuntimeError('echo server returned another message')
        for _ in range(warmup):
            await client.call(queue, message)
        latencies = []
        clock = time.perf_counter
        meter = Meter(server_pids).start()
        for _ in range(n):
            t = clock()
            await client.call(queue, message)
            latencies.append(clock() - t)
        return meter.stop(n, latencies)
    finally:
        await connection.close()


def rpc_sequential(workload, queue, n, server_pids, warmup=20):
    """``n`` sequential calls, each timed; as :func:`benchmarks.raw.rpc_sequential`."""
    return asyncio.run(_rpc_sequential(workload, queue, n, server_pids,
                                       warmup))
