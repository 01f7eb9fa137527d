# SPDX-License-Identifier: Apache-2.0
"""JSON with orjson and without: the same bytes out, the same values in."""

import dataclasses
import datetime
import enum
import json
import math
import random
import tracemalloc
import uuid

import pytest

from occo.util.communication import codec, json_text

orjson = pytest.importorskip('orjson')


@pytest.fixture
def modes():
    """``run(function, *args)`` gives ``(fast, stdlib)`` outcomes: a value, or
    the exception's type."""
    def outcome(function, *args):
        try:
            return function(*args)
        except Exception as e:
            return type(e)

    def run(function, *args):
        assert json_text.use_fast(True)
        try:
            fast = outcome(function, *args)
        finally:
            json_text.use_fast(False)
        try:
            return fast, outcome(function, *args)
        finally:
            json_text.use_fast(True)
    return run


class Colour(enum.Enum):
    RED = 'red'


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Point:
    x: int


class Text(str):
    pass


EDGES = [
    None, True, 0, -1, 2 ** 63 - 1, 2 ** 64, -2 ** 70, 0.0, -0.0, 0.1, 1.5, 1e16, 1e22,
    1e-4, 1e-5, 1e-7, 5e-324, 1.7976931348623157e308, math.nan, math.inf, -math.inf,
    '', 'ünïcödé ✓', '\udcff', 'x\U0001f600', 'quote " back \\ slash', '\x00\x1f',
    [], {}, (1, 2), [1, [2, [3]]], {'a': {'b': [None]}}, {1: 'int key'},
    {True: 'bool key'}, {None: 'none key'}, {1.5: 'float key'}, {'\udcff': 'key'},
    Colour.RED, Level.HIGH, uuid.UUID(int=1), datetime.datetime(2026, 1, 1),
    Point(1), Text('sub'), b'bytes', {'set'}, {'nested': [Colour.RED]},
    [math.nan], {'f': 1e-7}, 'x' * 100000,
]


@pytest.mark.parametrize('value', EDGES, ids=lambda v: type(v).__name__ + ':' + repr(v)[:20])
def test_the_same_bytes_with_and_without_orjson(modes, value):
    fast, stdlib = modes(json_text.dumps, value)
    assert fast == stdlib


def random_value(rng, depth=0):
    choice = rng.randrange(12 if depth < 4 else 7)
    if choice == 0:
        return None
    if choice == 1:
        return rng.random() < 0.5
    if choice == 2:
        return rng.randrange(-2 ** 70, 2 ** 70) >> rng.randrange(70)
    if choice == 3:
        return rng.choice([rng.uniform(-1e6, 1e6), rng.random() * 10 ** rng.randrange(-30, 30),
                           math.nan, -0.0, math.inf])
    if choice in (4, 5, 6):
        alphabet = 'ab"\\\n\t é✓\U0001f600\udcff\x00'
        return ''.join(rng.choice(alphabet) for _ in range(rng.randrange(8)))
    if choice in (7, 8):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if choice == 9:
        return tuple(random_value(rng, depth + 1) for _ in range(rng.randrange(3)))
    keys = [rng.choice(['k', 'é', '\udcff', 1, 2.5, None, True]) for _ in range(rng.randrange(4))]
    return {key: random_value(rng, depth + 1) for key in keys}


def test_random_values_give_the_same_bytes(modes):
    rng = random.Random(2026)
    for _ in range(3000):
        value = random_value(rng)
        fast, stdlib = modes(json_text.dumps, value)
        assert fast == stdlib, value


def test_codec_messages_and_replies_are_the_same_bytes(modes):
    message = {'id': 7, 'payload': 'x' * 10240, 'ratio': 0.25, 'tags': ['a', 'ü']}
    assert len(set(modes(codec.encode, message))) == 1
    assert len(set(modes(codec.encode_reply, message))) == 1
    body, content_type = codec.encode(message)
    fast, stdlib = modes(codec.decode, body, content_type)
    assert fast == stdlib == message


