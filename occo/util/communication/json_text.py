# SPDX-License-Identifier: Apache-2.0
"""JSON to bytes and back: the standard library's, or orjson's when it is
installed (``pip install '.[fast]'``), with the same bytes and values.

orjson writes a 10 KB message 9 to 13 times faster than :mod:`json`, a
1 MB one 26 to 94 times (on two machines, measured in
``docs/performance.rst``; its output is copied into a ``bytes`` of its own
size, see :func:`dumps`), but it differs from it at the edges: it writes
NaN and infinities as ``null``, accepts enums, UUIDs, datetimes and
dataclasses, and writes ``1e-7`` where :mod:`json` writes ``1e-07``. So a
value goes to orjson only when it is made of exactly ``dict``, ``list``,
``tuple``, ``str``, ``int``, ``bool``, ``None`` and finite floats that
:func:`repr` writes without a negative exponent (a walk over its
containers, not its bytes); anything else, and anything orjson refuses
(lone surrogates, integers beyond 64 bits, keys that are not strings),
goes to :mod:`json`. The output is then byte for byte what :mod:`json`
writes.

Reading bodies of 2 KB or more goes to orjson as well (1.4 to 1.7 times
faster at 10 KB, 1.7 to 4.5 times at 1 MB), with the values :mod:`json`
gives. Where the two differ on valid JSON, orjson either refuses the body
(``NaN`` and ``Infinity``, a number beyond the float range, lone
surrogates, a byte order mark), and :mod:`json` then reads it, or reads an
integer beyond 64 bits as a ``float``: a decoded value holding a float of
magnitude 2**63 or more is therefore read again by :mod:`json` (a float
that big is rare, and reading it twice gives the same value). The look for
such floats goes one depth at a time with C-speed steps only
(``_holds_huge_float``). Shorter bodies go to :mod:`json` at once.

``OCCO_JSON=stdlib`` in the environment uses :mod:`json` only.
"""

from __future__ import annotations

import json
import math
import os
from itertools import chain, compress
from typing import Any, Callable, Optional

__all__ = ['dumps', 'loads', 'FAST', 'use_fast']

_std_dumps = json.JSONEncoder(ensure_ascii=False, separators=(',', ':')).encode
_std_dumps_ascii = json.JSONEncoder(ensure_ascii=True, separators=(',', ':')).encode

_fast_dumps: Optional[Callable[[Any], bytes]] = None
_fast_loads: Optional[Callable[[bytes], Any]] = None


def use_fast(enabled: bool) -> bool:
    """Use orjson (when installed) or not; returns whether it is used.

    For tests and benchmarks; set once at start-up, not while messages are
    encoded in other threads.
    """
    global _fast_dumps, _fast_loads, FAST
    _fast_dumps = _fast_loads = None
    if enabled:
        try:
            import orjson
        except ImportError:
            pass
        else:
            _fast_dumps, _fast_loads = orjson.dumps, orjson.loads
    FAST = _fast_dumps is not None
    return FAST


#: Whether orjson is in use.
FAST = use_fast(os.environ.get('OCCO_JSON', '') != 'stdlib')


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, lone surrogates as ``\\udcff``
    escapes; the bytes :mod:`json` writes, in a ``bytes`` that holds no
    more memory than its length.

    :raises TypeError: a value JSON cannot hold.
    :raises ValueError: a circular reference.
    :raises RecursionError: nesting beyond the interpreter's limit.
    """
    if _fast_dumps is not None and _orjson_writes_as_json_does(value):
        try:
            written = _fast_dumps(value)
        except TypeError:
            pass   # lone surrogates, huge ints, odd keys: json decides
        else:
            # orjson returns the buffer it wrote into, whole: at least 4 KB,
            # and 16 times a long string's length (a 1 MB message holds
            # 16.6 MB). A message keeps its body until the broker confirms
            # it, so it gets a copy that holds only its bytes: a copy of
            # ~20 us per MB, against ~30 page faults per MB as the
            # allocator gives those reservations back and takes them again.
            return bytes(memoryview(written))
    text = _std_dumps(value)
    try:
        return text.encode('utf-8')
    except UnicodeEncodeError:   # rare: only lone surrogates get here
        return _std_dumps_ascii(value).encode('ascii')


def loads(body: bytes) -> Any:
    """The value of a UTF-8 JSON ``body``: the value :func:`json.loads`
    gives, and its errors.

    :raises ValueError: not JSON (:class:`json.JSONDecodeError`), or not
        UTF-8 (:class:`UnicodeDecodeError`).
    :raises RecursionError: nesting beyond the interpreter's limit.
    """
    if _fast_loads is not None and len(body) >= _FAST_LOADS_MIN:
        try:
            value = _fast_loads(body)
        except ValueError:
            pass   # NaN, huge numbers, lone surrogates, or not JSON: json decides
        else:
            if not _holds_huge_float(value):
                return value
    return json.loads(body)


#: Floats of at least this magnitude may be integers orjson could not hold.
_HUGE = 2.0 ** 63
#: Shorter bodies go to json: orjson and the look for huge floats cost
#: about as much there (``benchmarks/serialization.py``).
_FAST_LOADS_MIN = 2048


def _holds_huge_float(value: Any) -> bool:
    """Whether a decoded ``value`` holds a float of magnitude 2**63 or
    more. One depth at a time, every step at C speed: the types of the
    depth's values in a set, floats picked out and compared with ``max``
    and ``min``, the next depth gathered from the dicts' values and the
    lists' items. No Python-level loop per value."""
    kind = type(value)
    if kind is float:
        return not -_HUGE < value < _HUGE
    if kind is dict:
        level: Any = value.values()
    elif kind is list:
        level = value
    else:
        return False
    while True:
        kinds = set(map(type, level))
        if float in kinds:
            floats = list(compress(level, map(_is_float, level)))
            if max(floats) >= _HUGE or min(floats) <= -_HUGE:
                return True
        if dict not in kinds and list not in kinds:
            return False
        deeper: list[Any] = []
        if dict in kinds:
            deeper.extend(chain.from_iterable(
                map(dict.values, compress(level, map(_is_dict, level)))))
        if list in kinds:
            deeper.extend(chain.from_iterable(compress(level, map(_is_list, level))))
        level = deeper


_is_float = float.__instancecheck__
_is_dict = dict.__instancecheck__
_is_list = list.__instancecheck__


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
