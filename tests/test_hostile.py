# SPDX-License-Identifier: Apache-2.0
"""Hostile input: whatever a message holds, the consumer survives it.

Each case of the tables below is published with raw pika (bodies and
properties the library's producers would never send: invalid UTF-8 in short
strings, odd header types, bombs), then one good message. The promise under
test: a message never kills or loops a consumer; it is processed (once, as
an equal value), or rejected without requeue (dead-lettered where
configured) and logged once, without its body; an RPC request that can be
answered gets an error reply (400 undecodable, 413 too large); the good
message after it is processed.

pika sends ``bytes`` short-string properties as they are, which is how
invalid UTF-8 goes on the wire; the receiving pika hands back ``bytes`` for
a short string that is not UTF-8. ``user_id`` (checked by the broker) and
``expiration`` (digits only) are left out.
"""

import dataclasses
import datetime
import decimal
import json
import logging
import random
import reprlib
import threading
import time
import uuid
from typing import Any, NamedTuple, Optional

import pika
import pytest

import occo.util.communication as comm
from occo.util.communication import codec, memory
from conftest import (JOIN_TIMEOUT, Collector,
                      amqp_config, memory_config, raw_channel,
                      running_consumer)

pytestmark = pytest.mark.broker

#: In every hostile body where it fits; no log record may show it.
SECRET = 'hostile-body-7f3a9c-never-logged'
#: ``max_message_size`` of the consumers: above the 200 kB nesting bombs,
#: small enough to send an oversize body cheaply.
MAX_SIZE = 256 * 1024
#: Nesting depth of the nesting bombs (2 * DEPTH bytes).
DEPTH = 100000
#: The name ``conftest.running_consumer`` gives the consuming thread.
CONSUMER_THREAD = 'test-consumer'
DIRECT_REPLY_TO = 'amq.rabbitmq.reply-to'

PROCESSED, REJECTED = 'processed', 'rejected'
JSON, TEXT = codec.JSON, codec.TEXT

#: A good JSON body, for the cases where only a property is hostile.
JSON_BODY = json.dumps({'k': SECRET}).encode()
JSON_VALUE = {'k': SECRET}
GOOD_BODY, GOOD = b'{"ok": 1}', {'ok': 1}
#: Invalid UTF-8: the CESU-8 form of the lone surrogate U+DCFF.
ENCODED_SURROGATE = b'\xed\xb3\xbf'


def _nested(depth: int, inner: bytes) -> bytes:
    return b'[' * depth + inner + b']' * depth


def _billion_laughs(levels: int = 9, fanout: int = 10) -> bytes:
    """YAML whose aliases expand to ``fanout ** levels`` strings."""
    lines = ['secret: ' + SECRET,
             'l0: &l0 [' + ', '.join(['"lol"'] * fanout) + ']']
    for i in range(1, levels):
        lines.append('l{0}: &l{0} [{1}]'.format(
            i, ', '.join(['*l{}'.format(i - 1)] * fanout)))
    return '\n'.join(lines).encode()


GARBAGE = random.Random(1).randbytes(512) + SECRET.encode()
TYPED = codec.TYPED_JSON


@comm.register_type
@dataclasses.dataclass
class Registered:
    """A registered class with declared fields."""
    key: str


@comm.register_type
class RegisteredPlain:
    """A registered class whose state is its ``__dict__``."""

    def __init__(self, key):
        self.key = key

    def process(self):
        return self.key


def _typed(tag: str, state: Any) -> bytes:
    return json.dumps({'__occo_type__': tag, 'state': state}).encode()


REGISTERED = 'test_hostile.Registered'


class Case(NamedTuple):
    name: str
    body: bytes
    properties: dict[str, Any]
    #: PROCESSED or REJECTED.
    expected: str
    #: What the processor gets, when processed.
    value: Any = None


