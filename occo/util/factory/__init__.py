# SPDX-License-Identifier: Apache-2.0
"""The abstract factory: an interface class whose constructor returns the
backend that the ``protocol`` keyword names.

The communication roles are built on it, and so can an application's own
interfaces, as the original OCCO components did::

    import occo.util.factory as factory

    class UDS(factory.MultiBackend):          # a direct subclass is abstract
        def get(self, key): raise NotImplementedError

    @factory.register(UDS, 'dict')
    class DictUDS(UDS):
        def __init__(self, **config): self.data = {}
        def get(self, key): return self.data[key]

    uds = UDS(protocol='dict')                 # a DictUDS
    uds = UDS.instantiate('dict')              # the same, as the era's code wrote it

:class:`register` is one registry for every abstract class:
``factory.register(comm.RPCProducer, 'local')`` and
``comm.register(comm.RPCProducer, 'local')`` are the same call.

Unlike the original, registering a backend adds no YAML tag to PyYAML's
global loaders; an application that builds objects from its configuration
adds a tag to the library's safe loader with
:func:`occo.util.config.register_tag`.
"""

from __future__ import annotations

import difflib
import importlib.metadata
from collections.abc import Iterable
from typing import Any, ClassVar, Optional, TypeVar, cast

from ..exceptions import ConfigurationError

__all__ = ['MultiBackend', 'register', 'unregister', 'has_backend', 'backends']

_T = TypeVar('_T', bound='MultiBackend')
_BackendT = TypeVar('_BackendT', bound='type[MultiBackend]')


