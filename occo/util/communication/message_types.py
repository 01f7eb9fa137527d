# SPDX-License-Identifier: Apache-2.0
"""Objects as messages, safely: the allow-list of classes that may travel.

The original OCCO components sent their own classes (``InfoProviderRequest``,
``Command`` instructions) by pickling them into YAML, which let anyone who
could publish run code in the consumer. Here a class travels only once it is
registered, on the sending and on the receiving side::

    import occo.util.communication as comm

    @comm.register_type
    @dataclasses.dataclass
    class InfoProviderRequest:
        key: str
        args: list = dataclasses.field(default_factory=list)

    rpc.push_message(InfoProviderRequest('node.state', ['n1']))

An instance travels as *tagged JSON* of its state, ``{"__occo_type__":
"mod.InfoProviderRequest", "state": {...}}``, in a body of content type
:data:`~.codec.TYPED_JSON` (a message holding no registered object is plain
JSON, as before). The state is, in this order of preference:

* what the ``encode`` function given to :func:`register_type` returns (then
  ``decode`` builds the object from it);
* the fields of a dataclass (built by calling the class, so its
  ``__post_init__`` checks run);
* ``args`` and the attributes of an exception;
* what ``__getstate__`` returns, when the class defines it (built with
  ``__setstate__``);
* the instance's ``__dict__``.

States nest: a list of commands, or a dict holding a request, works.

Only registered classes are ever built on the receiving side, and only from
the state their own rules accept: a tag that names no registered class, a
dataclass state with unexpected fields, or a ``__dict__`` state that would
hide a method or property of the class is refused with
:class:`~occo.util.exceptions.MessageDecodeError` (the consumer rejects the
message; an RPC caller gets a 400). Sending an unregistered object raises a
:class:`TypeError` that says how to register its class.
"""

from __future__ import annotations

import base64
import dataclasses
import inspect
import reprlib
import threading
from collections.abc import Callable
from typing import Any, Optional, TypeVar, Union, overload

from ..exceptions import MessageDecodeError

__all__ = ['register_type', 'unregister_type', 'registered_type', 'to_tree',
           'from_tree', 'TAG']

#: The key that marks a tagged object in a typed JSON tree.
TAG = '__occo_type__'
#: Tags of the library's own: a plain dict that holds the key :data:`TAG`,
#: and ``bytes``. No class may be registered under these names.
_DICT, _BYTES = 'dict', 'bytes'
#: How deeply :func:`to_tree` follows nested values (cycles end here too).
_MAX_NESTING = 256

_T = TypeVar('_T')
Encoder = Callable[[Any], Any]
Decoder = Callable[[Any], Any]

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80


class _Entry:
    """A registered class and how its instances become state and back."""

    __slots__ = ('cls', 'name', 'encode', 'decode')

    def __init__(self, cls: type, name: str, encode: Optional[Encoder],
                 decode: Optional[Decoder]) -> None:
        self.cls = cls
        self.name = name
        self.encode = encode
        self.decode = decode


#: Guards registration. The two maps below are replaced, never changed in
#: place, under it, so readers (every encode and decode, on any thread) use
#: them without the lock.
_registering = threading.Lock()
#: ``{name: entry}`` by registered name, and by ``module.qualname`` (what a
#: legacy YAML body names).
_by_name: dict[str, _Entry] = {}
#: ``{class: entry}``.
_by_class: dict[type, _Entry] = {}


@overload
def register_type(cls: type[_T], name: Optional[str] = None, *,
                  encode: Optional[Encoder] = None,
                  decode: Optional[Decoder] = None) -> type[_T]: ...
@overload
def register_type(cls: None = None, name: Optional[str] = None, *,
                  encode: Optional[Encoder] = None,
                  decode: Optional[Decoder] = None
                  ) -> Callable[[type[_T]], type[_T]]: ...


