# SPDX-License-Identifier: Apache-2.0
"""The wire format: how messages and RPC replies become bytes and back.

A message is any JSON-able value, a ``str`` or ``bytes``, or a value that
holds objects of registered classes (see :mod:`~.message_types`); the
receiver gets an equal value of the same kind. The ``content_type`` says how
the body is encoded:

=============================  =============================================
content type                   body
=============================  =============================================
``application/json``           UTF-8 JSON (every value that is not str or
                               bytes)
``text/plain; charset=utf-8``  a ``str``, UTF-8 encoded
``application/octet-stream``   ``bytes``, as they are
:data:`TYPED_JSON`             UTF-8 JSON of a value holding registered
                               objects, as tagged states
none, or a YAML type           YAML, read with the *safe* loader only (the
                               original OCCO components sent YAML)
=============================  =============================================

Nothing is ever decoded with ``yaml.load``, ``pickle`` or ``eval``: a YAML
body that asks for a Python object (``!!python/object/apply:...``) is refused
with :class:`~occo.util.exceptions.MessageDecodeError`, but for
``!!python/object:mod.Cls`` of a registered class, which original
components sent.

An RPC reply is a JSON object, content type :data:`REPLY_CONTENT_TYPE`:

* ``{"code": 200, "data": value}`` a result (``"bytes"``: base64 data for
  ``bytes`` results; ``"typed"``: the tagged tree of a result that holds
  registered objects);
* ``{"code": 4xx|5xx, "data": reason}`` a :class:`~.comm.Response` with a
  failure code, a request the consumer could not decode (400) or one over
  its ``max_message_size`` (413);
* ``{"code": 500, "error": {"type": ..., "module": ..., "message": ...,
  "traceback": ...}}`` the processor raised, or returned an
  :class:`~.comm.ExceptionResponse` (with its code); ``args`` or
  ``exception`` let the caller rebuild it (see :mod:`~.remote_errors`).

``code`` is an integer from 100 to 599, ``type`` and ``message`` are
strings, ``traceback`` a string or ``null``; any other reply is malformed
(:func:`result_from_reply` raises a 502).

.. rubric:: Limits

Whatever a body holds, decoding it returns plain data or raises
:class:`~occo.util.exceptions.MessageDecodeError`; these limits keep it from recursing deeply or
doing work out of proportion to the body:

* JSON and YAML may nest at most :data:`MAX_DEPTH` levels of lists and
  mappings. A reply may nest one level more, for its envelope.
* YAML bodies are read by :mod:`~.safe_yaml`, which also bounds the size
  they expand to through their aliases by the ``max_size`` that
  :func:`decode` gets (the consumer passes its ``max_message_size``) and
  the length of numbers.
* A ``str`` may hold lone surrogates (``'\\udcff'``, e.g. from
  ``os.fsdecode``), which UTF-8 cannot encode. In JSON bodies and replies
  they are sent as ``\\udcff`` escapes, which decode to the same ``str``; a
  ``str`` message holding one is refused by :func:`encode` with a
  :class:`ValueError`, since ``text/plain`` has no escapes.
"""

from __future__ import annotations

import base64
import reprlib
import traceback
from typing import Any, Optional

from ..exceptions import ApplicationError, CriticalError
from ..exceptions import MessageDecodeError as MessageDecodeError  # re-exported
from . import json_text, message_types
from .comm import ExceptionResponse, Message, Response
from .remote_errors import error_fields, remote_error
from .safe_yaml import load_yaml

__all__ = [
    'encode', 'check_size', 'decode', 'encode_reply', 'error_reply',
    'failure_reply', 'result_from_reply', 'JSON', 'TEXT', 'BINARY',
    'REPLY_CONTENT_TYPE', 'YAML_CONTENT_TYPES', 'MAX_DEPTH', 'exception_text',
    'TYPED_JSON',
]

