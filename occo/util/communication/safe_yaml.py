# SPDX-License-Identifier: Apache-2.0
"""YAML bodies, read with the safe loader and within bounds.

The original OCCO components sent YAML; :mod:`~.codec` still reads it, with
PyYAML's *safe* loader only (never ``yaml.load``), and checks the node graph
before building any value:

* nesting is bounded (``max_depth``);
* a YAML alias (``*a``) repeats a whole subtree without repeating its text,
  so a few hundred bytes can stand for gigabytes once expanded ("billion
  laughs"). The safe loader shares the repeated objects, but whoever walks or
  re-encodes the message pays for every copy, so the expanded size (each
  scalar counts its length, at least 1; each list or mapping 1 plus its
  items) is bounded by ``max_size``; an alias to a node that contains it is
  refused;
* a number may be written in at most 4300 characters: PyYAML builds base 60
  integers (``1:00:00``) in time quadratic in their length.

Of the Python tags that original components wrote with ``yaml.dump``, the
loader understands those that build plain data (``!!python/tuple``,
``!!python/unicode``, ``!!python/str``, ``!!python/long``...) and
``!!python/object:mod.Cls {...}`` when ``mod.Cls`` is registered with
:func:`~.message_types.register_type` (built from the mapping as a typed
message's state is). Every other Python tag, ``!!python/object/apply``
and ``!!python/name`` included, is refused: nothing named by a body is
imported or called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import yaml

from ..exceptions import MessageDecodeError
from . import message_types

__all__ = ['load_yaml']

_SafeLoader: Any = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)
_PYTHON = 'tag:yaml.org,2002:python/'


class _MessageLoader(_SafeLoader):   # type: ignore[misc]
    """The safe loader, plus the Python tags of plain data and of registered
    classes. The constructors are added to this class only, never to
    PyYAML's own loaders."""

    def construct_registered(self, suffix: str, node: yaml.Node) -> Any:
        """``!!python/object:mod.Cls {...}``, when ``mod.Cls`` is registered."""
        cls = message_types.registered_type(suffix)
        if cls is None:
            raise yaml.constructor.ConstructorError(
                None, None, 'refused {} object: its class is not registered '
                'with register_type'.format(_shown_tag(suffix)), node.start_mark)
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(
                None, None, 'a {} object needs a mapping'.format(
                    _shown_tag(suffix)), node.start_mark)
        return message_types.build(cls, self.construct_mapping(node, deep=True))

    def construct_tuple(self, node: yaml.Node) -> tuple[Any, ...]:
        return tuple(self.construct_sequence(node, deep=True))


for _tag, _plain in [('none', 'null'), ('bool', 'bool'), ('int', 'int'),
                     ('long', 'int'), ('float', 'float'), ('str', 'str'),
                     ('unicode', 'str')]:
    _MessageLoader.add_constructor(
        _PYTHON + _tag, _SafeLoader.yaml_constructors['tag:yaml.org,2002:' + _plain])
_MessageLoader.add_constructor(_PYTHON + 'tuple', _MessageLoader.construct_tuple)
_MessageLoader.add_multi_constructor(_PYTHON + 'object:',
                                     _MessageLoader.construct_registered)


def _shown_tag(name: str) -> str:
    return repr(name if len(name) <= 80 else name[:77] + '...')

#: Building a YAML document fails in the library (``YAMLError``), in the
#: pure Python composer on deep nesting (``RecursionError``), or in the
#: safe constructors: ``date(2001, 2, 30)`` (``ValueError``), ``!!bool maybe``
#: (``KeyError``), the base 60 float ``1:00:...:00.5`` (``OverflowError``).
_YAML_ERRORS = (yaml.YAMLError, RecursionError, ValueError, LookupError,
                OverflowError, MessageDecodeError)
#: PyYAML converts base 60 integers (``1:00:00``) itself, in time quadratic
#: in their length; CPython refuses ``int()`` of more than 4300 digits for
#: the same reason. A YAML number written longer than this is refused.
_MAX_NUMBER_TEXT = 4300
_NUMBER_TAGS = frozenset(['tag:yaml.org,2002:int', 'tag:yaml.org,2002:float'])