def register_type(cls: Optional[type[_T]] = None, name: Optional[str] = None, *,
                  encode: Optional[Encoder] = None,
                  decode: Optional[Decoder] = None
                  ) -> Union[type[_T], Callable[[type[_T]], type[_T]]]:
    """Allow instances of ``cls`` to travel as messages and results.

    Use it as a call or a class decorator (``@register_type`` or
    ``@register_type(name='...')``). Register the class on both sides, under
    the same name. Registering an exception class also lets it come back to
    an RPC caller as itself (see :mod:`~.codec`).

    :param cls: the class.
    :param name: the tag on the wire; ``module.QualName`` by default.
    :param encode: ``encode(obj)`` returns the state to send (a JSON-able
        value, which may hold registered objects); give ``decode`` too.
    :param decode: ``decode(state)`` builds the object from that state.
    :returns: ``cls``, so it can decorate the class.
    :raises TypeError: ``cls`` is not a class, or only one of ``encode`` and
        ``decode`` is given.
    :raises ValueError: the name is taken by another class, or reserved.
    """
    if cls is None:
        return lambda cls: register_type(cls, name, encode=encode, decode=decode)
    if not isinstance(cls, type):
        raise TypeError('register_type needs a class, got {!r}'.format(cls))
    if (encode is None) != (decode is None):
        raise TypeError('give register_type both encode= and decode=, or '
                        'neither')
    entry = _Entry(cls, name or _qualified(cls), encode, decode)
    if entry.name in (_DICT, _BYTES) or not entry.name:
        raise ValueError('{!r} is a reserved message type name'.format(entry.name))
    global _by_name, _by_class
    with _registering:
        names = {entry.name, _qualified(cls)}
        for taken in names:
            other = _by_name.get(taken)
            if other is not None and other.cls is not cls:
                raise ValueError(
                    'message type name {!r} is registered already for '
                    '{}'.format(taken, _qualified(other.cls)))
        _by_name = {**_by_name, **dict.fromkeys(names, entry)}
        _by_class = dict(_by_class)
        _by_class[cls] = entry
    return cls


def unregister_type(cls: type) -> None:
    """Forget a class registered with :func:`register_type` (e.g. in tests).

    Its instances can no longer be sent, nor built from a message.
    """
    global _by_name, _by_class
    with _registering:
        _by_name = {key: entry for key, entry in _by_name.items()
                    if entry.cls is not cls}
        _by_class = {key: entry for key, entry in _by_class.items()
                     if key is not cls}


def registered_type(name: str) -> Optional[type]:
    """The class registered under ``name`` (or its ``module.QualName``)."""
    entry = _by_name.get(name)
    return entry.cls if entry is not None else None


def is_registered(cls: type) -> bool:
    """Whether ``cls`` itself (not a base of it) is registered."""
    return cls in _by_class


def _qualified(cls: type) -> str:
    return '{}.{}'.format(cls.__module__, cls.__qualname__)


# -- sending ---------------------------------------------------------------

def to_tree(value: Any) -> Any:
    """``value`` as a JSON-able tree, registered objects as tagged states.

    :raises TypeError: a value is neither JSON-able nor registered (the
        message says how to register its class), or nests deeper than 256
        levels (a cycle, say).
    """
    return _to_tree(value, 0)


def _to_tree(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, (str, int, float)):
        return value
    if depth >= _MAX_NESTING:
        raise TypeError('the message nests deeper than {} levels (does it '
                        'contain itself?)'.format(_MAX_NESTING))
    depth += 1
    if isinstance(value, (list, tuple)):
        return [_to_tree(item, depth) for item in value]
    if isinstance(value, dict):
        items = {_key(key): _to_tree(item, depth) for key, item in value.items()}
        return {TAG: _DICT, 'items': items} if TAG in items else items
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {TAG: _BYTES, 'base64': base64.b64encode(value).decode('ascii')}
    entry = _by_class.get(type(value))
    if entry is None:
        raise TypeError(
            'cannot send an object of type {0}: register its class on both '
            'sides first, with occo.util.communication.register_type({1})'
            .format(_qualified(type(value)), type(value).__name__))
    return {TAG: entry.name, 'state': _to_tree(_state(entry, value), depth)}


def _key(key: object) -> object:
    """A mapping key, as JSON takes it (it makes scalars strings)."""
    if key is None or isinstance(key, (str, int, float)):
        return key
    raise TypeError('keys must be str, int, float, bool or None, not '
                    '{}'.format(type(key).__name__))


def _state(entry: _Entry, obj: Any) -> Any:
    if entry.encode is not None:
        return entry.encode(obj)
    cls = entry.cls
    if dataclasses.is_dataclass(cls):
        return {field.name: getattr(obj, field.name)
                for field in dataclasses.fields(cls)}
    if isinstance(obj, BaseException):
        attributes = {name: value for name, value in vars(obj).items()
                      if not name.startswith('__')}   # e.g. __notes__
        return dict(attributes, args=list(obj.args))
    if _defines(cls, '__getstate__'):
        return obj.__getstate__()
    try:
        return vars(obj)
    except TypeError:
        raise TypeError(
            'cannot send an object of type {}: it has no __dict__; register it '
            'with encode= and decode= functions'.format(entry.name)) from None


def _defines(cls: type, method: str) -> bool:
    """Whether ``cls`` defines ``method`` itself, not only ``object`` does."""
    return getattr(cls, method, None) is not getattr(object, method, None)


