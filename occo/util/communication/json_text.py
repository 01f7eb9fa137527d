# SPDX-License-Identifier: Apache-2.0
"""JSON to bytes and back: the standard library's, or orjson's when it is
installed (``pip install '.[fast]'``), with the same bytes and values.

orjson writes a 10 KB message about 30 times faster than :mod:`json`
(measured in ``docs/performance.rst``), but it differs from it at the
edges: it writes NaN and infinities as ``null``, accepts enums, UUIDs,
datetimes and dataclasses, and writes ``1e-7`` where :mod:`json` writes
``1e-07``. So a value goes to orjson only when it is made of exactly
``dict``, ``list``, ``tuple``, ``str``, ``int``, ``bool``, ``None`` and
finite floats that :func:`repr` writes without a negative exponent (a walk
over its containers, not its bytes); anything else, and anything orjson
refuses (lone surrogates, integers beyond 64 bits, keys that are not
strings), goes to :mod:`json`. The output is then byte for byte what
:mod:`json` writes.

Reading stays with :mod:`json`: orjson reads an integer beyond 64 bits as
a ``float`` (a different value), which no cheap look at a body rules out,
and it saves less there (about 2.5 times at 10 KB).

``OCCO_JSON=stdlib`` in the environment uses :mod:`json` only.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Optional

__all__ = ['dumps', 'loads', 'FAST', 'use_fast']

_std_dumps = json.JSONEncoder(ensure_ascii=False, separators=(',', ':')).encode
_std_dumps_ascii = json.JSONEncoder(ensure_ascii=True, separators=(',', ':')).encode

_fast_dumps: Optional[Callable[[Any], bytes]] = None


def use_fast(enabled: bool) -> bool:
    """Use orjson (when installed) or not; returns whether it is used.

    For tests and benchmarks; set once at start-up, not while messages are
    encoded in other threads.
    """
    global _fast_dumps, FAST
    _fast_dumps = None
    if enabled:
        try:
            import orjson
        except ImportError:
            pass
        else:
            _fast_dumps = orjson.dumps
    FAST = _fast_dumps is not None
    return FAST


#: Whether orjson is in use.
FAST = use_fast(os.environ.get('OCCO_JSON', '') != 'stdlib')


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, lone surrogates as ``\\udcff``
    escapes; the bytes :mod:`json` writes.

    :raises TypeError: a value JSON cannot hold.
    :raises ValueError: a circular reference.
    :raises RecursionError: nesting beyond the interpreter's limit.
    """
    if _fast_dumps is not None and _orjson_writes_as_json_does(value):
        try:
            return _fast_dumps(value)
        except TypeError:
            pass   # lone surrogates, huge ints, odd keys: json decides
    text = _std_dumps(value)
    try:
        return text.encode('utf-8')
    except UnicodeEncodeError:   # rare: only lone surrogates get here
        return _std_dumps_ascii(value).encode('ascii')


#: The value of a UTF-8 JSON body (:func:`json.loads`).
loads = json.loads


#: Plain values orjson writes as :mod:`json` does (floats are checked).
_PLAIN = frozenset([str, int, bool, type(None)])
#: A value with more containers than this goes to json (so does a cycle).
_MAX_CONTAINERS = 100000


def _orjson_writes_as_json_does(value: Any) -> bool:
    """Whether orjson writes ``value`` byte for byte as :mod:`json` does.

    A walk over the containers (a stack, not recursion). Keys need no look:
    orjson refuses keys that are not ``str``, and json then decides.
    """
    todo = [value]
    containers = 0
    while todo:
        item = todo.pop()
        kind = type(item)
        if kind in _PLAIN:
            continue
        if kind is float:
            if not (math.isfinite(item) and (item == 0.0 or abs(item) >= 1e-4)):
                return False
            continue
        if kind is dict:
            todo.extend(item.values())
        elif kind is list or kind is tuple:
            todo.extend(item)
        else:
            return False
        containers += 1
        if containers > _MAX_CONTAINERS:
            return False
    return True
