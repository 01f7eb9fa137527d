# SPDX-License-Identifier: Apache-2.0
"""Configuration from a YAML file, optionally overridden on the command line.

Load a configuration file; its top-level keys become attributes::

    cfg = DefaultYAMLConfig('config.yaml')  # a path, an open file or YAML text
    cfg.parse_args()            # optional: command-line overrides
    with comm.RPCProducer(**cfg.mqconfig) as rpc:
        ...

YAML is only ever read by :class:`YAMLLoader`, a safe loader: it builds plain
data (mappings, lists, strings, numbers...), never Python objects, so a tag
such as ``!!python/object/apply`` is an error, not a function call. Two tags
put another file in place of a node (see :ref:`config-imports`)::

    mqconfig: !yaml_import mq.yaml            # relative to this file
    auth: !yaml_import {url: 'file:///etc/occo/auth.yaml'}
    motd: !text_import motd.txt               # the text, not parsed

An application that builds objects from its configuration adds its own tags
to :class:`YAMLLoader` (and to no other loader) with :func:`register_tag`.

``repr()`` of a configuration masks passwords (see :func:`mask_secrets`), so a
configuration can be shown without leaking credentials.

The parts: ``occo.util.config.loader`` (the loader, and YAML errors turned
into :exc:`~occo.util.exceptions.ConfigurationError`),
``occo.util.config.imports`` (the import tags), ``occo.util.config.tags``
(application tags); this module holds the configuration classes. Import
every name from ``occo.util.config``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

from ..exceptions import ConfigurationError
from .loader import YAMLLoader, YAMLSource, yaml_load_file, yaml_load_safe
from .tags import register_tag, unregister_tag

__all__ = ['Config', 'DefaultConfig', 'DefaultYAMLConfig', 'YAMLLoader',
           'yaml_load_safe', 'yaml_load_file', 'register_tag', 'unregister_tag',
           'mask_secrets']

_MASK = '***'
_KIND = {dict: 'a mapping', list: 'a list', str: 'a string', int: 'an integer',
         float: 'a number', bool: 'a boolean', bytes: 'binary data'}

#: What :class:`DefaultYAMLConfig` reads: a path, YAML text, or an open file.
_ConfigSource = Union[YAMLSource, 'os.PathLike[str]']
#: A one-line string is YAML text, not a path, when it starts with one of
#: these (a flow collection, a comment); see _names_a_file.
_YAML_STARTS = ('{', '[', '#')


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
            raise ConfigurationError(
                '{}: the top level must be a mapping of keys to values, '
                'got {}'.format(source, kind))
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

    *source* is one of:

    * a path: an :class:`os.PathLike` (such as :class:`pathlib.Path`), or a
      :class:`str` that names a file;
    * a file open for reading (text or binary);
    * YAML text, as :class:`str` or :class:`bytes`.

    A :class:`str` is told apart by this rule, first match wins:

    1. a string with a line break is YAML text;
    2. a string that names an existing file is a path;
    3. a string that holds ``': '`` (as a mapping does), ends with ``':'``,
       starts with ``{``, ``[`` or ``#``, or is blank, is YAML text;
    4. any other string (``'config.yaml'``, ``'etc/occo'``) is a path, and
       a :exc:`~occo.util.exceptions.ConfigurationError` says "no such
       configuration file" when nothing is there.

    So ``'mqconfig: !yaml_import mq.yaml'`` is YAML text and
    ``'mq.yaml'`` a path; to load a file whose name looks like YAML, pass a
    :class:`pathlib.Path`.

    :param source: a path, a file open for reading, or YAML text. The
        document must be a mapping, or empty.
    :param cfg_path: the file name shown in errors and used to resolve
        ``!yaml_import``; defaults to the path, or the stream's ``name``.
    :param parser_kwargs: passed to :class:`argparse.ArgumentParser`.
    :raises ConfigurationError: when the file does not exist or cannot be
        read, the YAML cannot be loaded (see :func:`yaml_load_safe`) or its
        top level is not a mapping.
    :raises TypeError: when *source* is none of the above.

    Later OCCO code passed a path (``DefaultYAMLConfig(util.rel_to_file(
    'test.yaml'))``), earlier code an open file; both work.
    """

    def __init__(self, source: _ConfigSource, cfg_path: Optional[str] = None,
                 **parser_kwargs: Any) -> None:
        name: Optional[str]
        if isinstance(source, os.PathLike) or (
                isinstance(source, str) and _names_a_file(source)):
            path = os.fsdecode(source)
            name = cfg_path or path
            defaults = yaml_load_file(path, name)
        elif isinstance(source, (str, bytes)) or hasattr(source, 'read'):
            stream_name = getattr(source, 'name', None)
            name = cfg_path or (stream_name if isinstance(stream_name, str) else None)
            defaults = yaml_load_safe(source, name)
        else:
            raise TypeError('DefaultYAMLConfig reads a path, an open file or '
                            'YAML text, not {}'.format(type(source).__name__))
        super().__init__(defaults, name or '<string>', **parser_kwargs)


def _names_a_file(text: str) -> bool:
    """Whether the string *text* given to DefaultYAMLConfig is a path.

    The rule is the one DefaultYAMLConfig's docstring states.
    """
    if '\n' in text or '\r' in text:
        return False
    if os.path.isfile(text):
        return True
    stripped = text.strip()
    looks_like_yaml = (not stripped or ': ' in stripped or stripped.endswith(':')
                       or stripped.startswith(_YAML_STARTS))
    return not looks_like_yaml
