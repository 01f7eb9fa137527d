# SPDX-License-Identifier: Apache-2.0
"""The asynchronous producer's in-flight window counts bytes as well as
messages, so publishing large messages faster than the broker confirms them
holds a bounded amount of memory."""

import threading

import pytest

import occo.util.communication as comm
from occo.util.communication import pika_internals
from conftest import JOIN_TIMEOUT, MB, amqp_config, raw_channel

pytestmark = [pytest.mark.broker, pytest.mark.skipif(
    not pika_internals.FAST, reason='holds the I/O turn, which plain pika never lets go')]


def test_push_message_blocks_once_the_unconfirmed_bytes_reach_the_bound():
    """With the I/O thread kept from running (the test holds its turn),
    nothing is published or confirmed: three 1 MB messages fit in a 3 MB
    window, the fourth waits until the turn is let go."""
    cfg = amqp_config(max_in_flight_bytes=3 * MB, max_message_size=4 * MB)
    body = 'x' * (MB - 20)
    fourth_sent = threading.Event()
    with comm.AsynchronProducer(**cfg) as producer:
        pusher = threading.Thread(target=lambda: (producer.push_message(body),
                                                  fourth_sent.set()))
        with producer._loop.holding_turn():
            for _ in range(3):
                producer.push_message(body)
            pusher.start()
            # A bound cannot be shown without waiting: the fourth must still
            # be blocked after a generous pause.
            assert not fourth_sent.wait(0.5)
        assert fourth_sent.wait(JOIN_TIMEOUT)
        pusher.join(JOIN_TIMEOUT)
        producer.flush(JOIN_TIMEOUT)
    with raw_channel() as channel:
        assert channel.queue_declare(cfg['queue'], passive=True).method.message_count == 4


def test_one_message_larger_than_the_window_still_goes():
    cfg = amqp_config(max_in_flight_bytes=1024)
    with comm.AsynchronProducer(**cfg) as producer:
        for _ in range(3):
            producer.push_message('y' * 4096)
    with raw_channel() as channel:
        assert channel.queue_declare(cfg['queue'], passive=True).method.message_count == 3


def test_the_window_bound_is_validated():
    with pytest.raises(comm.ConfigurationError, match='max_in_flight_bytes'):
        comm.AsynchronProducer(**amqp_config(max_in_flight_bytes=0))


def test_large_messages_arrive_whole():
    """Bodies of several frames, sent as views of the body, arrive equal."""
    from conftest import Collector, running_consumer
    cfg = amqp_config(max_message_size=8 * MB)
    messages = [{'i': i, 'payload': chr(65 + i) * size}
                for i, size in enumerate([MB, 3 * MB + 7, 131072 - 8, 1])]
    collector = Collector()
    with running_consumer(collector, **cfg):
        with comm.AsynchronProducer(**cfg) as producer:
            for message in messages:
                producer.push_message(message)
        assert collector.wait_for(len(messages)) == messages