#: One-way messages. ``reply_to`` is hostile in one of them only, so the
#: others expect no reply.
CASES = [
    # Bodies.
    Case('deep_json_nesting', _nested(DEPTH, json.dumps(SECRET).encode()),
         {'content_type': JSON}, REJECTED),
    Case('deep_yaml_flow_nesting', _nested(DEPTH, SECRET.encode()), {}, REJECTED),
    Case('yaml_billion_laughs', _billion_laughs(), {}, REJECTED),
    Case('yaml_python_object_apply',
         b'!!python/object/apply:os.system ["echo pwned ' + SECRET.encode() + b'"]',
         {}, REJECTED),
    Case('yaml_integer_too_long', b'1' * 5000, {}, REJECTED),
    # Typed messages: only registered classes, from states they accept.
    Case('typed_unregistered_tag', _typed('os.system', ['echo ' + SECRET]),
         {'content_type': TYPED}, REJECTED),
    Case('typed_unexpected_field', _typed(REGISTERED, {'key': 'k', 'evil': SECRET}),
         {'content_type': TYPED}, REJECTED),
    Case('typed_missing_field', _typed(REGISTERED, {}), {'content_type': TYPED},
         REJECTED),
    Case('typed_hides_a_method', _typed('test_hostile.RegisteredPlain',
                                        {'process': SECRET}),
         {'content_type': TYPED}, REJECTED),
    Case('typed_sets_a_dunder', _typed('test_hostile.RegisteredPlain',
                                       {'__class__': SECRET}),
         {'content_type': TYPED}, REJECTED),
    Case('typed_state_not_a_mapping', _typed(REGISTERED, [SECRET]),
         {'content_type': TYPED}, REJECTED),
    Case('typed_tag_not_a_string', _typed(None, {'key': SECRET}), {'content_type': TYPED},
         REJECTED),
    Case('typed_bytes_not_base64',
         json.dumps({'__occo_type__': 'bytes', 'base64': '!' + SECRET}).encode(),
         {'content_type': TYPED}, REJECTED),
    Case('typed_registered', _typed(REGISTERED, {'key': SECRET}),
         {'content_type': TYPED}, PROCESSED, Registered(SECRET)),
    Case('typed_escaped_dict', json.dumps(
        {'__occo_type__': 'dict', 'items': {'__occo_type__': SECRET}}).encode(),
         {'content_type': TYPED}, PROCESSED, {'__occo_type__': SECRET}),
    # Legacy YAML of original components: registered classes only.
    Case('yaml_python_object_unregistered',
         b'!!python/object:subprocess.Popen {args: "echo ' + SECRET.encode() + b'"}',
         {}, REJECTED),
    Case('yaml_python_object_new', b'!!python/object/new:os.system ["echo ' +
         SECRET.encode() + b'"]', {}, REJECTED),
    Case('yaml_python_name', b'!!python/name:os.system ' + SECRET.encode(), {},
         REJECTED),
    Case('yaml_python_object_registered_unexpected_field',
         b'!!python/object:test_hostile.Registered {key: k, evil: ' +
         SECRET.encode() + b'}', {}, REJECTED),
    Case('yaml_python_object_registered',
         b'!!python/object:test_hostile.Registered {key: ' + SECRET.encode() + b'}',
         {}, PROCESSED, Registered(SECRET)),
    Case('yaml_date_out_of_range', b'2001-13-45', {}, REJECTED),
    Case('yaml_int_tag_not_a_number', b'!!int ' + SECRET.encode(), {}, REJECTED),
    Case('truncated_json', b'{"k": "' + SECRET.encode(), {'content_type': JSON}, REJECTED),
    Case('empty_json', b'', {'content_type': JSON}, REJECTED),
    Case('json_integer_too_long', b'1' * 5000, {'content_type': JSON}, REJECTED),
    Case('garbage_json', GARBAGE, {'content_type': JSON}, REJECTED),
    Case('garbage_no_content_type', GARBAGE, {}, REJECTED),
    Case('unsupported_content_type', JSON_BODY, {'content_type': 'application/x-evil'},
         REJECTED),
    Case('text_not_utf8', b'\xff\xfe ' + SECRET.encode(), {'content_type': TEXT}, REJECTED),
    Case('text_encoded_surrogate', ENCODED_SURROGATE + SECRET.encode(),
         {'content_type': TEXT}, REJECTED),
    # Not nesting: brackets in a string.
    Case('json_brackets_in_string', json.dumps('[' * DEPTH).encode(),
         {'content_type': JSON}, PROCESSED, '[' * DEPTH),
    Case('json_lone_surrogate_escape', b'"\\udcff"', {'content_type': JSON},
         PROCESSED, '\udcff'),
    Case('oversize', b'"' + SECRET.encode() + b'x' * MAX_SIZE + b'"',
         {'content_type': JSON}, REJECTED),
    # Properties: invalid UTF-8 in each short string, on a good body.
    Case('content_type_invalid_utf8', JSON_BODY, {'content_type': b'\xff\xfe'}, REJECTED),
    Case('content_type_encoded_surrogate', JSON_BODY,
         {'content_type': ENCODED_SURROGATE}, REJECTED),
    Case('reply_to_invalid_utf8', JSON_BODY, {'content_type': JSON, 'reply_to': b'\xff'},
         REJECTED),
    Case('correlation_id_invalid_utf8', JSON_BODY,
         {'content_type': JSON, 'correlation_id': b'\xff'}, PROCESSED, JSON_VALUE),
    Case('message_id_invalid_utf8', JSON_BODY,
         {'content_type': JSON, 'message_id': b'\xc3'}, PROCESSED, JSON_VALUE),
    Case('message_id_encoded_surrogate', JSON_BODY,
         {'content_type': JSON, 'message_id': ENCODED_SURROGATE}, PROCESSED, JSON_VALUE),
    Case('type_invalid_utf8', JSON_BODY, {'content_type': JSON, 'type': b'\xff'},
         PROCESSED, JSON_VALUE),
    Case('app_id_invalid_utf8', JSON_BODY, {'content_type': JSON, 'app_id': b'\xff'},
         PROCESSED, JSON_VALUE),
    # The library does not read content_encoding.
    Case('content_encoding_invalid_utf8', JSON_BODY,
         {'content_type': JSON, 'content_encoding': b'\xff'}, PROCESSED, JSON_VALUE),
    Case('all_short_strings_invalid_utf8', JSON_BODY, {
        'content_type': b'\xff\xfe', 'reply_to': b'\xff', 'correlation_id': b'\xff',
        'message_id': b'\xc3', 'type': b'\xff', 'app_id': b'\xff',
        'content_encoding': b'\xff'}, REJECTED),
    # Headers the library does not read, of every odd type.
    Case('headers_odd_types', JSON_BODY, {'content_type': JSON, 'headers': {
        'x': [1, {'y': b'\xff'}], 'n': None, 'd': decimal.Decimal('1.5'),
        't': datetime.datetime(2001, 2, 3, 4, 5, 6)}}, PROCESSED, JSON_VALUE),
    Case('headers_key_invalid_utf8', JSON_BODY,
         {'content_type': JSON, 'headers': {b'\xff': b'\xff', 'x-death': 'not a list'}},
         PROCESSED, JSON_VALUE),
]

