# SPDX-License-Identifier: Apache-2.0
"""The wire format: safe decoding and the reply envelope."""

import pytest

from occo.util.communication import codec, comm
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
