# SPDX-License-Identifier: Apache-2.0
"""Tests of what :class:`occo.util.config.DefaultYAMLConfig` reads: a path,
an open file, or YAML text, and how a string is told apart."""

import pathlib

import pytest

from occo.util.config import DefaultYAMLConfig
from occo.util.exceptions import ConfigurationError

IMPORT_TEST = pathlib.Path(__file__).parent / 'data' / 'legacy_config' / 'import_test'
CHILD1 = {'anything': 1, 'child2': {'something': 3, 'dataaa': 'this is it'}}


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    """A current directory with config.yaml and mq.yaml in it."""
    (tmp_path / 'config.yaml').write_text('setting: 1\nmqconfig: !yaml_import mq.yaml\n')
    (tmp_path / 'mq.yaml').write_text('protocol: memory\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_reads_pathlib_path_and_resolves_imports_next_to_it():
    cfg = DefaultYAMLConfig(IMPORT_TEST / 'parent.yaml')

    assert cfg.child1 == CHILD1


def test_reads_absolute_str_path():
    cfg = DefaultYAMLConfig(str(IMPORT_TEST / 'parent.yaml'))

    assert cfg.child1 == CHILD1


def test_reads_relative_str_path(config_dir):
    cfg = DefaultYAMLConfig('config.yaml')

    assert cfg.as_dict() == {'setting': 1, 'mqconfig': {'protocol': 'memory'}}


@pytest.mark.parametrize('mode', ['r', 'rb'])
def test_reads_open_file_in_text_or_binary_mode(mode):
    with open(IMPORT_TEST / 'parent.yaml', mode) as f:
        cfg = DefaultYAMLConfig(f)

    assert cfg.child1 == CHILD1


@pytest.mark.parametrize('text, expected', [
    ('setting: 1', {'setting': 1}),
    ('mqconfig: {protocol: memory}', {'mqconfig': {'protocol': 'memory'}}),
    ('mqconfig: !yaml_import mq.yaml', {'mqconfig': {'protocol': 'memory'}}),
    ('{}', {}),
    ('{a: 1}', {'a': 1}),
    ('key:', {'key': None}),
    ('# config.yaml', {}),
    ('', {}),
    ('   ', {}),
])
def test_one_line_str_that_looks_like_yaml_is_text(config_dir, text, expected):
    assert DefaultYAMLConfig(text).as_dict() == expected


def test_str_with_line_break_is_text_even_if_it_names_a_file(config_dir):
    # config.yaml exists in the current directory; 'config.yaml\n' is the
    # text of a plain scalar, so the top level is not a mapping.
    with pytest.raises(ConfigurationError, match='<string>: .*got a string'):
        DefaultYAMLConfig('config.yaml\n')


def test_bytes_are_yaml_text(config_dir):
    assert DefaultYAMLConfig(b'config.yaml: 1').as_dict() == {'config.yaml': 1}


def test_str_naming_existing_file_is_a_path_even_if_it_looks_like_yaml(config_dir):
    (config_dir / 'setting: 2').write_text('setting: 3\n')

    assert DefaultYAMLConfig('setting: 2').setting == 3


@pytest.mark.parametrize('name', ['missing.yaml', 'missing.yml', 'etc/occo/missing',
                                  'missing', 'C:occo.yaml'])
def test_str_that_looks_like_a_path_and_is_missing_says_no_such_file(
        config_dir, name):
    with pytest.raises(ConfigurationError) as excinfo:
        DefaultYAMLConfig(name)

    assert str(excinfo.value) == 'no such configuration file: {!r} ({})'.format(
        name, config_dir / name)


def test_missing_pathlib_path_says_no_such_file(tmp_path):
    path = tmp_path / 'nowhere.yaml'

    with pytest.raises(ConfigurationError,
                       match=r"^no such configuration file: '{}'$".format(path)):
        DefaultYAMLConfig(path)


def test_directory_path_cannot_be_read(config_dir):
    (config_dir / 'conf.d').mkdir()

    with pytest.raises(ConfigurationError,
                       match=r"^cannot read configuration file 'conf.d' .*: Is a directory"):
        DefaultYAMLConfig('conf.d')


def test_path_with_nul_character_cannot_be_read():
    with pytest.raises(ConfigurationError, match='cannot read configuration file'):
        DefaultYAMLConfig('config\0.yaml')


def test_errors_in_a_path_name_the_path_and_line(tmp_path):
    path = tmp_path / 'broken.yaml'
    path.write_text('setting: 1\nmqconfig: {host: x\nother: 2\n')

    with pytest.raises(ConfigurationError,
                       match=r'^cannot parse {}, line 3\b'.format(path)):
        DefaultYAMLConfig(str(path))


def test_non_mapping_file_names_the_path(tmp_path):
    path = tmp_path / 'list.yaml'
    path.write_text('- a\n- b\n')

    with pytest.raises(ConfigurationError,
                       match=r'^{}: .*mapping.*got a list$'.format(path)):
        DefaultYAMLConfig(path)


def test_cfg_path_is_the_name_shown_for_a_path(tmp_path):
    path = tmp_path / 'list.yaml'
    path.write_text('- a\n')

    with pytest.raises(ConfigurationError, match=r'^shown\.yaml: '):
        DefaultYAMLConfig(path, cfg_path='shown.yaml')


@pytest.mark.parametrize('source', [7, None, ['setting: 1']])
def test_other_types_raise_type_error(source):
    with pytest.raises(TypeError, match='a path, an open file or YAML text'):
        DefaultYAMLConfig(source)