#: The cases the memory backend can carry: the body and a str content type.
MEMORY_CASES = [c for c in CASES if set(c.properties) <= {'content_type'}
                and not isinstance(c.properties.get('content_type'), bytes)]


class RpcCase(NamedTuple):
    name: str
    body: bytes
    #: Over the defaults ``reply_to=DIRECT_REPLY_TO, correlation_id='c1'``.
    properties: dict[str, Any]
    #: The acceptable reply codes; ``None``: no reply (cannot be answered).
    codes: Optional[tuple[int, ...]]
    #: For a 500 reply: the type its ``error`` object names.
    error_type: Optional[str] = None


RPC_CASES = [
    RpcCase('rpc_truncated_json', b'{"k": "' + SECRET.encode(), {'content_type': JSON},
            (400,)),
    RpcCase('rpc_garbage_json', GARBAGE, {'content_type': JSON}, (400,)),
    RpcCase('rpc_deep_json_nesting', _nested(DEPTH, b'1'), {'content_type': JSON}, (400,)),
    RpcCase('rpc_yaml_billion_laughs', _billion_laughs(), {}, (400,)),
    RpcCase('rpc_yaml_integer_too_long', b'1' * 5000, {}, (400,)),
    RpcCase('rpc_typed_unregistered_tag', _typed('os.system', ['echo ' + SECRET]),
            {'content_type': TYPED}, (400,)),
    RpcCase('rpc_yaml_python_object_unregistered',
            b'!!python/object:subprocess.Popen {args: x}', {}, (400,)),
    RpcCase('rpc_content_type_invalid_utf8', JSON_BODY, {'content_type': b'\xff\xfe'},
            (400,)),
    RpcCase('rpc_oversize', b'"' + SECRET.encode() + b'x' * MAX_SIZE + b'"',
            {'content_type': JSON}, (413,)),
    RpcCase('rpc_reply_to_invalid_utf8', JSON_BODY,
            {'content_type': JSON, 'reply_to': b'\xff'}, None),
    RpcCase('rpc_correlation_id_invalid_utf8', JSON_BODY,
            {'content_type': JSON, 'correlation_id': b'\xff'}, (200,)),
    RpcCase('rpc_processor_error_with_lone_surrogate', b'"\\udcff"',
            {'content_type': JSON}, (500,), 'ValueError'),
    # Decodes (YAML nests up to 1000 levels), but the result is too deep
    # to encode: refused at decoding (400), or an error reply (500).
    RpcCase('rpc_result_too_deep_to_encode', b'echo: ' + _nested(990, b''), {},
            (400, 500)),
    # Decodes (4000 hexadecimal digits are under the 4300 characters a YAML
    # number may take), but Python will not write the result in decimal
    # (about 4800 digits, over its 4300): an error reply.
    RpcCase('rpc_result_integer_too_long_to_encode', b'echo: 0x' + b'f' * 4000, {},
            (500,)),
]


