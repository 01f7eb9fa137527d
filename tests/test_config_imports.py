# SPDX-License-Identifier: Apache-2.0
"""Tests of ``!yaml_import`` and ``!text_import`` (:mod:`occo.util.config.imports`)."""

import pathlib

import pytest
import yaml

from occo.util.config import YAMLLoader, yaml_load_file, yaml_load_safe
from occo.util.exceptions import ConfigurationError

IMPORT_TEST = pathlib.Path(__file__).parent / 'data' / 'legacy_config' / 'import_test'
CHILD2 = {'something': 3, 'dataaa': 'this is it'}


def write(directory, name, text):
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_yaml_import_mapping_form_loads_nested_imports():
    data = yaml_load_file(IMPORT_TEST / 'parent.yaml')

    assert data == yaml_load_file(IMPORT_TEST / 'control.yaml')
    assert data['child1']['child2'] == CHILD2


def test_yaml_import_in_imported_file_is_relative_to_that_file():
    # inner/c1.yaml imports file://../c2.yaml: relative to inner/, not to
    # the including parent_inner.yaml.
    data = yaml_load_file(IMPORT_TEST / 'parent_inner.yaml')

    assert data == yaml_load_file(IMPORT_TEST / 'control.yaml')


def test_text_import_mapping_form_gives_the_file_text_unparsed():
    data = yaml_load_file(IMPORT_TEST / 'parent_text.yaml')

    assert data == yaml_load_file(IMPORT_TEST / 'control_text.yaml')
    assert data['child1'] == (IMPORT_TEST / 'c1.yaml').read_text()


def test_yaml_import_scalar_form_is_relative_to_including_file(tmp_path):
    write(tmp_path, 'conf/mq.yaml', 'host: x\nport: 5672\n')
    main = write(tmp_path, 'conf/main.yaml', 'mqconfig: !yaml_import mq.yaml\n')

    with open(main) as f:
        data = yaml_load_safe(f)

    assert data == {'mqconfig': {'host': 'x', 'port': 5672}}


def test_text_import_scalar_form_is_relative_to_including_file(tmp_path):
    write(tmp_path, 'conf/motd.txt', 'line one\nline: two\n')
    main = write(tmp_path, 'conf/main.yaml', 'motd: !text_import motd.txt\n')

    assert yaml_load_file(main) == {'motd': 'line one\nline: two\n'}


@pytest.mark.parametrize('form', ['!yaml_import file://{}',
                                  "!yaml_import {{url: 'file://{}'}}"])
def test_yaml_import_accepts_absolute_file_url_in_both_forms(tmp_path, form):
    path = write(tmp_path, 'mq.yaml', 'host: x\n')

    data = yaml_load_safe('mqconfig: ' + form.format(path))

    assert data == {'mqconfig': {'host': 'x'}}


def test_yaml_import_in_string_is_relative_to_current_directory(
        tmp_path, monkeypatch):
    write(tmp_path, 'c2.yaml', 'something: 3\ndataaa: this is it\n')
    monkeypatch.chdir(tmp_path)

    data = yaml_load_safe('child: !yaml_import {url: file://c2.yaml}\n')

    assert data == {'child': CHILD2}


@pytest.mark.parametrize('tag', ['!yaml_import', '!text_import'])
@pytest.mark.parametrize('form', ['{tag} nowhere.yaml',
                                  '{tag} {{url: file://nowhere.yaml}}'])
def test_import_of_missing_file_names_path_including_file_and_line(
        tmp_path, tag, form):
    main = write(tmp_path, 'main.yaml', 'a: 1\nb: ' + form.format(tag=tag) + '\n')

    with pytest.raises(ConfigurationError) as excinfo:
        yaml_load_file(main)

    message = str(excinfo.value)
    assert message.startswith('{}, line 2, column 4: '.format(main))
    assert 'cannot {} {}: No such file'.format(
        tag, tmp_path / 'nowhere.yaml') in message
    assert isinstance(excinfo.value.__cause__, yaml.YAMLError)


@pytest.mark.parametrize('tag', ['!yaml_import', '!text_import'])
@pytest.mark.parametrize('url, scheme', [
    ('http://example.invalid/mq.yaml', 'http'),
    ('https://example.invalid/mq.yaml', 'https'),
    ('FTP://example.invalid/mq.yaml', 'FTP'),
])
def test_import_of_other_scheme_names_the_scheme(tag, url, scheme):
    for text in ('mq: {} {}'.format(tag, url),
                 "mq: {} {{url: '{}'}}".format(tag, url)):
        with pytest.raises(ConfigurationError,
                           match=r"<string>, line 1.*the '{}' scheme is not "
                                 r"supported".format(scheme)):
            yaml_load_safe(text)


def test_yaml_import_of_itself_is_circular(tmp_path):
    main = write(tmp_path, 'main.yaml', 'a: !yaml_import main.yaml\n')

    with pytest.raises(ConfigurationError, match='circular !yaml_import'):
        yaml_load_file(main)