def load_yaml(text: str, max_size: Optional[int], max_depth: int) -> Any:
    """Build the plain data of a YAML document with the safe loader, within
    bounds.

    :param max_size: how large the document may grow when its aliases are
        expanded; ``None`` for no bound.
    :param max_depth: how many levels of lists and mappings it may nest.
    :raises MessageDecodeError: naming what is wrong and where, never
        quoting the text.
    """
    loader = _MessageLoader(text)
    try:
        node = _yaml_step(loader.get_single_node)
        if node is None:
            return None
        _check_expansion(node, max_size, max_depth)
        return _yaml_step(loader.construct_document, node)
    finally:
        loader.dispose()


def _yaml_step(step: Callable[..., Any], *args: Any) -> Any:
    """Run a step of the loader, turning its failures into a decode error."""
    try:
        return step(*args)
    except _YAML_ERRORS as e:
        raise MessageDecodeError('refused YAML body: {}'.format(_yaml_problem(e))) from e


def _check_expansion(root: yaml.Node, max_size: Optional[int],
                     max_depth: int) -> None:
    """Refuse a YAML node graph too deep or too large once aliases are expanded.

    An alias is the very node it names, so the graph is walked once per
    collection node (post-order, with an explicit stack: it may be deep),
    and the expanded size and depth of each are kept by ``id``. A node met
    again while its own items are being measured is an alias to itself:
    its expansion is infinite.
    """
    if isinstance(root, yaml.ScalarNode):
        _scalar_size(root)
        return
    measured: dict[int, tuple[int, int]] = {}   # id(node) -> (size, depth)
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, items_measured = stack.pop()
        key = id(node)
        if items_measured:
            open_nodes.discard(key)
            measured[key] = _expansion(node, measured, max_size, max_depth)
        elif isinstance(node, yaml.ScalarNode) or key in measured:
            continue
        elif key in open_nodes:
            raise MessageDecodeError('refused YAML body: an alias refers to itself')
        else:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((item, False) for item in _items(node))


def _items(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return list(node.value)


def _expansion(node: yaml.Node, measured: dict[int, tuple[int, int]],
               max_size: Optional[int], max_depth: int) -> tuple[int, int]:
    """Expanded (size, depth) of a collection whose items are measured."""
    size, depth = 1, 1
    for item in _items(node):
        if isinstance(item, yaml.ScalarNode):
            size += _scalar_size(item)
        else:
            item_size, item_depth = measured[id(item)]
            size += item_size
            depth = max(depth, item_depth + 1)
    if depth > max_depth:
        raise MessageDecodeError(
            'refused YAML body: it nests deeper than {} levels'.format(max_depth))
    if max_size is not None and size > max_size:
        raise MessageDecodeError(
            'refused YAML body: through its aliases it expands to more than {} '
            'bytes (max_message_size)'.format(max_size))
    return size, depth


def _scalar_size(node: yaml.ScalarNode) -> int:
    if node.tag in _NUMBER_TAGS and len(node.value) > _MAX_NUMBER_TEXT:
        raise MessageDecodeError('refused YAML body: a number written in more '
                                 'than {} characters'.format(_MAX_NUMBER_TEXT))
    return len(node.value) or 1


def _yaml_problem(error: BaseException) -> str:
    """What is wrong, and where, without quoting the body (it may hold secrets)."""
    if isinstance(error, MessageDecodeError):
        return str(error)
    if not isinstance(error, yaml.YAMLError):
        return 'cannot build a value: {}'.format(type(error).__name__)
    if not isinstance(error, yaml.MarkedYAMLError):
        return _one_line(error)
    mark = error.problem_mark or error.context_mark
    text = ' '.join(part for part in (error.context, error.problem) if part)
    if mark is not None:
        text += ' at line {}, column {}'.format(mark.line + 1, mark.column + 1)
    return _one_line(text)


def _one_line(error: object) -> str:
    return ' '.join(str(error).split())