class MultiBackend:
    """Base of an abstract class whose backends are chosen by ``protocol``.

    A direct subclass of :class:`MultiBackend` is abstract, and so is any
    class declared with ``abstract=True`` (``class Role(Base,
    abstract=True)``); each abstract class has its own registry. Calling an
    abstract class looks up ``protocol`` among the keyword arguments and
    returns an instance of the backend registered for it; calling a backend
    class constructs it as any class.
    """

    #: ``{protocol: backend class}`` of the nearest abstract class;
    #: ``None`` on :class:`MultiBackend` itself. Written only by
    #: :class:`register`, at import time.
    _backends: ClassVar[Optional[dict[str, type[MultiBackend]]]] = None
    #: Whether this very class is abstract (set per class, never inherited).
    _abstract: ClassVar[bool] = False
    #: The entry-point group through which other distributions offer
    #: backends: the entry point's name is the protocol, its value the
    #: module that registers it. ``None``: no plugins.
    entry_point_group: ClassVar[Optional[str]] = None

    def __init_subclass__(cls, abstract: Optional[bool] = None,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if abstract is None:
            abstract = MultiBackend in cls.__bases__
        cls._abstract = abstract
        if abstract:
            cls._backends = {}

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls._abstract:
            cls = _lookup(cls, kwargs.get('protocol'))
        return super().__new__(cls)

    @classmethod
    def instantiate(cls: type[_T], *args: Any, **kwargs: Any) -> _T:
        """Construct the backend for a protocol, as the era's code did.

        ``Role.instantiate('local', a, b, key=1)`` constructs the backend
        registered for ``'local'`` as ``Backend(a, b, key=1)``;
        ``Role.instantiate(protocol='amqp', **config)`` is ``Role(protocol=
        'amqp', **config)``. The protocol is not passed on in the first form,
        so a backend may take positional parameters of its own.

        The original's static form, ``MultiBackend.instantiate(UDS, 'dict',
        ...)``, is ``UDS.instantiate('dict', ...)``.

        :raises ConfigurationError: when no protocol is given, or none is
            registered under that name.
        """
        if cls is MultiBackend:
            target = args[0] if args else None
            if not (isinstance(target, type) and issubclass(target, MultiBackend)):
                raise ConfigurationError(
                    'MultiBackend.instantiate needs the abstract class first, '
                    'as MultiBackend.instantiate(UDS, protocol, ...); got '
                    '{!r}'.format(target))
            return cast(_T, target.instantiate(*args[1:], **kwargs))
        if 'protocol' in kwargs:
            return cls(*args, **kwargs)
        if not args:
            raise ConfigurationError(
                '{}.instantiate needs the protocol, first or as protocol=; '
                'known protocols: {}'.format(cls.__name__, _known(cls)))
        protocol, *rest = args
        backend = _lookup(cls, protocol) if cls._abstract else cls
        return cast(_T, backend(*rest, **kwargs))


def _registry(target: type[MultiBackend]) -> dict[str, type[MultiBackend]]:
    registry: Optional[dict[str, type[MultiBackend]]] = getattr(
        target, '_backends', None)
    if registry is None or not isinstance(target, type):
        raise ConfigurationError('{!r} is not an abstract MultiBackend '
                                 'class'.format(target))
    return registry


def _lookup(target: type[MultiBackend], protocol: object) -> type[MultiBackend]:
    if protocol is None:
        raise ConfigurationError(
            'missing configuration key \'protocol\' for {}; known protocols: '
            '{}'.format(target.__name__, _known(target)))
    if not isinstance(protocol, str):
        raise ConfigurationError(
            'configuration key \'protocol\' must be a string, got {!r}'.format(
                protocol))
    registry = _registry(target)
    if protocol not in registry:
        _load_plugin(target, protocol)
    if protocol in registry:
        return registry[protocol]
    close = difflib.get_close_matches(protocol, list(registry), n=1)
    hint = ' (did you mean {!r}?)'.format(close[0]) if close else ''
    raise ConfigurationError(
        'unknown protocol {!r} for {}{}; known protocols: {}'.format(
            protocol, target.__name__, hint, _known(target)))


def _load_plugin(target: type[MultiBackend], protocol: str) -> None:
    """Import the module an installed distribution offers for ``protocol``."""
    if target.entry_point_group is None:
        return
    for entry_point in _entry_points(target.entry_point_group):
        if entry_point.name == protocol:
            entry_point.load()


def _entry_points(group: str) -> Iterable[importlib.metadata.EntryPoint]:
    found = importlib.metadata.entry_points()
    if hasattr(found, 'select'):
        return found.select(group=group)
    return found.get(group, ())


def _known(target: type[MultiBackend]) -> str:
    return ', '.join(sorted(_registry(target))) or '(none registered)'


class register:
    """Class decorator that registers a backend class for an abstract class.

    ::

        @register(AsynchronProducer, 'amqp')
        class MQAsynchronProducer(AsynchronProducer):
            ...

    :param target: the abstract class.
    :param protocol: the ``protocol`` value that selects the backend.
    :raises ConfigurationError: when the protocol is registered already for
        another class, or the class is not a subclass of ``target``.
    """

    def __init__(self, target: type[Any], protocol: str) -> None:
        self.target = target
        self.protocol = protocol

    def __call__(self, cls: _BackendT) -> _BackendT:
        if not (isinstance(cls, type) and issubclass(cls, self.target)):
            raise ConfigurationError('{!r} is not a subclass of {}'.format(
                cls, self.target.__name__))
        registry = _registry(self.target)
        registered = registry.get(self.protocol)
        if registered is not None and registered is not cls:
            raise ConfigurationError(
                'protocol {!r} is registered already for {} by {}.{}'.format(
                    self.protocol, self.target.__name__,
                    registered.__module__, registered.__qualname__))
        registry[self.protocol] = cls
        return cls


def unregister(target: type[MultiBackend], protocol: str) -> None:
    """Forget the backend registered for ``protocol`` (e.g. in tests).

    :raises ConfigurationError: when none is registered.
    """
    if _registry(target).pop(protocol, None) is None:
        raise ConfigurationError('no backend is registered for protocol {!r} '
                                 'of {}'.format(protocol, target.__name__))


def has_backend(target: type[MultiBackend], protocol: str) -> bool:
    """Tell whether ``protocol`` is registered for the abstract ``target``."""
    return protocol in _registry(target)


def backends(target: type[MultiBackend]) -> dict[str, type[MultiBackend]]:
    """Return a copy of the ``{protocol: class}`` registry of ``target``."""
    return dict(_registry(target))
