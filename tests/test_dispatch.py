# SPDX-License-Identifier: Apache-2.0
"""What a consumer does with one message: every message gets an outcome."""

import json
import logging

import pytest

from occo.util.communication import codec, dispatch
from occo.util.exceptions import ApplicationError, CriticalError

SECRET = 's3cr3t-body'


def echo(message):
    return message


def handle(body, content_type=codec.JSON, processor=echo, wants_reply=True,
           message_id='m-1', max_size=None):
    return dispatch.handle(processor, (), {}, body, content_type, wants_reply,
                           message_id, max_size)


def reply_error(outcome):
    """The error the RPC caller gets from ``outcome``'s reply."""
    with pytest.raises((ApplicationError, CriticalError)) as info:
        codec.result_from_reply(outcome.reply)
    return info.value


def rejections(caplog):
    return [r for r in caplog.records if r.getMessage().startswith('Rejected')]


def test_handle_acknowledges_a_processed_request_and_replies_with_the_result():
    outcome = handle(b'{"k": [1, 2]}')
    assert outcome.ack
    assert codec.result_from_reply(outcome.reply) == {'k': [1, 2]}


@pytest.mark.parametrize('body, content_type', [
    (b'[' * 100000 + b']' * 100000, codec.JSON),
    (b'[' * 100000 + b']' * 100000, None),
    (b'- ' * 100000 + b'x', 'application/yaml'),
    (b'{}', b'\xff\xfe'),
    (b'{}', 42),
    (b'd: 2001-02-30', None),
])
def test_handle_rejects_an_undecodable_request_with_400(body, content_type):
    calls = []
    outcome = handle(body, content_type, processor=calls.append)
    assert (outcome.ack, calls) == (False, [])
    error = reply_error(outcome)
    assert isinstance(error, CriticalError) and error.http_code == 400


def test_handle_rejects_a_yaml_bomb_within_max_size_unprocessed():
    lines = ['a0: &a0 "lol"'] + ['a{0}: &a{0} [{1}]'.format(i, ', '.join(
        ['*a{}'.format(i - 1)] * 9)) for i in range(1, 10)]
    body = '\n'.join(lines).encode()
    calls = []
    outcome = handle(body, None, processor=calls.append, max_size=64 * 1024)
    assert (outcome.ack, calls) == (False, [])
    assert 'expands to more than 65536' in reply_error(outcome).reason


def test_handle_replies_413_to_a_request_over_max_size():
    calls = []
    outcome = handle(b'"' + b'x' * 100 + b'"', processor=calls.append, max_size=100)
    assert (outcome.ack, calls) == (False, [])
    error = reply_error(outcome)
    assert error.http_code == 413
    assert '102 bytes exceeds max_message_size (100 bytes)' in error.reason


def test_handle_rejects_a_one_way_message_it_cannot_decode_without_reply():
    outcome = handle(b'[' * 100000, wants_reply=False)
    assert (outcome.ack, outcome.reply) == (False, None)


def test_handle_answers_a_processor_error_holding_a_lone_surrogate():
    def fail(message):
        raise ValueError(message)

    outcome = handle(b'"\\udcff"', processor=fail)
    assert outcome.ack
    outcome.reply.decode('utf-8')
    error = reply_error(outcome)
    assert (error.remote_type, error.remote_message) == ('ValueError', '\udcff')


def test_handle_answers_an_unencodable_result_with_an_application_error():
    outcome = handle(b'1', processor=lambda message: {1j})
    assert outcome.ack
    assert reply_error(outcome).remote_type == 'TypeError'


def test_handle_answers_a_processor_error_that_cannot_be_printed(caplog):
    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError('no text')

    def fail(message):
        raise Unprintable()

    outcome = handle(b'1', processor=fail)
    assert outcome.ack
    assert reply_error(outcome).remote_type == 'Unprintable'
    assert 'Unprintable' in caplog.text


def test_handle_answers_a_result_failing_in_the_encoder_with_500(caplog):
    class Hostile(dict):
        def items(self):
            raise RuntimeError('items failed')

    outcome = handle(b'1', processor=lambda message: Hostile(a=1))
    assert not outcome.ack
    error = reply_error(outcome)
    assert (error.remote_type, error.remote_message) == ('RuntimeError', 'items failed')
    [record] = rejections(caplog)
    assert 'RuntimeError: items failed' in record.getMessage()


