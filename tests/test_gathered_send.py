# SPDX-License-Identifier: Apache-2.0
"""Large bodies go to the socket from their own buffers, with one
``sendmsg``, not joined (copied) first; when the socket takes only part of
them, the rest follows, whole and in order."""

import collections
import contextlib
import json
import os
import socket
import types

import pika.frame
import pytest
from pika.adapters.utils import io_services_utils

import occo.util.communication as comm
from occo.util.communication import pika_internals
from conftest import MB, amqp_config, raw_channel


def test_unsent_is_the_tail_of_the_frames_none_empty():
    frames = [b'abc', memoryview(b'defgh'), b'', b'ij', memoryview(b'k')]
    joined = b''.join(frames)
    for sent in range(len(joined) + 1):
        rest = pika_internals._unsent(frames, sent)
        assert b''.join(rest) == joined[sent:]
        assert all(len(piece) for piece in rest)


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
    buffered = []   # what pika's transport was handed to send later
    buffer_tx_data = io_services_utils._AsyncTransportBase._buffer_tx_data

    def recording_buffer_tx_data(transport, data):
        if isinstance(transport, pika_internals._GatheringTransport):   # not raw pika's
            buffered.append(data)
        buffer_tx_data(transport, data)

    monkeypatch.setattr(io_services_utils._AsyncTransportBase, '_buffer_tx_data',
                        recording_buffer_tx_data)
    produced = []   # bytes each writable event's gathered sends took
    gathered_produce = pika_internals._gathered_produce

    def recording_produce(transport):
        before = transport.get_write_buffer_size()
        try:
            gathered_produce(transport)
        finally:
            produced.append(before - transport.get_write_buffer_size())

    monkeypatch.setattr(pika_internals, '_gathered_produce', recording_produce)
    cfg = amqp_config(max_message_size=4 * MB)
    # Large ones, and small ones that find the socket full behind them.
    bodies = [{'n': n, 'payload': chr(ord('a') + n) * (MB - 40 if n % 3 else 100)}
              for n in range(9)]
    with comm.AsynchronProducer(**cfg) as producer:
        producer.push_message({'opens': 'the connection'})
        loop = producer._loop
        with socket.socket(fileno=os.dup(loop._socket_fd)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        behind = []   # pika's own small writes that found data waiting

        def heartbeat(channel):
            behind.append(loop.connection._transport.get_write_buffer_size() > 0)
            loop.connection._send_frame(pika.frame.Heartbeat())

        for body in bodies:
            producer.push_message(body)
            loop.submit(heartbeat)
        producer.flush()
        assert any(behind), 'no small write found the socket full: untested'
        assert producer._loop is loop, 'the connection was lost and replaced'
    assert tails, 'no send was partial: the buffered path went untested'
    assert sum(produced) > 5 * MB, 'the buffered data went out some other way'
    received, wire_sizes = [], set()
    with raw_channel() as channel:
        while True:
            method, _, body = channel.basic_get(cfg['queue'], auto_ack=True)
            if method is None:
                break
            received.append(json.loads(body))
            wire_sizes.add(len(body))
    assert received == [{'opens': 'the connection'}] + bodies
    # Nothing the socket could not take was copied on its way to pika:
    # what pika got are views (pika slices what a partial send leaves, and
    # a slice of bytes copies the rest, every time), and every large one
    # looks into an encoded body itself, not into a joined copy of frames.
    assert buffered
    assert not [data for data in buffered if not isinstance(data, memoryview)]
    large = {len(view.obj) for view in buffered if len(view) > 4096}
    assert large and large <= wire_sizes, (large, wire_sizes)


def test_gathered_produce_sends_everything_in_order_without_copies():
    """pika's writability handler calls ``_produce`` until the buffer is
    empty; with a send buffer of a few KB most calls send only part, and
    the next call must go on exactly where the last one stopped."""
    reader, writer = socket.socketpair()
    with reader, writer:
        writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        writer.setblocking(False)
        reader.setblocking(False)
        pieces = [bytes([n % 251]) * (1 + n * 997 % 70000) for n in range(60)]
        pieces[7] = memoryview(pieces[7])[3:]
        transport = types.SimpleNamespace(
            _sock=writer, _tx_buffers=collections.deque(pieces),
            _tx_buffered_byte_count=sum(map(len, pieces)))
        received, partial_calls = bytearray(), 0
        while transport._tx_buffers:
            with contextlib.suppress(BlockingIOError):   # full: pika waits
                pika_internals._gathered_produce(transport)
            left = transport._tx_buffers
            partial_calls += bool(left)
            assert transport._tx_buffered_byte_count == sum(map(len, left))
            # A piece cut by a partial send stays as a view, not a copy.
            assert not left or isinstance(left[0], memoryview) or any(
                left[0] is piece for piece in pieces)
            while True:
                try:
                    received += reader.recv(1 << 20)
                except BlockingIOError:
                    break
    assert partial_calls > 10, 'the socket took everything: nothing partial tested'
    assert received == b''.join(pieces)


def test_gathered_produce_raises_a_broken_socket_to_pika_and_keeps_its_buffer():
    """When the peer is gone, ``sendmsg`` fails with something other than
    ``BlockingIOError``: it must reach pika's writability handler, which
    aborts the connection (the producer then reconnects and republishes
    what was not confirmed), with the buffer and its count still agreeing."""
    reader, writer = socket.socketpair()
    with writer:
        reader.close()
        pieces = [b'a' * 1000, memoryview(b'b' * 5000)]
        transport = types.SimpleNamespace(
            _sock=writer, _tx_buffers=collections.deque(pieces),
            _tx_buffered_byte_count=6000)
        with pytest.raises(OSError) as raised:
            pika_internals._gathered_produce(transport)
        assert not isinstance(raised.value, BlockingIOError)
        assert transport._tx_buffered_byte_count == sum(
            map(len, transport._tx_buffers)) == 6000