#: Content type of JSON bodies (every message that is not str or bytes).
JSON = 'application/json'
#: Content type of ``str`` messages.
TEXT = 'text/plain; charset=utf-8'
#: Content type of ``bytes`` messages.
BINARY = 'application/octet-stream'
#: Content type of JSON bodies holding registered objects (tagged states).
TYPED_JSON = 'application/vnd.occo.typed+json'
#: Content type of RPC replies.
REPLY_CONTENT_TYPE = 'application/vnd.occo.reply+json'
#: Content types read as YAML (with the safe loader), besides none at all.
YAML_CONTENT_TYPES = frozenset([
    'application/yaml', 'application/x-yaml', 'text/yaml', 'text/x-yaml'])

#: How many levels of lists and mappings a message may nest.
#:
#: Messages are configuration and infrastructure descriptions, a few tens of
#: levels at most, so 256 refuses nothing real. The bound is what keeps
#: decoding safe: Python's JSON decoder, PyYAML's composer and any code that
#: walks or re-encodes a message (``json.dumps`` included) recurse once per
#: level, and all share the interpreter's recursion limit (1000 by default)
#: with the consumer thread's own frames; libyaml stops at 1000 levels
#: anyway. 256 leaves the processor three quarters of that limit.
MAX_DEPTH = 256

_loads = json_text.loads
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60

def encode(message: Message) -> tuple[bytes, str]:
    """Encode a message for the wire.

    :param message: a JSON-able value, ``str`` or ``bytes``, or a value
        holding registered objects.
    :returns: ``(body, content_type)``.
    :raises TypeError: when the message cannot be encoded as JSON (the
        message says how to register an object's class).
    :raises ValueError: for a ``str`` holding a lone surrogate.
    """
    if isinstance(message, str):
        return _utf8(message), TEXT
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message), BINARY
    try:
        return _json_bytes(message), JSON
    except TypeError:
        pass   # not plain JSON: it may hold registered objects
    except (ValueError, RecursionError) as e:
        raise _unsendable('message', message, e) from e
    try:
        return _json_bytes(message_types.to_tree(message)), TYPED_JSON
    except (TypeError, ValueError, RecursionError) as e:
        raise _unsendable('message', message, e) from e


def _unsendable(what: str, value: object, error: BaseException) -> TypeError:
    return TypeError(
        'cannot send a {} of type {}: it must be a JSON-able value, str or '
        'bytes, or hold registered objects ({})'.format(
            what, type(value).__name__, error))


def _utf8(text: str) -> bytes:
    try:
        return text.encode('utf-8')
    except UnicodeEncodeError as e:
        raise ValueError(
            'cannot send a str holding a lone surrogate {!r} at index {}: it is '
            'not UTF-8 text; send bytes, or the str inside a list or mapping '
            '(JSON escapes it)'.format(text[e.start], e.start)) from e