@pytest.mark.parametrize('wants_reply', [True, False])
def test_handle_rejects_a_message_when_the_decoder_fails_unexpectedly(
        wants_reply, monkeypatch, caplog):
    def broken(body, content_type, max_size=None):
        raise RuntimeError('decoder bug')

    monkeypatch.setattr(codec, 'decode', broken)
    outcome = handle(b'1', wants_reply=wants_reply)
    assert not outcome.ack
    assert (outcome.reply is None) is not wants_reply
    assert len(rejections(caplog)) == 1


@pytest.mark.parametrize('wants_reply', [True, False])
def test_handle_survives_a_processor_raising_a_base_exception(wants_reply):
    class Odd(BaseException):
        pass

    def fail(message):
        raise Odd('odd')

    outcome = handle(b'1', processor=fail, wants_reply=wants_reply)
    assert outcome.ack is wants_reply
    if wants_reply:
        assert reply_error(outcome).remote_type == 'Odd'


@pytest.mark.parametrize('fatal', [KeyboardInterrupt, SystemExit])
def test_handle_lets_keyboard_interrupt_and_system_exit_through(fatal):
    def stop(message):
        raise fatal()

    with pytest.raises(fatal):
        handle(b'1', processor=stop)


def test_handle_logs_a_rejected_message_once_by_id_without_the_body(caplog):
    caplog.set_level(logging.INFO, logger='occo.util.communication')
    body = 'password: {} :x:'.format(SECRET).encode()
    handle(body, 'application/yaml', message_id=b'\xff-id')
    [record] = rejections(caplog)
    text = record.getMessage()
    assert "b'\\xff-id'" in text and "'application/yaml'" in text
    assert '{} bytes'.format(len(body)) in text
    assert SECRET not in caplog.text


def test_handle_logs_a_failed_one_way_message_once_with_its_traceback(caplog):
    def fail(message):
        raise ValueError('no good')

    outcome = handle(json.dumps(SECRET).encode(), processor=fail, wants_reply=False)
    assert (outcome.ack, outcome.reply) == (False, None)
    [record] = rejections(caplog)
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert record.getMessage() == (
        "Rejected message 'm-1' (content type 'application/json', 13 bytes): "
        "the processor raised ValueError: no good")


def test_handle_logs_a_message_id_that_cannot_be_printed(caplog):
    class Unprintable:
        def __repr__(self):
            raise RuntimeError('no repr')

    outcome = handle(b'[', message_id=Unprintable())
    assert not outcome.ack
    [record] = rejections(caplog)
    assert '<unprintable Unprintable>' in record.getMessage()


HOSTILE_BODIES = [
    b'', b'\xff\xfe\x00', b'\x00' * 10, b'[' * 5000, b'{"a":' * 5000, b'"\\ud800"',
    b'!!python/object/apply:os.system ["true"]', b'&a [*a]', b'1' * 5000,
    b'--- 1\n--- 2', b'%YAML 9.9\n--- x', b'\t\x07', b'\xef\xbb\xbf{}',
]
HOSTILE_TYPES = [None, codec.JSON, codec.TEXT, codec.BINARY, 'application/yaml',
                 'text/plain; charset=latin-1', 'image/png', '', b'\xff', 0]


@pytest.mark.parametrize('body', HOSTILE_BODIES)
@pytest.mark.parametrize('content_type', HOSTILE_TYPES)
def test_handle_gives_every_message_an_outcome(body, content_type):
    for wants_reply in (True, False):
        outcome = handle(body, content_type, processor=repr, wants_reply=wants_reply,
                         max_size=4096)
        assert isinstance(outcome, dispatch.Outcome)
        if not wants_reply:
            assert outcome.reply is None
            continue
        json.loads(outcome.reply.decode('utf-8'))
        try:
            codec.result_from_reply(outcome.reply)
        except CriticalError as e:
            assert e.http_code in (400, 413)
