# SPDX-License-Identifier: Apache-2.0
"""The wire format: how messages and RPC replies become bytes and back.

A message is any JSON-able value, a ``str`` or ``bytes``; the receiver gets
an equal value of the same kind. The ``content_type`` says how the body is
encoded:

=============================  =============================================
content type                   body
=============================  =============================================
``application/json``           JSON (every value that is not str or bytes)
``text/plain; charset=utf-8``  a ``str``, UTF-8 encoded
``application/octet-stream``   ``bytes``, as they are
none, or a YAML type           YAML, read with the *safe* loader only (the
                               original OCCO components sent YAML)
=============================  =============================================

Nothing is ever decoded with ``yaml.load``, ``pickle`` or ``eval``: a YAML
body that asks for a Python object (``!!python/object/apply:...``) is refused
with :class:`MessageDecodeError`.

An RPC reply is a JSON object, content type :data:`REPLY_CONTENT_TYPE`:

* ``{"code": 200, "data": value}`` a result (``"bytes"``: base64 data for
  ``bytes`` results);
* ``{"code": 4xx|5xx, "data": reason}`` a :class:`~.comm.Response` with a
  failure code, or a request the consumer could not decode (400);
* ``{"code": 500, "error": {"type": ..., "message": ..., "traceback": ...}}``
  the processor raised.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Optional

import yaml

from ..exceptions import ApplicationError, CriticalError, OccoError
from .comm import Message, Response

__all__ = [
    'MessageDecodeError', 'encode', 'check_size', 'decode', 'encode_reply', 'error_reply',
    'failure_reply', 'result_from_reply', 'JSON', 'TEXT', 'BINARY',
    'REPLY_CONTENT_TYPE', 'YAML_CONTENT_TYPES',
]

#: Content type of JSON bodies (every message that is not str or bytes).
JSON = 'application/json'
#: Content type of ``str`` messages.
TEXT = 'text/plain; charset=utf-8'
#: Content type of ``bytes`` messages.
BINARY = 'application/octet-stream'
#: Content type of RPC replies.
REPLY_CONTENT_TYPE = 'application/vnd.occo.reply+json'
#: Content types read as YAML (with the safe loader), besides none at all.
YAML_CONTENT_TYPES = frozenset([
    'application/yaml', 'application/x-yaml', 'text/yaml', 'text/x-yaml'])

_SafeLoader = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(',', ':')).encode
_loads = json.loads


class MessageDecodeError(OccoError, ValueError):
    """A message body cannot be decoded safely.

    The consumer rejects such a message without requeueing it; an RPC caller
    gets a :class:`~occo.util.exceptions.CriticalError` (400).
    """


def encode(message: Message) -> tuple[bytes, str]:
    """Encode a message for the wire.

    :param message: a JSON-able value, ``str`` or ``bytes``.
    :returns: ``(body, content_type)``.
    :raises TypeError: when the message cannot be encoded as JSON.
    """
    if isinstance(message, str):
        return message.encode('utf-8'), TEXT
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message), BINARY
    try:
        return _dumps(message).encode('utf-8'), JSON
    except (TypeError, ValueError) as e:
        raise TypeError(
            'cannot send a message of type {}: it must be a JSON-able value, '
            'str or bytes ({})'.format(type(message).__name__, e)) from e


def check_size(body: bytes, limit: int) -> None:
    """Refuse a body longer than ``limit`` bytes (``max_message_size``).

    :raises CriticalError: (413) naming both sizes.
    """
    if len(body) > limit:
        raise CriticalError(413, 'message of {} bytes exceeds max_message_size '
                            '({} bytes)'.format(len(body), limit))


def decode(body: bytes, content_type: Optional[str]) -> Message:
    """Decode a message body according to its content type.

    :param body: the message body.
    :param content_type: the ``content_type`` property, or ``None``.
    :returns: the message.
    :raises MessageDecodeError: when the body cannot be decoded safely.
    """
    if content_type == JSON:
        try:
            return _loads(body)
        except ValueError as e:
            raise MessageDecodeError('invalid JSON body: {}'.format(e)) from e
    if content_type == TEXT:
        return _text(body)
    if content_type == BINARY:
        return bytes(body)
    if not content_type or content_type.split(';')[0].strip() in YAML_CONTENT_TYPES:
        return _safe_yaml(_text(body))
    base = content_type.split(';')[0].strip().lower()
    if base == 'text/plain':
        return _text(body)
    if base == 'application/json':
        return decode(body, JSON)
    raise MessageDecodeError(
        'unsupported content type {!r}'.format(content_type))


def _text(body: bytes) -> str:
    try:
        return bytes(body).decode('utf-8')
    except UnicodeDecodeError as e:
        raise MessageDecodeError('body is not UTF-8 text: {}'.format(e)) from e


def _safe_yaml(text: str) -> Any:
    loader = _SafeLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise MessageDecodeError(
            'refused YAML body: {}'.format(_one_line(e))) from e
    finally:
        loader.dispose()


def _one_line(error: BaseException) -> str:
    return ' '.join(str(error).split())


def encode_reply(result: Message) -> bytes:
    """Encode a processor's return value as an RPC reply body.

    :param result: a value, or a :class:`~.comm.Response`.
    :raises TypeError: when the data is not JSON-able.
    """
    code, data = 200, result
    if isinstance(result, Response):
        code, data = result.http_code, result.data
    if isinstance(data, (bytes, bytearray, memoryview)):
        envelope = {'code': code,
                    'bytes': base64.b64encode(bytes(data)).decode('ascii')}
    else:
        envelope = {'code': code, 'data': data}
    try:
        return _dumps(envelope).encode('utf-8')
    except (TypeError, ValueError) as e:
        raise TypeError('cannot send a result of type {}: it must be a '
                        'JSON-able value, str or bytes ({})'.format(
                            type(data).__name__, e)) from e


def error_reply(exc: BaseException, traceback_text: Optional[str] = None) -> bytes:
    """Encode a processor's exception as an RPC reply body."""
    envelope = {'code': 500, 'error': {
        'type': type(exc).__name__, 'message': str(exc),
        'traceback': traceback_text}}
    return _dumps(envelope).encode('utf-8')


def failure_reply(http_code: int, reason: str) -> bytes:
    """Encode a failure that is not the processor's (e.g. undecodable)."""
    return _dumps({'code': http_code, 'data': reason}).encode('utf-8')


def result_from_reply(body: bytes) -> Message:
    """Turn an RPC reply body into the result, or raise what it carries.

    :returns: the remote result.
    :raises ApplicationError: when the remote processor raised.
    :raises CriticalError: for a 4xx code, or a malformed reply.
    :raises TransientError: for a 5xx code.
    """
    try:
        envelope = _loads(body)
        code = int(envelope['code'])
    except (ValueError, TypeError, KeyError) as e:
        raise CriticalError(502, 'malformed RPC reply: {}'.format(e)) from e
    error = envelope.get('error')
    if error is not None:
        raise ApplicationError(str(error.get('type')), str(error.get('message')),
                               error.get('traceback'))
    data = (base64.b64decode(envelope['bytes']) if 'bytes' in envelope
            else envelope.get('data'))
    return Response(code, data).check()
