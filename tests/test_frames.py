# SPDX-License-Identifier: Apache-2.0
"""The library's publish frames are byte for byte what pika would send."""

import random

import pika
import pytest
from pika import frame, spec

from occo.util.communication import pika_internals
from occo.util.communication.amqp_frames import MAX_SHORTSTR, PublishFrames

BODY_MAX = 131072 - 8   # RabbitMQ's default frame_max, less the frame overhead


def pika_frames(channel, exchange, routing_key, body, properties, mandatory,
                body_max=BODY_MAX):
    """What pika's connection marshals for one basic_publish."""
    frames = [frame.Method(channel, spec.Basic.Publish(
                  exchange=exchange, routing_key=routing_key,
                  mandatory=mandatory)).marshal(),
              frame.Header(channel, len(body), properties).marshal()]
    for start in range(0, len(body), body_max):
        frames.append(frame.Body(channel, body[start:start + body_max]).marshal())
    return b''.join(frames)


@pytest.mark.parametrize('body', [b'', b'{"a": 1}', b'x' * 10240,
                                  b'y' * (2 * BODY_MAX + 17)])
@pytest.mark.parametrize('exchange,routing_key,mandatory', [
    ('', 'jobs', True), ('events', 'a.b.c', False), ('', 'ünïcödé-queue', True)])
def test_publish_frames_equal_pikas(body, exchange, routing_key, mandatory):
    properties = pika.BasicProperties(
        content_type='application/json', delivery_mode=2, message_id='1.2.3',
        correlation_id='c-1', reply_to='amq.rabbitmq.reply-to',
        expiration='3000', headers={'x-trace': 'abc', 'n': 5})
    frames = PublishFrames(channel_number=3, body_max=BODY_MAX)
    for _ in range(2):   # the second time from the cached method frame
        ours = b''.join(frames.marshal(exchange, routing_key, body, properties,
                                       mandatory))
        assert ours == pika_frames(3, exchange, routing_key, body, properties,
                                   mandatory)


def test_routing_key_longer_than_amqp_allows_is_refused():
    frames = PublishFrames(channel_number=1, body_max=BODY_MAX)
    with pytest.raises(ValueError, match='routing key of 256 bytes'):
        frames.marshal('', 'k' * (MAX_SHORTSTR + 1), b'', pika.BasicProperties())
    assert frames.marshal('', 'k' * MAX_SHORTSTR, b'', pika.BasicProperties())


# -- receiving: FastConnection cuts the byte stream into pika's frames ------

def _received_stream():
    """Deliveries of several sizes (bodies over several frames included),
    a heartbeat and a channel close, as the broker would send them."""
    frames = []
    for tag, size in enumerate([0, 1, 100, 10240, 3 * BODY_MAX + 5], start=1):
        frames.append(frame.Method(1, spec.Basic.Deliver(
            consumer_tag='ctag', delivery_tag=tag, exchange='',
            routing_key='ü-queue')))
        frames.append(frame.Header(1, size, pika.BasicProperties(
            content_type='application/json', headers={'n': tag})))
        for start in range(0, size, BODY_MAX):
            frames.append(frame.Body(1, bytes([tag]) * min(BODY_MAX, size - start)))
        frames.append(frame.Heartbeat())
    frames.append(frame.Method(1, spec.Channel.Close(404, 'NOT_FOUND', 60, 20)))
    return b''.join(f.marshal() for f in frames)


def _receive(on_data_available, chunks):
    """Feed ``chunks`` to ``on_data_available`` of a bare connection object;
    return the frames it processed (marshalled) and its byte count."""
    connection = object.__new__(pika_internals.FastConnection)
    connection._frame_buffer = b''
    connection.bytes_received = 0
    connection.connection_state = pika.connection.Connection.CONNECTION_OPEN
    processed = []
    connection._process_frame = lambda value: processed.append(value.marshal())
    for chunk in chunks:
        on_data_available(connection, chunk)
    return processed, connection.bytes_received, connection._frame_buffer


@pytest.mark.parametrize('seed', range(20))
def test_received_bytes_become_the_frames_pika_would_make(seed):
    stream = _received_stream()
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(stream)), rng.choice([1, 5, 50, 500])))
    if seed == 0:
        cuts = range(1, len(stream))   # one byte at a time
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    ours = _receive(pika_internals.FastConnection._on_data_available, chunks)
    pikas = _receive(pika.connection.Connection._on_data_available, chunks)
    assert ours == pikas
    assert ours[1] == len(stream) and ours[2] == b''
    assert b''.join(ours[0]) == stream


def test_a_frame_with_a_wrong_end_marker_is_refused_like_pika_refuses_it():
    body = bytearray(frame.Body(1, b'x' * 100).marshal())
    body[-1] = 0
    for on_data_available in (pika_internals.FastConnection._on_data_available,
                              pika.connection.Connection._on_data_available):
        with pytest.raises(pika.exceptions.InvalidFrameError):
            _receive(on_data_available, [bytes(body)])


def test_a_protocol_header_from_the_broker_is_handed_on_like_pika_does():
    """A broker that speaks another AMQP version answers with its header."""
    header = b'AMQP\x00\x00\x08\x00'
    ours = _receive(pika_internals.FastConnection._on_data_available, [header[:5], header[5:]])
    pikas = _receive(pika.connection.Connection._on_data_available, [header[:5], header[5:]])
    assert ours == pikas
    assert ours[1:] == (8, b'') and len(ours[0]) == 1


def test_frames_after_the_connection_closed_are_left_alone_like_pika_leaves_them():
    """The broker closes the connection and more bytes follow in the same
    read: once a frame closed the connection, nothing more is processed
    and the closed connection's buffer is not written back."""
    stream = _received_stream()
    results = []
    for on_data_available in (pika_internals.FastConnection._on_data_available,
                              pika.connection.Connection._on_data_available):
        connection = object.__new__(pika_internals.FastConnection)
        connection._frame_buffer = b''
        connection.bytes_received = 0
        connection.connection_state = pika.connection.Connection.CONNECTION_OPEN
        processed = []

        def close_on_third(value, connection=connection, processed=processed):
            processed.append(value.marshal())
            if len(processed) == 3:   # as pika does on connection.close
                connection.connection_state = pika.connection.Connection.CONNECTION_CLOSED
                connection._frame_buffer = b''

        connection._process_frame = close_on_third
        on_data_available(connection, stream)
        results.append((processed, connection._frame_buffer))
    ours, pikas = results
    assert len(ours[0]) == 3 and ours[1] == b''
    assert ours[0] == pikas[0]