def _answer(message: Any) -> Any:
    """The RPC processor: raises ``ValueError(message)`` for text, returns
    ``message['echo']`` for an echo request, else ``'done'`` (never the
    message itself: a billion-laughs value would not fit in a reply)."""
    if isinstance(message, str):
        raise ValueError(message)
    if isinstance(message, dict) and 'echo' in message:
        return message['echo']
    return 'done'


# Helpers.

_short = reprlib.Repr()
_short.maxlevel, _short.maxlist, _short.maxdict = 3, 4, 4
_short.maxstring = _short.maxother = 60


def _is_good(message: Any) -> bool:
    # Cheap on any value (a nesting or billion-laughs bomb included).
    return type(message) is dict and len(message) == 1 and message.get('ok') == 1


def _received(collector: Collector) -> list[Any]:
    return [m for m, _, _ in collector.messages]


def _consumer_running() -> bool:
    return any(t.name == CONSUMER_THREAD and t.is_alive() for t in threading.enumerate())


def _wait(condition: Any, step: Any = None) -> bool:
    """Wait until ``condition()``, for at most :data:`JOIN_TIMEOUT` and no
    longer than the consumer thread lives; ``step`` waits a little (default:
    50 ms). Returns ``condition()``.

    It does not fail the test: :func:`running_consumer` then reports what
    ended the consumer thread.
    """
    deadline = time.monotonic() + JOIN_TIMEOUT
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline or not _consumer_running():
            return bool(condition())
        if step is None:
            pause.wait(0.05)
        else:
            step()
    return True


