# SPDX-License-Identifier: Apache-2.0
"""Remote exceptions: how a processor's exception travels back to the RPC
caller, and comes back as its own type where that is safe.

A processor that raises, or returns ``ExceptionResponse(code, exc)``, sends
the exception's type, module, message, traceback text and, where it can,
the exception itself. The caller gets an exception that is

* an instance of the remote class **and** of
  :class:`~occo.util.exceptions.ApplicationError` when the class is a
  builtin exception (``KeyError``, ``ValueError``, ``RuntimeError``...) or
  one registered with :func:`~.message_types.register_type` on the caller's
  side (its subclass ``KeyNotFoundError(KeyError)`` too, once registered);
* else, when the remote class derives from a builtin exception
  (``ArgumentError(ValueError)`` not registered here), an instance of that
  builtin (``except ValueError`` catches it) and of ``ApplicationError``,
  in a class named after the remote one;
* else a plain :class:`~occo.util.exceptions.ApplicationError` that names the
  remote type.

Either way it carries ``remote_type``, ``remote_module``,
``remote_message``, ``remote_traceback`` and ``http_code`` (500 unless an
``ExceptionResponse`` said otherwise), and ``str()`` of it is what ``str()``
of the remote exception was. It is never a
:class:`~occo.util.exceptions.CommunicationError`, so ``except
CommunicationError`` before ``except ApplicationError`` still tells a failed
transport from a failed processor::

    try:
        value = rpc.push_message(InfoProviderRequest('global.nonexistent'))
    except CommunicationError:
        ...                       # may or may not have been processed
    except KeyError as e:         # also an ApplicationError
        ...                       # e.http_code == 404

Building the caller's exception never runs code chosen by the sender: a
builtin class is constructed with its ``args`` (plain data), a registered
one as :mod:`~.message_types` builds any registered object.
``BaseException`` subclasses that are not ``Exception`` (``SystemExit``,
``KeyboardInterrupt``), ``StopIteration`` and ``StopAsyncIteration`` never
come back as themselves: raised in the caller, they would stop the program
or a generator.
"""

from __future__ import annotations

import builtins
import contextlib
import threading
from typing import Any, Optional

from ..exceptions import ApplicationError
from . import message_types

__all__ = ['error_fields', 'remote_error']

#: Builtin exceptions that are not rebuilt as themselves at the caller.
_NOT_REBUILT = frozenset([StopIteration, StopAsyncIteration])


def error_fields(exc: BaseException, message: str,
                 traceback_text: Optional[str]) -> dict[str, Any]:
    """The ``error`` object of a reply that carries ``exc``.

    ``type``, ``module``, ``message`` and ``traceback`` always;
    ``exception`` (a tagged object) for a registered exception class; else
    ``builtin``, the nearest builtin class among its bases (itself for a
    builtin exception), and ``args`` (a typed JSON tree) when they can be
    sent.
    """
    cls = type(exc)
    fields: dict[str, Any] = {'type': cls.__name__, 'module': cls.__module__,
                              'message': message, 'traceback': traceback_text}
    try:
        if message_types.is_registered(cls):
            fields['exception'] = message_types.to_tree(exc)
        builtin = next((base for base in cls.__mro__ if _rebuildable_builtin(base)),
                       None)
        if builtin is not None:
            fields['builtin'] = builtin.__name__
            fields['args'] = message_types.to_tree(list(exc.args))
    except Exception:   # state that cannot be sent: the text still goes
        pass
    return fields


def _rebuildable_builtin(cls: type) -> bool:
    return (cls.__module__ == 'builtins' and issubclass(cls, Exception)
            and getattr(builtins, cls.__name__, None) is cls
            and cls not in _NOT_REBUILT)


def remote_error(fields: dict[str, Any], http_code: int) -> ApplicationError:
    """The exception to raise at the caller for a reply's ``error`` object.

    ``fields`` has been checked: ``type`` and ``message`` are strings,
    ``traceback`` a string or ``None``.
    """
    remote_type, message = fields['type'], fields['message']
    module = fields.get('module')
    module = module if isinstance(module, str) else None
    exc = _rebuilt(fields, remote_type, module)
    if exc is None:
        exc = ApplicationError(remote_type, message, fields['traceback'],
                               http_code=http_code, remote_module=module)
    else:
        exc.remote_type, exc.remote_module = remote_type, module
        exc.remote_message, exc.remote_traceback = message, fields['traceback']
        exc.http_code = http_code
    return exc


def _rebuilt(fields: dict[str, Any], remote_type: str,
             module: Optional[str]) -> Optional[ApplicationError]:
    """The remote exception as an instance of its class (or of its nearest
    builtin base) and of ApplicationError, or ``None`` when that is not safe
    or not possible."""
    if 'exception' in fields:
        with contextlib.suppress(Exception):   # e.g. not registered here
            original = message_types.from_tree(fields['exception'])
            if isinstance(original, Exception) and not isinstance(
                    original, tuple(_NOT_REBUILT)):
                original.__class__ = _caller_class(type(original), None)
                return original   # type: ignore[return-value]
    builtin = getattr(builtins, str(fields.get('builtin')), None)
    if not (isinstance(builtin, type) and _rebuildable_builtin(builtin)
            and isinstance(fields.get('args'), list)):
        return None
    named = None if (module, remote_type) == ('builtins', builtin.__name__) else (
        module, remote_type)
    with contextlib.suppress(Exception):   # args the class refuses
        args = message_types.from_tree(fields['args'])
        return _caller_class(builtin, named)(*args)   # type: ignore[no-any-return]
    return None


#: ``{(class, remote name): caller class}``, filled under ``_classes_lock``.
#: Names come from the wire: at most :data:`_MAX_CLASSES` are kept, and
#: past that each reply gets a class of its own.
_classes: dict[tuple[type, Optional[tuple[Optional[str], str]]], type] = {}
_classes_lock = threading.Lock()
_MAX_CLASSES = 1024


def _caller_class(base: type, named: Optional[tuple[Optional[str], str]]) -> type:
    """A class that is both ``base`` and ApplicationError.

    :param named: ``(module, name)`` of the remote class when ``base`` is
        only its nearest builtin base, else ``None``.

    One per remote class, so ``type(e)`` is the same for every call. Its
    ``str()`` is the remote exception's text.
    """
    key = (base, named)
    with _classes_lock:
        cls = _classes.get(key)
        if cls is None:
            cls = _new_caller_class(base, named)
            if len(_classes) < _MAX_CLASSES:
                _classes[key] = cls
        return cls


def _new_caller_class(base: type, named: Optional[tuple[Optional[str], str]]) -> type:
    module, name = named or (base.__module__, base.__name__)
    namespace = {'__module__': module or 'builtins', '__qualname__': name,
                 '__slots__': (), '__str__': _remote_text,
                 '__doc__': 'A remote {} (an ApplicationError).'.format(name)}
    return type(name, (base, ApplicationError), namespace)


def _remote_text(self: ApplicationError) -> str:
    return self.remote_message