def test_yaml_import_cycle_through_two_files_names_the_chain(tmp_path):
    a = write(tmp_path, 'a.yaml', 'to_b: !yaml_import b.yaml\n')
    b = write(tmp_path, 'b.yaml', 'x: 1\nto_a: !yaml_import {url: file://a.yaml}\n')

    with pytest.raises(ConfigurationError) as excinfo:
        yaml_load_file(a)

    assert str(excinfo.value) == (
        '{b}, line 2, column 7: circular !yaml_import: {a} -> {b} -> {a}'
        .format(a=a, b=b))


def test_yaml_import_cycle_through_symlink_is_detected(tmp_path):
    a = write(tmp_path, 'a.yaml', 'again: !yaml_import link.yaml\n')
    (tmp_path / 'link.yaml').symlink_to(a)

    with pytest.raises(ConfigurationError, match='circular !yaml_import'):
        yaml_load_file(a)


def test_yaml_import_of_same_file_twice_is_not_circular(tmp_path):
    write(tmp_path, 'c2.yaml', 'something: 3\ndataaa: this is it\n')
    main = write(tmp_path, 'main.yaml',
                 'first: !yaml_import c2.yaml\n'
                 'both: [!yaml_import c2.yaml, !yaml_import {url: file://c2.yaml}]\n')

    assert yaml_load_file(main) == {'first': CHILD2, 'both': [CHILD2, CHILD2]}


def test_yaml_import_anchor_on_the_tag_can_be_merged(tmp_path):
    write(tmp_path, 'base.yaml', 'host: h\nport: 1\n')
    main = write(tmp_path, 'main.yaml',
                 'base: &BASE !yaml_import base.yaml\n'
                 'server:\n  <<: *BASE\n  port: 2\n')

    assert yaml_load_file(main) == {'base': {'host': 'h', 'port': 1},
                                    'server': {'host': 'h', 'port': 2}}


def test_yaml_import_of_empty_file_gives_none(tmp_path):
    write(tmp_path, 'empty.yaml', '# nothing\n')
    main = write(tmp_path, 'main.yaml', 'section: !yaml_import empty.yaml\n')

    assert yaml_load_file(main) == {'section': None}


def test_parse_error_in_imported_file_names_that_file_and_line(tmp_path):
    inner = write(tmp_path, 'sub/inner.yaml', 'a: 1\nb: [unclosed\n')
    main = write(tmp_path, 'main.yaml', 'x: !yaml_import sub/inner.yaml\n')

    with pytest.raises(ConfigurationError,
                       match=r'^cannot parse {}, line 3\b'.format(inner)):
        yaml_load_file(main)


def test_python_tag_in_imported_file_is_refused(tmp_path):
    marker = tmp_path / 'marker'
    inner = write(tmp_path, 'inner.yaml',
                  'a: 1\nb: !!python/object/apply:os.system ["touch {}"]\n'
                  .format(marker))
    main = write(tmp_path, 'main.yaml', 'x: !yaml_import inner.yaml\n')

    with pytest.raises(ConfigurationError,
                       match=r"^{}, line 2, column 4: refused tag "
                             r"'tag:yaml.org,2002:python/object/apply"
                       .format(inner)):
        yaml_load_file(main)

    assert not marker.exists()


@pytest.mark.parametrize('value, problem', [
    ("{url: 'file://a.yaml', parser: raw}", "takes one key, url; got 'url', 'parser'"),
    ("{path: a.yaml}", "takes one key, url; got 'path'"),
    ("{url: [a.yaml]}", 'needs url: file://PATH'),
    ('[a.yaml]', 'not a list'),
    ("''", 'needs a path'),
    ("file://", 'needs a path after file://'),
    ('"a\\0b.yaml"', 'got a path with a NUL character'),
])
def test_import_with_malformed_value_says_what_is_wrong(value, problem):
    with pytest.raises(ConfigurationError, match=r'<string>, line 1, column 4: ') as e:
        yaml_load_safe('x: !yaml_import ' + value)

    assert problem in str(e.value)


def test_text_import_of_non_utf8_file_is_a_configuration_error(tmp_path):
    (tmp_path / 'latin1.txt').write_bytes('caf\xe9\n'.encode('latin-1'))
    main = write(tmp_path, 'main.yaml', 'x: !text_import latin1.txt\n')

    with pytest.raises(ConfigurationError, match='not UTF-8 text'):
        yaml_load_file(main)


def test_imports_expand_when_yaml_load_is_given_the_loader(tmp_path):
    write(tmp_path, 'c2.yaml', 'something: 3\ndataaa: this is it\n')
    text = 'a: !yaml_import c2.yaml\n---\nb: !text_import c2.yaml\n'

    documents = list(yaml.load_all(text, Loader=lambda stream: YAMLLoader(
        stream, base_dir=str(tmp_path))))

    assert documents == [{'a': CHILD2}, {'b': 'something: 3\ndataaa: this is it\n'}]
