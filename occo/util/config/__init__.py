# SPDX-License-Identifier: Apache-2.0
"""Configuration from a YAML file, optionally overridden on the command line.

Load a configuration file; its top-level keys become attributes::

    with open('config.yaml') as f:
        cfg = DefaultYAMLConfig(f)
    cfg.parse_args()            # optional: command-line overrides
    with comm.RPCProducer(**cfg.mqconfig) as rpc:
        ...

YAML is only ever read by :class:`YAMLLoader`, a safe loader: it builds plain
data (mappings, lists, strings, numbers...), never Python objects, so a tag
such as ``!!python/object/apply`` is an error, not a function call. It adds one
tag, ``!yaml_import``, that replaces a node with the content of another YAML
file::

    mqconfig: !yaml_import mq.yaml        # relative to this file
    auth: !yaml_import file:///etc/occo/auth.yaml

``repr()`` of a configuration masks passwords (see :func:`mask_secrets`), so a
configuration can be shown without leaking credentials.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, Optional, Union, cast

import yaml

from ..exceptions import ConfigurationError

__all__ = ['Config', 'DefaultConfig', 'DefaultYAMLConfig', 'YAMLLoader',
           'yaml_load_safe', 'mask_secrets']

_MASK = '***'
_KIND = {dict: 'a mapping', list: 'a list', str: 'a string', int: 'an integer',
         float: 'a number', bool: 'a boolean', bytes: 'binary data'}

#: What YAML can be read from: the text itself, or a file open for reading.
_YAMLSource = Union[str, bytes, IO[str], IO[bytes]]


def mask_secrets(obj: Any) -> Any:
    """Return a copy of *obj* in which passwords are replaced by ``'***'``.

    The value of every mapping key named ``password``, or ending in
    ``password`` (case-insensitive), is masked at any depth, and so is the
    password of every URL in a string (``amqp://user:secret@host`` becomes
    ``amqp://user:***@host``). Use it before showing or logging configuration.

    In a string, everything from the first ``://`` to the last ``@`` is
    masked but the user name (up to the first ``:``), so a password with an
    unescaped ``/``, ``?``, ``#``, ``@`` or space is masked whole. This may
    mask more than the password (two URLs in one string, an ``@`` after the
    URL); it never shows one.

    >>> mask_secrets({'mq': {'url': 'amqp://guest:guest@localhost/'}})
    {'mq': {'url': 'amqp://guest:***@localhost/'}}
    >>> mask_secrets('amqp://bob:a/b?c#d@e f@host/vhost')
    'amqp://bob:***@host/vhost'

    :param obj: plain data: mappings, lists, tuples, strings and scalars.
    :returns: a masked copy; mappings become :class:`dict`. *obj* is not
        modified.
    """
    if isinstance(obj, Mapping):
        return {key: _MASK if _is_password_key(key) else mask_secrets(value)
                for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(mask_secrets(item) for item in obj)
    if isinstance(obj, str):
        return _mask_url_password(obj)
    return obj


def _mask_url_password(text: str) -> str:
    """``text`` with everything between the first ``://`` and the last
    ``@``, but the user name, replaced by ``'***'``.

    A parser that stops at the first ``/``, ``?`` or ``#`` (as
    :func:`urllib.parse.urlsplit` does) shows the rest of a password that
    holds one unescaped, so the user information is taken to run to the
    last ``@``, as :class:`~occo.util.communication.settings.Settings`
    reads it.
    """
    start = text.find('://')
    at = text.rfind('@')
    if start < 0 or at < start + 3:
        return text
    user, colon, _ = text[start + 3:at].partition(':')
    if not colon:  # no password: amqp://user@host
        return text
    return '{}{}:{}{}'.format(text[:start + 3], user, _MASK, text[at:])


def _is_password_key(key: object) -> bool:
    return isinstance(key, str) and key.lower().endswith('password')


if TYPE_CHECKING:  # CSafeLoader has SafeLoader's API, but is not a subclass
    _SafeLoaderBase = yaml.SafeLoader
else:
    _SafeLoaderBase = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)


class YAMLLoader(_SafeLoaderBase):
    """Safe YAML loader with the ``!yaml_import`` tag.

    It is :class:`yaml.SafeLoader` (the C implementation when available);
    the tag is registered on this class only, never on PyYAML's own loaders.

    :param stream: a string or an open file.
    :param base_dir: directory against which ``!yaml_import`` resolves
        relative paths; ``None`` means the current directory.
    """

    def __init__(self, stream: _YAMLSource, base_dir: Optional[str] = None,
                 _importing: tuple[str, ...] = ()) -> None:
        super().__init__(stream)
        self.base_dir = base_dir
        self._importing = _importing

    def construct_yaml_import(self, node: yaml.ScalarNode) -> Any:
        """Load the file named by the scalar *node* (a path or ``file://``)."""
        url = self.construct_scalar(node)
        path = url[len('file://'):] if url.startswith('file://') else url
        path = os.path.abspath(os.path.join(self.base_dir or '', path))
        if path in self._importing:
            raise yaml.constructor.ConstructorError(
                None, None, 'circular !yaml_import of {}'.format(path),
                node.start_mark)
        try:
            with open(path, encoding='utf-8') as stream:
                return _load(stream, path, self._importing)
        except OSError as e:
            raise yaml.constructor.ConstructorError(
                None, None, 'cannot !yaml_import {}: {}'.format(
                    path, e.strerror), node.start_mark) from e


YAMLLoader.add_constructor('!yaml_import', YAMLLoader.construct_yaml_import)


def yaml_load_safe(stream_or_string: _YAMLSource, name: Optional[str] = None) -> Any:
    """Parse one YAML document with :class:`YAMLLoader`.

    ``!yaml_import`` reads local files, so use this for configuration, not
    for data received from others.

    :param stream_or_string: YAML text, or a file open for reading.
    :param name: the file name to show in errors and against which
        ``!yaml_import`` resolves relative paths; defaults to the stream's
        ``name``, or ``'<string>'`` (relative to the current directory).
    :returns: the plain data in the document; ``None`` if it is empty.
    :raises ConfigurationError: when the document cannot be parsed, uses a
        tag that is not allowed, or imports a file that cannot be loaded.
        The message names the file and the line.
    """
    if name is None:
        name = getattr(stream_or_string, 'name', None)
    return _load(stream_or_string, name if isinstance(name, str) else None,
                 ())


def _load(stream_or_string: _YAMLSource, name: Optional[str],
          importing: tuple[str, ...]) -> Any:
    path = os.path.abspath(name) if name else None
    loader = YAMLLoader(stream_or_string, path and os.path.dirname(path),
                        importing + (path,) if path else importing)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise ConfigurationError(_describe(e, name or '<string>')) from e
    finally:
        loader.dispose()


def _describe(error: yaml.YAMLError, name: str) -> str:
    mark = getattr(error, 'problem_mark', None)
    if mark is None:  # e.g. a control character: no line to show
        return 'cannot parse {}: {}'.format(name, str(error).splitlines()[0])
    # Only a MarkedYAMLError has a problem_mark.
    return 'cannot parse {}, line {}, column {}: {}'.format(
        name, mark.line + 1, mark.column + 1,
        cast(yaml.MarkedYAMLError, error).problem)


class Config:
    """Configuration values, held as attributes.

    >>> Config(host='localhost', password='guest')
    Config(host='localhost', password='***')

    :param values: the configuration; every key becomes an attribute.
    """

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    if TYPE_CHECKING:
        # The attributes are the configuration's keys, known only at run time.
        def __getattr__(self, name: str) -> Any: ...

    def as_dict(self) -> dict[str, Any]:
        """Return the configuration values as a new :class:`dict`.

        :returns: a shallow copy; private attributes (``_name``) are left out.
        """
        return {key: value for key, value in vars(self).items()
                if not key.startswith('_')}

    def __repr__(self) -> str:
        return '{}({})'.format(type(self).__name__, ', '.join(
            '{}={!r}'.format(key, value)
            for key, value in mask_secrets(self.as_dict()).items()))


class DefaultConfig(Config):
    """Configuration from a mapping of defaults, overridable by arguments.

    The defaults become attributes. :meth:`add_argument` declares
    command-line options, and :meth:`parse_args` overrides the attribute of
    the same name with every option given a value other than ``None``.

    :param defaults: the configuration as a mapping of strings to values;
        ``None`` means empty.
    :param cfg_path: where *defaults* came from, named in error messages.
    :param parser_kwargs: passed to :class:`argparse.ArgumentParser`.
    :raises ConfigurationError: when *defaults* is not a mapping, or a key is
        not a string, starts with ``_`` or hides a method (``parse_args``).
    """

    def __init__(self, defaults: Optional[Mapping[str, Any]],
                 cfg_path: Optional[str] = None, **parser_kwargs: Any) -> None:
        source = cfg_path or '<defaults>'
        if defaults is None:
            defaults = {}
        if not isinstance(defaults, Mapping):
            kind = _KIND.get(type(defaults), 'a ' + type(defaults).__name__)
            hint = ' (pass an open file, not its path)' if kind == (
                'a string') else ''
            raise ConfigurationError(
                '{}: the top level must be a mapping of keys to values, '
                'got {}{}'.format(source, kind, hint))
        for key in defaults:
            if (not isinstance(key, str) or key.startswith('_')
                    or hasattr(type(self), key)):
                raise ConfigurationError(
                    '{}: {!r} cannot be a configuration key'.format(
                        source, key))
        super().__init__(**defaults)
        parser_kwargs.setdefault('formatter_class',
                                 argparse.ArgumentDefaultsHelpFormatter)
        self._parser = argparse.ArgumentParser(**parser_kwargs)

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:
        """Declare a command-line option, as
        :meth:`argparse.ArgumentParser.add_argument` does.

        Unless *kwargs* give a ``default``, the option's default (shown in
        ``--help``) is the configuration value of the same name.

        :returns: the :class:`argparse.Action` created.
        """
        action = self._parser.add_argument(*names, **kwargs)
        if 'default' not in kwargs and action.dest in self.as_dict():
            action.default = getattr(self, action.dest)
        return action

    def parse_args(self, args: Optional[Sequence[str]] = None,
                   parser: Optional[argparse.ArgumentParser] = None) -> DefaultConfig:
        """Override configuration values with command-line arguments.

        :param args: the arguments, without the program name; ``None`` means
            ``sys.argv[1:]``.
        :param parser: an :class:`argparse.ArgumentParser` to use instead of
            the one :meth:`add_argument` fills.
        :returns: this configuration, so calls can be chained.
        """
        parsed = (parser or self._parser).parse_args(args)
        for key, value in vars(parsed).items():
            if value is not None:
                setattr(self, key, value)
        return self


class DefaultYAMLConfig(DefaultConfig):
    """A :class:`DefaultConfig` whose defaults are read from YAML.

    >>> cfg = DefaultYAMLConfig('mqconfig: {protocol: memory}')
    >>> cfg.mqconfig
    {'protocol': 'memory'}

    :param stream_or_string: a file open for reading, or YAML text. The
        document must be a mapping, or empty.
    :param cfg_path: the file name shown in errors and used to resolve
        ``!yaml_import``; defaults to the stream's ``name``.
    :param parser_kwargs: passed to :class:`argparse.ArgumentParser`.
    :raises ConfigurationError: when the YAML cannot be loaded (see
        :func:`yaml_load_safe`) or its top level is not a mapping.
    """

    def __init__(self, stream_or_string: _YAMLSource, cfg_path: Optional[str] = None,
                 **parser_kwargs: Any) -> None:
        name = cfg_path or getattr(stream_or_string, 'name', None)
        name = name if isinstance(name, str) else None
        super().__init__(yaml_load_safe(stream_or_string, name),
                         name or '<string>', **parser_kwargs)