def _publish(channel, queue: str, body: bytes, properties: dict[str, Any]) -> None:
    channel.basic_publish('', queue, body, pika.BasicProperties(**properties),
                          mandatory=True)


def _queue_depth(queue: str) -> int:
    with raw_channel() as channel:
        return channel.queue_declare(queue, passive=True).method.message_count


class DeadLetters:
    """A fanout exchange and a queue bound to it that collects its letters."""

    def __init__(self, name: str) -> None:
        self.exchange = self.queue = name

    def take(self, expected: int) -> list[tuple[pika.BasicProperties, bytes]]:
        """Wait until ``expected`` letters arrived (at most
        :data:`JOIN_TIMEOUT`), then take all there are."""
        deadline = time.monotonic() + JOIN_TIMEOUT
        pause = threading.Event()
        letters = []
        with raw_channel() as channel:
            while (channel.queue_declare(self.queue, passive=True).method.message_count
                   < expected and time.monotonic() < deadline):
                pause.wait(0.05)
            while True:
                method, properties, body = channel.basic_get(self.queue, auto_ack=True)
                if method is None:
                    return letters
                letters.append((properties, body))


@pytest.fixture
def dead_letters():
    name = 'test-dlx-' + uuid.uuid4().hex
    with raw_channel() as channel:
        channel.exchange_declare(name, 'fanout', durable=False)
        channel.queue_declare(name, durable=False)
        channel.queue_bind(name, name)
    try:
        yield DeadLetters(name)
    finally:
        with raw_channel() as channel:
            channel.queue_delete(name)
            channel.exchange_delete(name)


def _check_dead_letters(dead_letters: DeadLetters, queue: str,
                        rejected: Optional[bytes]) -> None:
    """The dead-letter queue holds ``rejected`` once (rejected, from
    ``queue``), or nothing; ``queue`` itself is empty (nothing requeued)."""
    assert _queue_depth(queue) == 0, 'a message went back to the queue'
    letters = dead_letters.take(0 if rejected is None else 1)
    if rejected is None:
        assert not letters, 'dead-lettered: {}'.format(
            [_short.repr(body) for _, body in letters])
        return
    assert len(letters) == 1, 'dead letters: {}'.format(
        [_short.repr(body) for _, body in letters])
    properties, body = letters[0]
    assert body == rejected
    death = properties.headers['x-death'][0]
    assert (death['reason'], death['queue'], death['count']) == ('rejected', queue, 1)


def _check_logs(caplog: pytest.LogCaptureFixture, expected_warnings: int) -> None:
    """No record shows :data:`SECRET`; occo logged ``expected_warnings``
    records at WARNING or above."""
    formatter = logging.Formatter()
    leaks = [r.getMessage() for r in caplog.records
             if SECRET in r.getMessage()
             or (r.exc_info and SECRET in formatter.formatException(r.exc_info))]
    assert not leaks, 'a log record shows the body: {}'.format(
        [_short.repr(m) for m in leaks])
    warnings = [r.getMessage() for r in caplog.records
                if r.name.startswith('occo') and r.levelno >= logging.WARNING]
    assert len(warnings) == expected_warnings, warnings


def _check_processed(collector: Collector, case: Case, good_arrived: bool) -> None:
    """The processor saw the hostile message once (an equal value) or not
    at all, then the good one once."""
    received = _received(collector)
    shown = [_short.repr(m) for m in received]
    assert good_arrived, 'the good message after {} was not processed: {}'.format(
        case.name, shown)
    if case.expected == PROCESSED:
        ok = len(received) == 2 and _is_good(received[1]) and received[0] == case.value
    else:
        ok = len(received) == 1 and _is_good(received[0])
    assert ok, 'expected {} then the good message, got {}'.format(case.expected, shown)


# The tests.

