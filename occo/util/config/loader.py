# SPDX-License-Identifier: Apache-2.0
"""The safe YAML loader of configuration files, and the functions that use it.

:class:`YAMLLoader` is PyYAML's safe loader plus the import tags (see
``occo.util.config.imports``) and whatever tags the application adds with
:func:`~occo.util.config.register_tag`. Every tag lives on this class only,
never on PyYAML's own loaders. A ``!!python/...`` tag, or a tag nobody
registered, is an error that says which.

Every YAML error becomes a :exc:`~occo.util.exceptions.ConfigurationError`
here, in :func:`yaml_load_safe`, with the file and the line in the message.
"""

from __future__ import annotations

import os
from typing import IO, TYPE_CHECKING, Any, Optional, Union

import yaml
from yaml.constructor import ConstructorError

from ..exceptions import ConfigurationError
from .imports import ImportState, expand_imports

__all__ = ['YAMLLoader', 'yaml_load_safe', 'yaml_load_file', 'PYTHON_TAG_PREFIXES']

#: What YAML can be read from: the text itself, or a file open for reading.
YAMLSource = Union[str, bytes, IO[str], IO[bytes]]

#: Tags that would build Python objects: always refused.
PYTHON_TAG_PREFIXES = ('tag:yaml.org,2002:python', '!!python')

if TYPE_CHECKING:  # CSafeLoader has SafeLoader's API, but is not a subclass
    _SafeLoaderBase = yaml.SafeLoader
else:
    _SafeLoaderBase = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)


class YAMLLoader(_SafeLoaderBase):
    """Safe YAML loader with ``!yaml_import``, ``!text_import`` and the tags
    registered with :func:`~occo.util.config.register_tag`.

    It is :class:`yaml.SafeLoader` (the C implementation when available):
    it builds plain data, and objects only through registered tags.

    :param stream: a string or an open file.
    :param base_dir: directory against which imports resolve relative paths;
        ``None`` means the current directory.
    """

    def __init__(self, stream: YAMLSource, base_dir: Optional[str] = None) -> None:
        super().__init__(stream)
        self.base_dir = base_dir
        self._import_state = ImportState()

    @classmethod
    def _in_load(cls, stream: YAMLSource, base_dir: Optional[str],
                 state: ImportState) -> YAMLLoader:
        """A loader for one file of a load that shares *state*."""
        loader = cls(stream, base_dir)
        loader._import_state = state
        return loader

    # Imports are expanded between composing and constructing, so that
    # anchors and merge keys see the imported nodes (see imports.py). Every
    # load (get_single_data, get_data) constructs through this method.
    def construct_document(self, node: yaml.Node) -> Any:
        node = expand_imports(node, self.base_dir, self._import_state,
                              type(self)._in_load)
        return super().construct_document(node)

    def construct_undefined(self, node: yaml.Node) -> Any:
        if node.tag.startswith(PYTHON_TAG_PREFIXES):
            problem = ('refused tag {!r}: configuration is read as plain data, '
                       'never as Python objects'.format(node.tag))
        else:
            problem = ('unknown tag {!r} (an application adds its own tags with '
                       'occo.util.config.register_tag)'.format(node.tag))
        raise ConstructorError(None, None, problem, node.start_mark)


YAMLLoader.add_constructor(None, YAMLLoader.construct_undefined)


def yaml_load_safe(stream_or_string: YAMLSource, name: Optional[str] = None) -> Any:
    """Parse one YAML document with :class:`YAMLLoader`.

    The import tags read local files, so use this for configuration, not
    for data received from others.

    :param stream_or_string: YAML text, or a file open for reading.
    :param name: the file name to show in errors and against which imports
        resolve relative paths; defaults to the stream's ``name``, or
        ``'<string>'`` (relative to the current directory).
    :returns: the plain data in the document; ``None`` if it is empty.
    :raises ConfigurationError: when the document cannot be parsed, uses a
        tag that is not allowed, imports a file that cannot be loaded, or a
        registered tag's constructor fails. The message names the file and
        the line (the imported file's, for a node that came from one).
    """
    if name is None:
        stream_name = getattr(stream_or_string, 'name', None)
        name = stream_name if isinstance(stream_name, str) else None
    path = os.path.abspath(name) if name else None
    state = ImportState(chain=(os.path.realpath(path),) if path else ())
    loader = YAMLLoader._in_load(stream_or_string, path and os.path.dirname(path), state)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise ConfigurationError(_describe(e, name or '<string>', state.files)) from e
    finally:
        loader.dispose()


def yaml_load_file(path: Union[str, os.PathLike[str]], name: Optional[str] = None) -> Any:
    """Read the YAML file at *path* with :func:`yaml_load_safe`.

    The original OCCO's name for loading a configuration file by its path.

    :param path: the file to read.
    :param name: as for :func:`yaml_load_safe`; defaults to *path*.
    :returns: the plain data in the document; ``None`` if it is empty.
    :raises ConfigurationError: when the file does not exist or cannot be
        read, and as :func:`yaml_load_safe` does.
    """
    path = os.fspath(path)
    try:
        with open(path, 'rb') as stream:
            return yaml_load_safe(stream, name or path)
    except ConfigurationError:
        raise  # a ValueError too, but about the content, not the file
    except FileNotFoundError as e:
        raise ConfigurationError('no such configuration file: {}'.format(
            _shown(path))) from e
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise ConfigurationError('cannot read configuration file {}: {}'.format(
            _shown(path), getattr(e, 'strerror', None) or e)) from e


def _shown(path: str) -> str:
    """*path* as given, and where it points when it is relative."""
    full = os.path.abspath(path)
    return repr(path) if full == path else '{!r} ({})'.format(path, full)


def _describe(error: yaml.YAMLError, name: str, imported: set[str]) -> str:
    """The message of the ConfigurationError that replaces *error*.

    A mark names the stream it was made from; that is the name to show when
    the stream is an imported file, and *name* otherwise.
    """
    mark = getattr(error, 'problem_mark', None)
    where = getattr(mark, 'name', None) or getattr(error, 'name', None)
    if where not in imported:
        where = name
    prefix = '' if isinstance(error, ConstructorError) else 'cannot parse '
    if mark is None:  # e.g. a control character: no line to show
        return '{}{}: {}'.format(prefix, where, str(error).splitlines()[0])
    return '{}{}, line {}, column {}: {}'.format(
        prefix, where, mark.line + 1, mark.column + 1,
        getattr(error, 'problem', None) or error)