# -- receiving -------------------------------------------------------------

def from_tree(tree: Any) -> Any:
    """Build the value of a tree made by :func:`to_tree`.

    :raises MessageDecodeError: a tag names no registered class, or a state
        is not one its class accepts. The message never quotes the state.
    """
    if isinstance(tree, list):
        return [from_tree(item) for item in tree]
    if not isinstance(tree, dict):
        return tree
    if TAG not in tree:
        return {key: from_tree(item) for key, item in tree.items()}
    tag = tree[TAG]
    if tag == _DICT:
        return {key: from_tree(item) for key, item in _field(tree, 'items', dict).items()}
    if tag == _BYTES:
        try:
            return base64.b64decode(_field(tree, 'base64', str), validate=True)
        except ValueError as e:
            raise MessageDecodeError('bytes in a typed message are not '
                                     'base64: {}'.format(e)) from e
    entry = _by_name.get(tag) if isinstance(tag, str) else None
    if entry is None:
        raise MessageDecodeError(
            'message type {} is not registered here; the receiver must '
            'register it too, with occo.util.communication.register_type'
            .format(_short.repr(tag)))
    if 'state' not in tree:
        raise MessageDecodeError('a {} object without its "state"'.format(entry.name))
    return build(entry.cls, from_tree(tree['state']))


def _field(tree: dict[str, Any], key: str, kind: type[_T]) -> _T:
    value = tree.get(key)
    if not isinstance(value, kind):
        raise MessageDecodeError('a typed {!r} value needs a {} {!r}'.format(
            tree[TAG], kind.__name__, key))
    return value


def build(cls: type, state: Any) -> Any:
    """Build an instance of the registered ``cls`` from its ``state``.

    :raises MessageDecodeError: ``cls`` is not registered, or refuses the
        state.
    """
    entry = _by_class.get(cls)
    if entry is None:
        raise MessageDecodeError('{} is not a registered message type'.format(
            _qualified(cls)))
    try:
        return _build(entry, state)
    except MessageDecodeError:
        raise
    except Exception as e:   # the class's own code refused the state
        raise MessageDecodeError('cannot build a {} from the message: {} '
                                 'raised {}'.format(entry.name, _builder(entry),
                                                    type(e).__name__)) from e


def _builder(entry: _Entry) -> str:
    if entry.decode is not None:
        return 'its decode function'
    return 'the class'


def _build(entry: _Entry, state: Any) -> Any:
    if entry.decode is not None:
        return entry.decode(state)
    cls = entry.cls
    if dataclasses.is_dataclass(cls):
        return _build_dataclass(entry, _attributes(entry, state))
    if issubclass(cls, BaseException):
        attributes = _attributes(entry, state)
        args = attributes.pop('args', [])
        if not isinstance(args, list):
            raise MessageDecodeError('the args of a {} are not a list'.format(
                entry.name))
        exc = cls.__new__(cls, *args)
        exc.args = tuple(args)
        _set_attributes(entry, exc, attributes)
        return exc
    obj: Any = cls.__new__(cls)
    if _defines(cls, '__setstate__'):
        obj.__setstate__(state)
    else:
        _set_attributes(entry, obj, _attributes(entry, state))
    return obj


def _attributes(entry: _Entry, state: Any) -> dict[str, Any]:
    if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
        raise MessageDecodeError('the state of a {} is not a mapping of '
                                 'names'.format(entry.name))
    return dict(state)


def _build_dataclass(entry: _Entry, attributes: dict[str, Any]) -> Any:
    fields = {field.name: field for field in dataclasses.fields(entry.cls)}
    unexpected = sorted(set(attributes) - set(fields))
    if unexpected:
        raise MessageDecodeError('a {} has no field {}'.format(
            entry.name, ', '.join(_short.repr(name) for name in unexpected[:5])))
    later = {name: attributes.pop(name) for name in list(attributes)
             if not fields[name].init}
    obj = entry.cls(**attributes)
    for name, value in later.items():
        object.__setattr__(obj, name, value)
    return obj


def _set_attributes(entry: _Entry, obj: Any, attributes: dict[str, Any]) -> None:
    """Set instance attributes, refusing any that would hide the class's own
    methods, properties or special names."""
    for name in attributes:
        if name.startswith('__') or hasattr(
                type(inspect.getattr_static(entry.cls, name, None)), '__get__'):
            raise MessageDecodeError(
                'a {} cannot take the attribute {}: it would hide the '
                "class's own".format(entry.name, _short.repr(name)))
    obj.__dict__.update(attributes)
