# SPDX-License-Identifier: Apache-2.0
"""The RabbitMQ backend, ``protocol: amqp``, on pika.

Each object owns one connection, opened by ``__enter__`` and closed (channel
and connection) by ``__exit__``. The connection runs on an I/O thread of its
own (:class:`~occo.util.communication.amqp_loop.AmqpLoop`); the methods
below block the calling thread only as long as their contract says.

* :class:`MQAsynchronProducer` publishes with pipelined publisher confirms:
  ``push_message`` returns at once (it blocks only while ``max_in_flight``
  messages wait for their confirm), :meth:`~MQAsynchronProducer.flush` and
  ``__exit__`` wait until every message is confirmed, republishing nacked
  ones and those unconfirmed when a connection died (at-least-once: a
  consumer may see a message twice, never zero times).
* :class:`MQRPCProducer` sends requests with RabbitMQ's direct reply-to and
  matches replies by correlation id; threads may share it.
* :class:`MQEventDrivenConsumer` runs the processor in the thread that calls
  :meth:`~MQEventDrivenConsumer.start_consuming` while the I/O thread keeps
  the connection alive, so a processor may run longer than the heartbeat.

A lost connection is reopened by the next call (producers) or by the
consuming loop (consumers), with ``connection_attempts`` tries spaced by
``retry_delay`` doubling.
"""

from __future__ import annotations

from .amqp_role import POLL_INTERVAL
from .mq_consumer import ACK_BATCH, ACK_DELAY, MQEventDrivenConsumer
from .mq_producer import MAX_NACK_BACKOFF, NACK_BACKOFF, NACK_RETRIES, MQAsynchronProducer
from .mq_rpc import DIRECT_REPLY_TO, MQRPCProducer

__all__ = ['MQAsynchronProducer', 'MQRPCProducer', 'MQEventDrivenConsumer',
           'NACK_RETRIES', 'NACK_BACKOFF', 'MAX_NACK_BACKOFF', 'DIRECT_REPLY_TO',
           'POLL_INTERVAL', 'ACK_BATCH', 'ACK_DELAY']
