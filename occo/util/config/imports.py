# SPDX-License-Identifier: Apache-2.0
"""The ``!yaml_import`` and ``!text_import`` tags: a node replaced by a file.

Both tags name a local file, in one of two forms that the original OCCO
configurations used::

    logging: !yaml_import logging.yaml              # scalar form
    child1: !yaml_import
        url: file://c1.yaml                         # mapping form
    motd: !text_import {url: 'file://motd.txt'}

The value is a path, or a ``file://`` URL whose path is everything after
``file://`` (``file://c1.yaml`` is relative, ``file:///etc/occo/a.yaml``
absolute, as in the original). A relative path is resolved against the
directory of the file that holds the tag, so an imported file's own imports
are relative to *its* directory. Any other scheme (``http://``...) is an
error: configuration never comes from the network.

``!yaml_import`` puts the imported document's nodes in place of the tagged
node *before* anything is constructed: anchors defined in the imported file
work as if it were written inline, an anchor on the tag (``base: &B
!yaml_import base.yaml``) can be merged (``<<: *B``), and tags of the
imported file are constructed by the same loader. ``!text_import`` puts the
file's text in place, as a string, without parsing it.

An import that is circular, names a missing file, or uses another scheme
raises :class:`yaml.constructor.ConstructorError` at the tagged node; the
loader turns it into a :exc:`~occo.util.exceptions.ConfigurationError` that
names the including file and the line.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from typing import IO, Any, NoReturn, Optional

import yaml
from yaml.constructor import ConstructorError

__all__ = ['IMPORT_TAGS', 'ImportState', 'expand_imports']

YAML_IMPORT = '!yaml_import'
TEXT_IMPORT = '!text_import'
#: The tags this module expands; no application may register them.
IMPORT_TAGS = frozenset([YAML_IMPORT, TEXT_IMPORT])

_SCHEME = re.compile(r'([A-Za-z][A-Za-z0-9+.-]*)://')
_STR_TAG = 'tag:yaml.org,2002:str'
_NULL_TAG = 'tag:yaml.org,2002:null'


@dataclasses.dataclass(frozen=True)
class ImportState:
    """What one load shares between the file loaded and the files it imports.

    A new state is made for each imported file (``chain`` grows); ``files``
    is the same set for the whole load, and only grows.
    """

    #: Real paths of the files being loaded, outermost first: importing one
    #: of them again is circular.
    chain: tuple[str, ...] = ()
    #: The names (absolute paths) under which imported files were opened:
    #: the name a node's mark shows when the node came from an imported file.
    files: set[str] = dataclasses.field(default_factory=set)


#: Makes the loader of an imported file: ``make_loader(stream, base_dir, state)``.
MakeLoader = Callable[[IO[bytes], str, 'ImportState'], Any]


def expand_imports(root: yaml.Node, base_dir: Optional[str], state: ImportState,
                   make_loader: MakeLoader) -> yaml.Node:
    """Return *root* with every import node replaced by what it imports.

    The walk is iterative (no recursion limit on deep documents) and visits
    every node once: a node reached through several aliases is replaced by
    one and the same imported node everywhere.

    :param root: the composed document.
    :param base_dir: directory of the file *root* came from; ``None``: the
        current directory.
    :param state: the state of the load (see :class:`ImportState`).
    :param make_loader: makes the loader that composes an imported file,
        of the caller's own class.
    :returns: the new root (*root* itself unless it is an import node).
    :raises yaml.constructor.ConstructorError: when an import fails.
    """
    # {id(import node): (import node, replacement)}: the import node is kept
    # so that its id cannot be reused while the walk runs.
    replaced: dict[int, tuple[yaml.Node, yaml.Node]] = {}
    seen: set[int] = set()

    def resolve(node: yaml.Node) -> yaml.Node:
        if node.tag not in IMPORT_TAGS:
            return node
        if id(node) not in replaced:
            new = _import(node, base_dir, state, make_loader)
            replaced[id(node)] = (node, new)
            seen.add(id(new))  # expanded already by the loader that made it
        return replaced[id(node)][1]

    root = resolve(root)
    pending = [root] if id(root) not in seen else []
    seen.add(id(root))
    while pending:
        node = pending.pop()
        children: list[yaml.Node]
        if isinstance(node, yaml.SequenceNode):
            node.value = children = [resolve(item) for item in node.value]
        elif isinstance(node, yaml.MappingNode):
            node.value = [(resolve(k), resolve(v)) for k, v in node.value]
            children = [n for pair in node.value for n in pair]
        else:
            continue
        for child in reversed(children):  # document order, depth first
            if id(child) not in seen:
                seen.add(id(child))
                pending.append(child)
    return root


def _import(node: yaml.Node, base_dir: Optional[str], state: ImportState,
            make_loader: MakeLoader) -> yaml.Node:
    path = _path(node, _target(node), base_dir)
    if node.tag == TEXT_IMPORT:
        return yaml.ScalarNode(_STR_TAG, _read_text(node, path),
                               node.start_mark, node.end_mark, style='|')
    return _compose(node, path, state, make_loader)


def _target(node: yaml.Node) -> str:
    """The path or URL an import node names, in either form."""
    if isinstance(node, yaml.ScalarNode):
        target = node.value
    elif isinstance(node, yaml.MappingNode):
        entries = {key.value: value for key, value in node.value
                   if isinstance(key, yaml.ScalarNode)}
        if len(entries) != len(node.value) or set(entries) - {'url'}:
            _fail(node, '{} takes one key, url; got {}'.format(
                node.tag, ', '.join(repr(getattr(k, 'value', k))
                                    for k, _ in node.value) or 'none'))
        if not isinstance(entries.get('url'), yaml.ScalarNode):
            _fail(node, '{} needs url: file://PATH'.format(node.tag))
        target = entries['url'].value
    else:
        _fail(node, '{} takes a path, a file:// URL or {{url: file://PATH}}, '
                    'not a list'.format(node.tag))
    if not target.strip():
        _fail(node, '{} needs a path'.format(node.tag))
    return str(target)


def _path(node: yaml.Node, target: str, base_dir: Optional[str]) -> str:
    """The absolute path that *target* names, relative to *base_dir*."""
    if '\0' in target:
        _fail(node, '{} got a path with a NUL character'.format(node.tag))
    scheme = _SCHEME.match(target)
    if scheme:
        if scheme.group(1).lower() != 'file':
            _fail(node, '{} reads local files only (a path or a file:// URL); '
                        'the {!r} scheme is not supported: {}'.format(
                            node.tag, scheme.group(1), target))
        target = target[scheme.end():]
        if not target:
            _fail(node, '{} needs a path after file://'.format(node.tag))
    return os.path.abspath(os.path.join(base_dir or os.getcwd(), target))


def _read_text(node: yaml.Node, path: str) -> str:
    try:
        with open(path, encoding='utf-8') as stream:
            return stream.read()
    except OSError as e:
        _fail(node, 'cannot {} {}: {}'.format(node.tag, path, e.strerror))
    except UnicodeDecodeError as e:
        _fail(node, 'cannot {} {}: not UTF-8 text ({})'.format(
            node.tag, path, e.reason))


def _compose(node: yaml.Node, path: str, state: ImportState,
             make_loader: MakeLoader) -> yaml.Node:
    real = os.path.realpath(path)
    if real in state.chain:
        _fail(node, 'circular {}: {}'.format(
            node.tag, ' -> '.join(state.chain[state.chain.index(real):]
                                  + (real,))))
    state.files.add(path)
    child_state = dataclasses.replace(state, chain=state.chain + (real,))
    base_dir = os.path.dirname(path)
    try:
        # Binary, so that libyaml detects the encoding and reports bad bytes
        # as a YAMLError; the stream's name (the absolute path) is the name
        # every mark of the imported nodes carries.
        with open(path, 'rb') as stream:
            loader = make_loader(stream, base_dir, child_state)
            try:
                root: Optional[yaml.Node] = loader.get_single_node()
            finally:
                loader.dispose()
    except OSError as e:
        _fail(node, 'cannot {} {}: {}'.format(node.tag, path, e.strerror))
    if root is None:  # an empty file imports null, as an empty document loads
        return yaml.ScalarNode(_NULL_TAG, '', node.start_mark, node.end_mark)
    return expand_imports(root, base_dir, child_state, make_loader)


def _fail(node: yaml.Node, problem: str) -> NoReturn:
    raise ConstructorError(None, None, problem, node.start_mark)
