# SPDX-License-Identifier: Apache-2.0
"""The library's publish frames are byte for byte what pika would send."""

import pika
import pytest
from pika import frame, spec

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