#: Bodies where orjson alone would differ from json: it refuses some
#: (NaN, overflow, lone surrogates, a byte order mark) and reads integers
#: beyond 64 bits as floats; and bodies neither reads.
BODIES = [
    b'18446744073709551615', b'18446744073709551616', b'-9223372036854775809',
    b'[1, [2, {"deep": [3, -99999999999999999999999]}]]', b'{"a": 1e19, "b": -1e19}',
    b'[9223372036854775807.0, 1.5, 2]', b'NaN', b'[-Infinity]', b'1e400', b'{"n": -1e400}',
    b'"\\ud800"', '"\ud800"'.encode('utf-8', 'surrogatepass'), b'\xef\xbb\xbf[1]',
    b'{"a": 1, "a": 2}', b'[1.7976931348623157e308, 5e-324, -0.0, 0]', b'"\\u0000"',
    b'[1,]', b'01', b'{"a"}', b'\xff', b'', b'[' * 200 + b']' * 200,
    b'{"x": "' + b'y' * 100000 + b'"}',
]


def long(body):
    """``body`` with trailing blanks, long enough that orjson reads it."""
    return body + b' ' * json_text._FAST_LOADS_MIN


@pytest.mark.parametrize('body', BODIES, ids=lambda b: repr(b)[:30])
def test_the_same_values_with_and_without_orjson(modes, body):
    for text in (body, long(body)):
        fast, stdlib = modes(json_text.loads, text)
        assert repr(fast) == repr(stdlib)   # repr: tells 1e19 from 10**19, and nan


def test_random_bodies_give_the_same_values(modes):
    rng = random.Random(1430)
    for _ in range(3000):
        body = json.dumps(random_value(rng), default=repr).encode('utf-8', 'surrogatepass')
        fast, stdlib = modes(json_text.loads, long(body))
        assert repr(fast) == repr(stdlib), body


def test_integers_beyond_64_bits_stay_integers_at_any_depth():
    body = long(b'{"ids": [1, {"big": 123456789012345678901234567890}], "f": 0.5}')
    assert json_text.loads(body) == {'ids': [1, {'big': 123456789012345678901234567890}],
                                     'f': 0.5}
    assert type(json_text.loads(body)['ids'][1]['big']) is int


def test_orjson_reads_long_bodies_and_json_short_ones(monkeypatch):
    read_by_orjson = []
    monkeypatch.setattr(json_text, '_fast_loads',
                        lambda body: read_by_orjson.append(body) or orjson.loads(body))
    assert json_text.loads(b'[1]') == json_text.loads(long(b'[1]')) == [1]
    assert read_by_orjson == [long(b'[1]')]


def test_environment_switch_selects_the_standard_library(monkeypatch):
    import subprocess
    import sys
    code = 'from occo.util.communication import json_text; print(json_text.FAST)'
    for setting, expected in [('stdlib', 'False'), ('', 'True')]:
        env = dict(__import__('os').environ, OCCO_JSON=setting)
        out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                             text=True, check=True).stdout.strip()
        assert out == expected


def test_stdlib_json_is_what_the_bytes_must_equal():
    """The reference: what json.dumps writes, compact and not ASCII-escaped."""
    json_text.use_fast(False)
    try:
        assert json_text.dumps({'a': [1, 'é']}) == json.dumps(
            {'a': [1, 'é']}, ensure_ascii=False, separators=(',', ':')).encode()
    finally:
        json_text.use_fast(True)


@pytest.mark.parametrize('value', [
    {'id': 1, 'payload': 'x' * 60},
    {'id': 1, 'payload': 'x' * 10000},
    {'id': 1, 'payload': 'x' * (1024 * 1024)},
    ['é' * 100000],
], ids=['100 B', '10 KB', '1 MB', 'non-ASCII'])
def test_an_encoded_message_holds_no_more_memory_than_its_bytes(modes, value):
    """orjson hands back the buffer it wrote into, at least 4 KB and 16
    times a long string's length, and a message keeps its body while it
    waits for the broker's confirm; the body must hold only its bytes."""
    def held(value):
        json_text.dumps(value)   # orjson caches a str's UTF-8 in the str: not the body's
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            body = json_text.dumps(value)
            return len(body), tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    for size, allocated in modes(held, value):
        assert allocated < size + 256, (size, allocated)
