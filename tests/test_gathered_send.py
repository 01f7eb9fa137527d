# SPDX-License-Identifier: Apache-2.0
"""Large bodies go to the socket from their own buffers, with one
``sendmsg``, not joined (copied) first; when the socket takes only part of
them, the rest follows, whole and in order."""

import json
import os
import socket

import pytest

import occo.util.communication as comm
from occo.util.communication import pika_internals
from conftest import amqp_config, raw_channel

MB = 1024 * 1024


def test_unsent_is_the_tail_of_the_frames_joined():
    frames = [b'abc', memoryview(b'defgh'), b'', b'ij', memoryview(b'k')]
    joined = b''.join(frames)
    for sent in range(len(joined)):
        assert pika_internals._unsent(frames, sent) == joined[sent:]


@pytest.mark.broker
@pytest.mark.skipif(not pika_internals.FAST, reason='plain pika writes its own way')
def test_large_bodies_sent_in_part_arrive_whole_and_in_order(monkeypatch):
    """A send buffer of a few KB makes every 1 MB ``sendmsg`` partial, so
    each message's tail takes the buffered path after its head went out
    directly; the queue must hold every message, intact, in order, over
    the one connection: a stream cut wrong would make the broker close it,
    and the producer would hide that by reconnecting and republishing."""
    tails = []
    unsent = pika_internals._unsent

    def recording_unsent(frames, sent):
        tails.append(sent)
        return unsent(frames, sent)

    monkeypatch.setattr(pika_internals, '_unsent', recording_unsent)
    cfg = amqp_config(max_message_size=4 * MB)
    bodies = [{'n': n, 'payload': chr(ord('a') + n) * (MB - 40)} for n in range(6)]
    with comm.AsynchronProducer(**cfg) as producer:
        producer.push_message({'opens': 'the connection'})
        loop = producer._loop
        with socket.socket(fileno=os.dup(loop._socket_fd)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        for body in bodies:
            producer.push_message(body)
        producer.flush()
        assert producer._loop is loop, 'the connection was lost and replaced'
    assert tails, 'no send was partial: the buffered path went untested'
    received = []
    with raw_channel() as channel:
        while True:
            method, _, body = channel.basic_get(cfg['queue'], auto_ack=True)
            if method is None:
                break
            received.append(json.loads(body))
    assert received == [{'opens': 'the connection'}] + bodies
