# SPDX-License-Identifier: Apache-2.0
"""The wire format: safe decoding and the reply envelope."""

import json
import random

import pytest
import yaml

from occo.util.communication import codec, comm, safe_yaml
from occo.util.exceptions import ApplicationError, CriticalError, TransientError


@pytest.mark.parametrize('message, content_type', [
    ('text', codec.TEXT), (b'\x00', codec.BINARY), ({'a': 1}, codec.JSON),
    ([1, 2], codec.JSON), (3.5, codec.JSON), (None, codec.JSON)])
def test_encode_picks_content_type_and_decode_inverts_it(message, content_type):
    body, chosen = codec.encode(message)
    assert chosen == content_type
    assert codec.decode(body, chosen) == message


@pytest.mark.parametrize('content_type', [None, '', 'application/x-yaml',
                                          'text/yaml; charset=utf-8'])
def test_yaml_bodies_are_read_with_the_safe_loader(content_type):
    assert codec.decode(b'a: [1, 2]\nb: x\n', content_type) == {'a': [1, 2], 'b': 'x'}


@pytest.mark.parametrize('payload', [
    b'!!python/object/apply:os.system ["true"]',
    b'!!python/object/new:builtins.dict {}',
    b'!!python/name:os.system',
])
def test_yaml_python_tags_are_refused(payload):
    with pytest.raises(codec.MessageDecodeError, match='refused YAML'):
        codec.decode(payload, None)


def test_unknown_content_type_is_refused():
    with pytest.raises(codec.MessageDecodeError, match="unsupported content type 'image/png'"):
        codec.decode(b'x', 'image/png')


def test_reply_round_trips_values_bytes_and_responses():
    assert codec.result_from_reply(codec.encode_reply({'r': 1})) == {'r': 1}
    assert codec.result_from_reply(codec.encode_reply(b'\x01')) == b'\x01'
    assert codec.result_from_reply(codec.encode_reply(comm.Response(202, 'ok'))) == 'ok'
    with pytest.raises(TransientError):
        codec.result_from_reply(codec.encode_reply(comm.Response(500, 'x')))


def test_error_reply_becomes_application_error():
    try:
        raise KeyError('missing')
    except KeyError as e:
        body = codec.error_reply(e, 'Traceback: here')
    with pytest.raises(ApplicationError) as info:
        codec.result_from_reply(body)
    assert (info.value.remote_type, info.value.remote_traceback) == ('KeyError', 'Traceback: here')


@pytest.mark.parametrize('body', [b'not json', b'[]', b'{"no": "code"}'])
def test_malformed_reply_raises_critical_error(body):
    with pytest.raises(CriticalError, match='malformed RPC reply'):
        codec.result_from_reply(body)


# Limits: nesting depth, YAML expansion.

def nested_json(depth, opener=b'[', closer=b']'):
    return opener * depth + b'1' + closer * depth


def laughs(levels, width=9):
    """The "billion laughs" YAML: ``width ** levels`` strings from a few lines."""
    lines = ['a0: &a0 "lol"']
    for level in range(1, levels + 1):
        refs = ', '.join(['*a{}'.format(level - 1)] * width)
        lines.append('a{0}: &a{0} [{1}]'.format(level, refs))
    return '\n'.join(lines).encode()


@pytest.mark.parametrize('body', [
    b'[' * 100000 + b']' * 100000,
    nested_json(codec.MAX_DEPTH + 1),
    b'{"a":' * (codec.MAX_DEPTH + 1) + b'1' + b'}' * (codec.MAX_DEPTH + 1),
    # brackets inside strings must not hide the real nesting
    b'["]",' * (codec.MAX_DEPTH + 1) + b'1' + b',"["]' * (codec.MAX_DEPTH + 1),
    b'["\\\\","]",' * (codec.MAX_DEPTH + 1) + b'1' + b',"\\"["]' * (codec.MAX_DEPTH + 1),
])
def test_decode_refuses_json_nested_deeper_than_max_depth(body):
    with pytest.raises(codec.MessageDecodeError, match='deeper than 256 levels'):
        codec.decode(body, codec.JSON)


@pytest.mark.parametrize('message', [
    json.loads(nested_json(codec.MAX_DEPTH)),
    ['[' * 1000, '{' * 1000],
    [{'k': '\\"' + '[' * 300}, '\\', '"]]]"'] * 200,
    [{'i': i, 'tags': ['a', 'b']} for i in range(500)],
])
def test_decode_accepts_json_up_to_max_depth_whatever_its_strings_hold(message):
    body, content_type = codec.encode(message)
    assert codec.decode(body, content_type) == message