@pytest.mark.parametrize('case', CASES, ids=lambda c: c.name)
def test_consumer_survives_hostile_message(case, dead_letters, caplog):
    caplog.set_level(logging.DEBUG)
    config = amqp_config(dead_letter_exchange=dead_letters.exchange,
                         max_message_size=MAX_SIZE)
    collector = Collector()
    with running_consumer(collector, **config):
        with raw_channel() as channel:
            channel.confirm_delivery()
            _publish(channel, config['queue'], case.body, case.properties)
            _publish(channel, config['queue'], GOOD_BODY, {'content_type': JSON})
        arrived = _wait(lambda: any(_is_good(m) for m in _received(collector)))
    _check_processed(collector, case, arrived)
    _check_dead_letters(dead_letters, config['queue'],
                        case.body if case.expected == REJECTED else None)
    _check_logs(caplog, 1 if case.expected == REJECTED else 0)


@pytest.mark.parametrize('case', RPC_CASES, ids=lambda c: c.name)
def test_consumer_answers_hostile_rpc_request(case, dead_letters, caplog):
    caplog.set_level(logging.DEBUG)
    config = amqp_config(dead_letter_exchange=dead_letters.exchange,
                         max_message_size=MAX_SIZE)
    properties = dict({'reply_to': DIRECT_REPLY_TO, 'correlation_id': 'c1'},
                      **case.properties)
    hostile_id = properties['correlation_id']
    replies: dict[Any, list[bytes]] = {}
    collector = Collector(result=_answer)
    with running_consumer(collector, **config):
        with raw_channel() as channel:
            channel.basic_consume(
                DIRECT_REPLY_TO, auto_ack=True,
                on_message_callback=lambda ch, method, props, body: replies.setdefault(
                    props.correlation_id, []).append(body))
            channel.confirm_delivery()
            _publish(channel, config['queue'], case.body, properties)
            _publish(channel, config['queue'], GOOD_BODY, {
                'content_type': JSON, 'reply_to': DIRECT_REPLY_TO,
                'correlation_id': 'c2'})
            answered = _wait(lambda: 'c2' in replies, lambda: (
                channel.connection.process_data_events(time_limit=0.05)))
    # Replies leave in processing order: the hostile one's came first.
    assert answered, 'the good request after {} got no reply'.format(case.name)
    assert [json.loads(r) for r in replies.pop('c2')] == [{'code': 200, 'data': 'done'}]
    got = [json.loads(r) for r in replies.pop(hostile_id, [])]
    assert not replies, 'replies to unknown correlation ids: {}'.format(replies)
    if case.codes is None:
        assert got == [], 'a request that cannot be answered got a reply'
        code = None
    else:
        assert len(got) == 1, got
        code = got[0]['code']
        assert code in case.codes, got[0]
    if code == 500:
        error = got[0]['error']
        assert isinstance(error['type'], str) and isinstance(error['message'], str)
        assert case.error_type in (None, error['type']), error
    answered_ok = code in (200, 500)   # else rejected unprocessed
    assert len(collector.messages) == (2 if answered_ok else 1), [
        _short.repr(m) for m in _received(collector)]
    _check_dead_letters(dead_letters, config['queue'],
                        None if answered_ok else case.body)
    _check_logs(caplog, 0 if code == 200 else 1)


@pytest.mark.parametrize('case', MEMORY_CASES, ids=lambda c: c.name)
def test_memory_consumer_survives_hostile_body(case, caplog):
    caplog.set_level(logging.DEBUG)
    config = memory_config(max_message_size=MAX_SIZE)
    collector = Collector()
    with running_consumer(collector, **config):
        # No raw path into memory: put the messages in its queue directly.
        for body, content_type in [(case.body, case.properties.get('content_type')),
                                   (GOOD_BODY, JSON)]:
            assert memory.default_broker.publish(
                config['queue'], memory._Message(body, content_type))
        arrived = _wait(lambda: any(_is_good(m) for m in _received(collector)))
    _check_processed(collector, case, arrived)
    _check_logs(caplog, 1 if case.expected == REJECTED else 0)
