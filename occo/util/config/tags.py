# SPDX-License-Identifier: Apache-2.0
"""Application tags on the configuration loader: :func:`register_tag`.

The original OCCO components built objects from their configuration with
their own tags (info-broker's ``!TestRouter``, infra-processor's
``!EventLog``), added with ``yaml.add_constructor`` to PyYAML's *global*
loader. Here an application adds them to :class:`~occo.util.config.YAMLLoader`
only::

    register_tag('!TestRouter', lambda value: TestRouter(**value))

PyYAML's own loaders never change, and neither does anything that decodes
messages. A tag that builds Python objects by name (``!!python/...``), a
standard YAML tag, and the library's own import tags cannot be registered.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, cast

import yaml
from yaml.constructor import ConstructorError

from ..exceptions import ConfigurationError
from .imports import IMPORT_TAGS
from .loader import PYTHON_TAG_PREFIXES, YAMLLoader

__all__ = ['register_tag', 'unregister_tag']

_STANDARD_TAG_PREFIXES = ('tag:yaml.org,2002:', '!!')
_TAG = re.compile(r'(![^!\s]\S*|tag:\S+)')

#: Held while :data:`_registered` and ``YAMLLoader.yaml_constructors`` are
#: changed, so that a check and the change that follows it are one step.
#: Loading does not take it: it only reads the constructors' dict.
_lock = threading.Lock()
#: ``{tag: (constructor, with_node)}`` of the tags registered with
#: :func:`register_tag`. Changed only under :data:`_lock`.
_registered: dict[str, tuple[Callable[..., Any], bool]] = {}


def register_tag(tag: str, constructor: Callable[..., Any], *,
                 with_node: bool = False) -> None:
    """Let configuration files use *tag*: its nodes become what *constructor*
    returns.

    By default *constructor* is called with the node's plain data, already
    built: a :class:`dict` for a mapping (merge keys applied), a
    :class:`list` for a sequence, a :class:`str` for a scalar (``''`` for a
    tag with no value, such as ``- !TestProviderA``). Tags inside that data
    are constructed first.

    >>> from occo.util.config import yaml_load_safe
    >>> register_tag('!Point', lambda value: (value['x'], value['y']))
    >>> yaml_load_safe('origin: !Point {x: 0, y: 0}')
    {'origin': (0, 0)}
    >>> unregister_tag('!Point')

    With ``with_node=True`` it is called as PyYAML's ``add_constructor``
    calls one, ``constructor(loader, node)``, so that a constructor written
    for ``yaml.add_constructor`` can be registered unchanged.

    An exception that *constructor* raises becomes a
    :exc:`~occo.util.exceptions.ConfigurationError` naming the file, the
    line and the tag, with the original as its ``__cause__``.

    Registering the same constructor again does nothing, so a module that
    registers its tags at import time may be imported twice.

    :param tag: a local tag such as ``'!TestRouter'``, or a full
        ``tag:...`` URI.
    :param constructor: builds the value of each node that carries *tag*.
    :param with_node: call *constructor* with the loader and the node
        instead of the plain data.
    :raises ConfigurationError: when *tag* is malformed, a ``!!python``
        tag or another standard YAML tag, one of the library's own tags
        (``!yaml_import``, ``!text_import``), or registered already with
        another constructor.
    """
    _check_tag(tag)
    if not callable(constructor):
        raise ConfigurationError('the constructor of {} must be callable, '
                                 'got {!r}'.format(tag, constructor))
    with _lock:
        registered = _registered.get(tag)
        if registered == (constructor, with_node):
            return
        if registered is not None:
            raise ConfigurationError(
                'tag {} is registered already, with constructor {!r}; '
                'unregister_tag({!r}) first to replace it'.format(
                    tag, registered[0], tag))
        _registered[tag] = (constructor, with_node)
        YAMLLoader.add_constructor(tag, _TagConstructor(tag, constructor, with_node))


def unregister_tag(tag: str) -> None:
    """Undo :func:`register_tag`: files that use *tag* fail to load again.

    :param tag: a tag registered with :func:`register_tag`.
    :raises ConfigurationError: when *tag* is not registered.
    """
    with _lock:
        if tag not in _registered:
            raise ConfigurationError('tag {!r} is not registered'.format(tag))
        del _registered[tag]
        del YAMLLoader.yaml_constructors[tag]


def _check_tag(tag: object) -> None:
    if not isinstance(tag, str):
        raise ConfigurationError('a tag is a string, got {!r}'.format(tag))
    if tag.startswith(PYTHON_TAG_PREFIXES):
        raise ConfigurationError(
            'refused tag {!r}: configuration is read as plain data, never as '
            'Python objects named in the file; register a tag of your own '
            'whose constructor builds what you allow'.format(tag))
    if tag.startswith(_STANDARD_TAG_PREFIXES):
        raise ConfigurationError('{!r} is a standard YAML tag; it cannot be '
                                 'redefined'.format(tag))
    if tag in IMPORT_TAGS:
        raise ConfigurationError('{} is a tag of occo.util.config itself; '
                                 'it cannot be replaced'.format(tag))
    if not _TAG.fullmatch(tag):
        raise ConfigurationError(
            'a tag is \'!\' and a name, such as \'!Router\', or a URI such as '
            '\'tag:example.com,2024:router\', with no spaces; got {!r}'.format(tag))


class _TagConstructor:
    """The constructor YAMLLoader calls for a registered tag."""

    def __init__(self, tag: str, constructor: Callable[..., Any],
                 with_node: bool) -> None:
        self.tag = tag
        self.constructor = constructor
        self.with_node = with_node

    def __call__(self, loader: YAMLLoader, node: yaml.Node) -> Any:
        if self.with_node:
            return self._call(node, loader, node)
        if isinstance(node, yaml.MappingNode):
            value: Any = loader.construct_mapping(node, deep=True)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_scalar(cast(yaml.ScalarNode, node))
        return self._call(node, value)

    def _call(self, node: yaml.Node, *args: Any) -> Any:
        try:
            return self.constructor(*args)
        except yaml.YAMLError:
            raise  # already names the node that is wrong
        except Exception as e:
            raise ConstructorError(
                None, None, 'the constructor of {} failed: {}: {}'.format(
                    self.tag, type(e).__name__, e), node.start_mark) from e