def random_value(rng, depth):
    """A value nesting ``depth`` levels or a little more, with strings full of brackets."""
    def text():
        return ''.join(rng.choice('[]{}"\\ab') for _ in range(rng.randrange(6)))
    value = text()
    for _ in range(depth):
        siblings = [text() if rng.random() < 0.7 else [[text()]] for _ in range(rng.randrange(3))]
        if rng.random() < 0.5:
            value = siblings + [value]
        else:
            value = dict({text(): s for s in siblings}, key=value)
    return value


def depth_of(value):
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list):
        return 0
    return 1 + max(map(depth_of, value), default=0)


def test_decode_depth_limit_matches_the_real_depth_of_random_values():
    rng = random.Random(7)
    for _ in range(200):
        value = random_value(rng, rng.randrange(codec.MAX_DEPTH - 4, codec.MAX_DEPTH + 2))
        body = json.dumps(value).encode()
        if depth_of(value) <= codec.MAX_DEPTH:
            assert codec.decode(body, codec.JSON) == json.loads(body)
        else:
            with pytest.raises(codec.MessageDecodeError, match='deeper than'):
                codec.decode(body, codec.JSON)


def test_decode_refuses_json_that_is_not_utf8():
    with pytest.raises(codec.MessageDecodeError, match='not UTF-8'):
        codec.decode(json.dumps([1, 2]).encode('utf-16'), codec.JSON)


def test_decode_turns_a_recursion_error_into_a_decode_error(monkeypatch):
    def overflow(body):
        raise RecursionError('maximum recursion depth exceeded')
    monkeypatch.setattr(codec, '_loads', overflow)
    with pytest.raises(codec.MessageDecodeError, match='maximum recursion depth'):
        codec.decode(b'[1]', codec.JSON)


@pytest.fixture(params=['CSafeLoader', 'SafeLoader'])
def yaml_loader(request, monkeypatch):
    """Run a test with libyaml's loader, and with the pure Python one."""
    loader = getattr(yaml, request.param, None)
    if loader is None:
        pytest.skip('PyYAML was built without libyaml')
    monkeypatch.setattr(safe_yaml, '_SafeLoader', loader)
    return loader


@pytest.mark.parametrize('body', [
    b'[' * 100000 + b']' * 100000,                  # flow style, beyond libyaml's 1000
    b'- ' * 100000 + b'x',                          # block style
    b'[' * (codec.MAX_DEPTH + 1) + b']' * (codec.MAX_DEPTH + 1),
    b''.join(b' ' * i + b'k:\n' for i in range(codec.MAX_DEPTH + 1)) + b' ' * 300 + b'x',
])
def test_decode_refuses_yaml_nested_deeper_than_max_depth(yaml_loader, body):
    with pytest.raises(codec.MessageDecodeError, match='refused YAML body'):
        codec.decode(body, None)


def test_decode_accepts_yaml_up_to_max_depth(yaml_loader):
    depth = codec.MAX_DEPTH if yaml_loader is yaml.CSafeLoader else 100
    body = b'[' * depth + b'1' + b']' * depth
    assert codec.decode(body, None) == json.loads(body)


def test_decode_refuses_yaml_whose_aliases_expand_beyond_max_size():
    body = laughs(9)
    with pytest.raises(codec.MessageDecodeError, match='expands to more than 4194304'):
        codec.decode(body, None, max_size=4 * 1024 * 1024)


def test_decode_counts_an_alias_each_time_it_is_referenced():
    body = b'a: &a "0123456789"\nb: [' + b', '.join([b'*a'] * 10) + b']\n'
    assert len(body) < 100
    assert codec.decode(body, None, max_size=200)['b'] == ['0123456789'] * 10
    with pytest.raises(codec.MessageDecodeError, match='expands to more than 100'):
        codec.decode(body, None, max_size=100)


def test_decode_measures_ordinary_yaml_within_max_size():
    body = b'a: []\nb: {}\nc: [[], {x: [1]}]\nd: &d [1, 2]\ne: *d\n'
    assert codec.decode(body, None, max_size=len(body)) == {
        'a': [], 'b': {}, 'c': [[], {'x': [1]}], 'd': [1, 2], 'e': [1, 2]}


def test_decode_refuses_a_yaml_alias_to_itself():
    with pytest.raises(codec.MessageDecodeError, match='refers to itself'):
        codec.decode(b'a: &a [1, *a]', None)


@pytest.mark.parametrize('body', [
    b'd: 2001-02-30',                   # the safe loader builds a date: ValueError
    b'n: ' + b'9' * 5000,               # more digits than int() takes
    b'? [1]\n: x',                      # unhashable key
    b'a: *missing',
    b'!!bool maybe',
    b'x: 1' + b':00' * 200 + b'.5',     # base 60 float: OverflowError
])
def test_decode_refuses_yaml_values_that_cannot_be_built(yaml_loader, body):
    with pytest.raises(codec.MessageDecodeError, match='refused YAML body'):
        codec.decode(body, None)