def _json_bytes(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, lone surrogates as ``\\udcff`` escapes."""
    return json_text.dumps(value)


def check_size(body: bytes, limit: int) -> None:
    """Refuse a body longer than ``limit`` bytes (``max_message_size``).

    :raises CriticalError: (413) naming both sizes.
    """
    if len(body) > limit:
        raise CriticalError(413, 'message of {} bytes exceeds max_message_size '
                            '({} bytes)'.format(len(body), limit))


def decode(body: bytes, content_type: Optional[str],
           max_size: Optional[int] = None) -> Message:
    """Decode a message body according to its content type.

    :param body: the message body.
    :param content_type: the ``content_type`` property, or ``None``. pika
        hands a property that is not UTF-8 over as ``bytes``: such a type is
        refused.
    :param max_size: how large a YAML body may grow when its aliases are
        expanded; ``None`` for no bound.
    :returns: the message.
    :raises MessageDecodeError: when the body cannot be decoded safely.
    """
    if content_type == JSON:
        return _load_json(body, MAX_DEPTH)
    if content_type == TEXT:
        return _text(body)
    if content_type == BINARY:
        return bytes(body)
    if content_type == TYPED_JSON:
        return message_types.from_tree(_load_json(body, MAX_DEPTH))
    if content_type is None or content_type == '':
        return load_yaml(_text(body), max_size, MAX_DEPTH)
    if not isinstance(content_type, str):
        raise MessageDecodeError('content type {} is not text'.format(
            _short.repr(content_type)))
    base = content_type.split(';')[0].strip().lower()
    if base in YAML_CONTENT_TYPES:
        return load_yaml(_text(body), max_size, MAX_DEPTH)
    if base == 'text/plain':
        return _text(body)
    if base == 'application/json':
        return _load_json(body, MAX_DEPTH)
    raise MessageDecodeError(
        'unsupported content type {!r}'.format(content_type))


def _text(body: bytes) -> str:
    try:
        return bytes(body).decode('utf-8')
    except UnicodeDecodeError as e:
        raise MessageDecodeError('body is not UTF-8 text: {}'.format(e)) from e


def _load_json(body: bytes, depth: int) -> Any:
    if 0 in body:   # a NUL byte: UTF-16 or UTF-32, which json.loads would guess
        raise MessageDecodeError('JSON body is not UTF-8')
    if len(body) > depth and _deeper_than(body, depth):   # shorter: cannot be
        raise MessageDecodeError(
            'JSON body nests deeper than {} levels'.format(depth))
    try:
        return _loads(body)
    except (ValueError, RecursionError) as e:
        raise MessageDecodeError('invalid JSON body: {}'.format(e)) from e


_SKELETON = bytes.maketrans(b'{}', b'[]')
_NOT_SKELETON = bytes(set(range(256)) - set(b'[]{}"'))


def _deeper_than(body: bytes, depth: int) -> bool:
    """Whether the JSON ``body`` nests lists and objects deeper than ``depth``.

    Walking the decoded value would cost as much as decoding it, so this
    reads the body's *skeleton* instead, with C-speed bytes methods only:
    its brackets outside strings, ``{}`` read as ``[]``. A body with at most
    ``depth`` opening brackets needs nothing more (the common case, found
    first by ``find``, then by one pass over the body). Else each
    ``replace`` pass removes the innermost level (``[]``), and a skeleton
    not empty after ``depth`` passes is too deep. A body that is not JSON
    may be found too deep: it would be refused anyway.
    """
    if _few_openers(body):
        return False
    skeleton = body.translate(_SKELETON, _NOT_SKELETON)
    if skeleton.count(b'[') <= depth:
        return False
    levels = _outside_strings(body, skeleton)
    if b'[' * (depth + 1) in levels:
        return True
    for _ in range(depth):
        if not levels:
            return False
        levels = levels.replace(b'[]', b'')
    return bool(levels)


#: :func:`_few_openers` counts up to this many ``[`` and ``{``; below any
#: depth limit, which is what makes it a sufficient test.
_FEW_OPENERS = 16


def _few_openers(body: bytes) -> bool:
    """Whether ``body`` holds at most ``_FEW_OPENERS`` bytes ``[`` and ``{``.

    ``find`` of one byte runs at ``memchr`` speed, several times faster
    than a pass that looks at each byte, such as ``count`` or ``translate``:
    a 10 KB message of a few fields with long values costs a fraction of a
    microsecond here.
    """
    left = _FEW_OPENERS
    for opener in b'[{':
        found = body.find(opener)
        while found != -1:
            left -= 1
            if left < 0:
                return False
            found = body.find(opener, found + 1)
    return True


def _outside_strings(body: bytes, skeleton: bytes) -> bytes:
    """The brackets of ``skeleton`` (of ``body``) that are outside strings.

    Relies on UTF-8, where each byte ``[]{}"\\`` is that ASCII character.
    """
    if b'\\' in body:   # drop escaped backslashes, then escaped quotes
        body = body.replace(b'\\\\', b'').replace(b'\\"', b'')
        skeleton = body.translate(_SKELETON, _NOT_SKELETON)
    # Now every quote opens or closes a string. If each one is closed at
    # once, no string holds a bracket: drop the quotes (fast); else cut out
    # every second stretch between quotes.
    if skeleton.count(b'"') == 2 * skeleton.count(b'""'):
        return skeleton.translate(None, b'"')
    return b''.join(skeleton.split(b'"')[::2])


def encode_reply(result: Message) -> bytes:
    """Encode a processor's return value as an RPC reply body.

    :param result: a value, a :class:`~.comm.Response`, or an
        :class:`~.comm.ExceptionResponse` (whose exception travels as one
        the processor raised, with the response's code).
    :raises TypeError: when the data is neither JSON-able nor holds only
        registered objects.
    """
    code, data = 200, result
    if isinstance(result, ExceptionResponse) and isinstance(
            result.exception, BaseException):
        return error_reply(result.exception, _traceback_text(result.exception),
                           result.http_code)
    if isinstance(result, Response):
        code, data = result.http_code, result.data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return _json_bytes({'code': code,
                            'bytes': base64.b64encode(bytes(data)).decode('ascii')})
    try:
        return _json_bytes({'code': code, 'data': data})
    except TypeError:
        pass   # not plain JSON: it may hold registered objects
    except (ValueError, RecursionError) as e:
        raise _unsendable('result', data, e) from e
    try:
        return _json_bytes({'code': code, 'typed': message_types.to_tree(data)})
    except (TypeError, ValueError, RecursionError) as e:
        raise _unsendable('result', data, e) from e


def _traceback_text(exc: BaseException) -> Optional[str]:
    if exc.__traceback__ is None:
        return None
    return ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def error_reply(exc: BaseException, traceback_text: Optional[str] = None,
                http_code: int = 500) -> bytes:
    """Encode a processor's exception as an RPC reply body.

    Works for any exception, even one whose ``str()`` fails.
    """
    fields = error_fields(exc, exception_text(exc), traceback_text)
    return _json_bytes({'code': http_code, 'error': fields})


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder when that fails (as :mod:`traceback` does)."""
    try:
        return str(exc)
    except Exception:
        return '<exception str() failed>'


def failure_reply(http_code: int, reason: str) -> bytes:
    """Encode a failure that is not the processor's (e.g. undecodable)."""
    return _json_bytes({'code': http_code, 'data': reason})


def result_from_reply(body: bytes) -> Message:
    """Turn an RPC reply body into the result, or raise what it carries.

    :returns: the remote result.
    :raises ApplicationError: when the remote processor raised.
    :raises CriticalError: for a 4xx code, or a malformed reply (502, the
        reason starts with ``malformed RPC reply``).
    :raises TransientError: for any other code that is not 2xx.
    """
    try:
        envelope = _load_json(body, MAX_DEPTH + 1)
    except MessageDecodeError as e:
        raise _malformed(str(e)) from e
    if not isinstance(envelope, dict):
        raise _malformed('a JSON {} is not an object'.format(type(envelope).__name__))
    code = envelope.get('code')
    if type(code) is not int or not 100 <= code <= 599:
        raise _malformed('code {} is not an HTTP status'.format(_short.repr(code)))
    error = envelope.get('error')
    if error is not None:
        raise _remote_error(error, code)
    return Response(code, _reply_data(envelope)).check()


def _malformed(reason: str) -> CriticalError:
    return CriticalError(502, 'malformed RPC reply: ' + reason)


def _remote_error(error: object, code: int) -> ApplicationError:
    if not isinstance(error, dict):
        raise _malformed('"error" is not an object')
    remote_type, message = error.get('type'), error.get('message')
    traceback_text = error.get('traceback')
    if not (isinstance(remote_type, str) and isinstance(message, str)
            and isinstance(traceback_text, (str, type(None)))):
        raise _malformed('"error" needs "type" and "message" strings')
    return remote_error(error, code)


def _reply_data(envelope: dict[str, Any]) -> Message:
    if 'typed' in envelope:
        try:
            return message_types.from_tree(envelope['typed'])
        except MessageDecodeError as e:
            raise CriticalError(502, 'cannot decode the RPC result: {}'.format(e)) from e
    if 'bytes' not in envelope:
        return envelope.get('data')
    data = envelope['bytes']
    if not isinstance(data, str):
        raise _malformed('"bytes" is not a base64 string')
    try:
        return base64.b64decode(data, validate=True)
    except ValueError as e:
        raise _malformed('"bytes" is not base64: {}'.format(e)) from e