@pytest.mark.parametrize('body', [b'1' + b':00' * 100000, b'n: 1' + b':00' * 100000,
                                  b'!!int 1' + b'0' * 100000])
def test_decode_refuses_long_yaml_numbers_before_building_them(body):
    # PyYAML builds base 60 integers in quadratic time: minutes for 4 MiB
    with pytest.raises(codec.MessageDecodeError, match='number written in more than 4300'):
        codec.decode(body, None)


def test_yaml_decode_error_does_not_quote_the_body(yaml_loader):
    with pytest.raises(codec.MessageDecodeError) as info:
        codec.decode(b'a: 1\npassword: hunter2 :x:', None)
    assert 'hunter2' not in str(info.value)
    assert 'line 2, column 21' in str(info.value)


@pytest.mark.parametrize('content_type', [b'application/json', b'\xff\xfe', 5, ['x']])
def test_decode_refuses_a_content_type_that_is_not_text(content_type):
    with pytest.raises(codec.MessageDecodeError, match='content type .* is not text'):
        codec.decode(b'{}', content_type)


# Lone surrogates: valid UTF-8 on the wire, the same str at the other end.

@pytest.mark.parametrize('message', [{'k': '\udcff'}, ['a\ud800b'], '\udcff'])
def test_json_encoders_escape_lone_surrogates(message):
    body, content_type = codec.encode([message])
    body.decode('utf-8')
    assert codec.decode(body, content_type) == [message]
    reply = codec.encode_reply(message)
    reply.decode('utf-8')
    assert codec.result_from_reply(reply) == message


def test_encode_keeps_non_ascii_text_as_utf8():
    assert codec.encode({'k': 'é€'})[0] == '{"k":"é€"}'.encode()
    assert 'é€'.encode() in codec.encode_reply('é€')


def test_encode_refuses_a_str_with_a_lone_surrogate_naming_it():
    with pytest.raises(ValueError, match=r"lone surrogate '\\udcff' at index 2"):
        codec.encode('ab\udcff')


def test_error_reply_carries_a_lone_surrogate_to_the_caller():
    body = codec.error_reply(ValueError('bad \udcff'), 'Traceback: bad \udcff')
    body.decode('utf-8')
    with pytest.raises(ApplicationError) as info:
        codec.result_from_reply(body)
    assert info.value.remote_message == 'bad \udcff'
    assert info.value.remote_traceback == 'Traceback: bad \udcff'


def test_failure_reply_carries_a_lone_surrogate_to_the_caller():
    with pytest.raises(CriticalError) as info:
        codec.result_from_reply(codec.failure_reply(400, 'bad \udcff'))
    assert info.value.reason == 'bad \udcff'


def test_error_reply_of_an_unprintable_exception_is_still_a_reply():
    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError('no text')

    with pytest.raises(ApplicationError) as info:
        codec.result_from_reply(codec.error_reply(Unprintable()))
    assert info.value.remote_type == 'Unprintable'
    assert 'str() failed' in info.value.remote_message


# Malformed replies: always CriticalError 502.

@pytest.mark.parametrize('body', [
    b'{"code": 200, "error": 5}', b'{"code": 1e999}', b'{"code": "x"}', b'[1,2]',
    b'"str"', b'{"code": 200, "bytes": 5}', b'{"code": 200, "bytes": "!!notbase64"}',
    b'{"code": 99999}', b'{"code": 99}', b'{"code": 600}', b'{"code": true}',
    b'{"code": null}', b'{"code": 500, "error": {"type": 5, "message": null}}',
    b'{"code": 500, "error": {"type": "E"}}',
    b'{"code": 500, "error": {"type": "E", "message": "m", "traceback": 7}}',
    b'\xff\xfe{', b'', b'{"code": 200, "data": ' + b'[' * 100000 + b']' * 100000 + b'}',
])
def test_result_from_reply_refuses_malformed_replies_with_502(body):
    with pytest.raises(CriticalError) as info:
        codec.result_from_reply(body)
    assert info.value.http_code == 502
    assert info.value.reason.startswith('malformed RPC reply')


def test_result_from_reply_accepts_data_as_deep_as_a_message():
    data = json.loads(nested_json(codec.MAX_DEPTH))
    assert codec.result_from_reply(codec.encode_reply(data)) == data


@pytest.mark.parametrize('code, error', [(100, TransientError), (599, TransientError),
                                         (400, CriticalError)])
def test_result_from_reply_keeps_any_http_status(code, error):
    with pytest.raises(error) as info:
        codec.result_from_reply(codec.encode_reply(comm.Response(code, 'why')))
    assert (info.value.http_code, info.value.reason) == (code, 'why')
