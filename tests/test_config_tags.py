# SPDX-License-Identifier: Apache-2.0
"""Tests of application tags: :func:`occo.util.config.register_tag`."""

import dataclasses
import pathlib

import pytest
import yaml

from occo.util.config import (YAMLLoader, register_tag, unregister_tag,
                              yaml_load_file, yaml_load_safe)
from occo.util.exceptions import ConfigurationError, MessageDecodeError

COMPONENT = pathlib.Path(__file__).parent / 'data' / 'legacy_config' / 'component'


@dataclasses.dataclass
class Router:
    sub_providers: list


@dataclasses.dataclass
class Provider:
    name: str


@dataclasses.dataclass
class Stub:
    rpc_config: dict


@pytest.fixture(autouse=True)
def no_tag_leaks():
    """Every test leaves the loader's tags as it found them."""
    before = dict(YAMLLoader.yaml_constructors)
    yield
    assert YAMLLoader.yaml_constructors == before


@pytest.fixture
def register():
    """register_tag, undone after the test for each tag still registered."""
    registered = []

    def register(tag, constructor, **kwargs):
        register_tag(tag, constructor, **kwargs)
        registered.append(tag)

    yield register
    for tag in registered:
        if tag in YAMLLoader.yaml_constructors:
            unregister_tag(tag)


@pytest.fixture
def info_broker_tags(register):
    """The tags of info-broker's test configurations, value style."""
    register('!TestRouter', lambda value: Router(**value))
    register('!TestProviderA', lambda value: Provider('A'))
    register('!TestProviderB', lambda value: Provider('B'))
    register('!RemoteProviderStub', lambda value: Stub(**value))


def test_registered_tags_build_the_info_broker_router(info_broker_tags):
    router = yaml_load_file(COMPONENT / 'test_router.yaml')

    assert router == Router(sub_providers=[Provider('A'), Provider('B')])


def test_value_constructor_gets_mapping_with_merge_keys_applied(info_broker_tags):
    config = yaml_load_file(COMPONENT / 'test_remote.yaml')

    assert config['provider_stub'] == Stub(rpc_config={
        'protocol': 'memory', 'host': 'localhost', 'vhost': 'test',
        'user': 'test', 'password': 'test',
        'routing_key': 'remote_infobroker_test'})
    assert config['real_provider'].sub_providers == [Provider('A'), Provider('B')]
    assert config['logging']['root']['level'] == 'CRITICAL'


@pytest.mark.parametrize('text, value', [
    ('!Tag {a: 1, b: [x]}', {'a': 1, 'b': ['x']}),
    ('!Tag [1, two]', [1, 'two']),
    ('!Tag 42', '42'),
    ('!Tag', ''),
])
def test_value_constructor_gets_plain_data_of_each_node_kind(register, text, value):
    received = []
    register('!Tag', received.append)

    yaml_load_safe('x: ' + text)

    assert received == [value]


def test_tag_in_imported_file_and_merge_of_imported_anchor(register):
    # occo.yaml imports components.yaml, whose !CloudHandler merges an
    # anchor that holds an imported file.
    register('!CloudHandler', lambda value: ('CloudHandler', value))
    register('!UDS', lambda value: ('UDS', value))

    config = yaml_load_file(COMPONENT / 'occo.yaml')

    assert config['infrastructure']['cloudhandler'] == ('CloudHandler', {
        'protocol': 'dummy', 'name': 'LPDS-override',
        'auth_data': {'username': 'dummy', 'password': 'dummy'}})
    assert config['infrastructure']['uds'] == ('UDS', {'protocol': 'dict'})


def test_node_constructor_written_for_pyyaml_works_unchanged(register):
    # The original factory's constructor, as given to yaml.add_constructor.
    def construct(loader, node):
        if isinstance(node, yaml.ScalarNode):
            return Provider('default')
        return Provider(**loader.construct_mapping(node, deep=True))
    register('!Provider', construct, with_node=True)

    data = yaml_load_safe('- !Provider\n- !Provider {name: B}\n')

    assert data == [Provider('default'), Provider('B')]


def test_node_constructor_gets_the_loader_and_the_node(register):
    calls = []
    register('!Tag', lambda loader, node: calls.append((loader, node)),
             with_node=True)

    yaml_load_safe('x: !Tag {a: 1}')

    (loader, node), = calls
    assert isinstance(loader, YAMLLoader)
    assert isinstance(node, yaml.MappingNode) and node.tag == '!Tag'


def _pyyaml_constructor_tables():
    loaders = [getattr(yaml, name) for name in (
        'BaseLoader', 'SafeLoader', 'FullLoader', 'Loader', 'UnsafeLoader',
        'CBaseLoader', 'CSafeLoader', 'CFullLoader', 'CLoader', 'CUnsafeLoader')
        if hasattr(yaml, name)]
    constructors = [yaml.constructor.BaseConstructor, yaml.constructor.SafeConstructor,
                    yaml.constructor.FullConstructor, yaml.constructor.Constructor]
    return {cls: (dict(cls.yaml_constructors), dict(cls.yaml_multi_constructors))
            for cls in loaders + constructors}


def test_register_tag_never_touches_pyyaml_loaders(register):
    before = _pyyaml_constructor_tables()

    register('!Router', lambda value: 'built')

    assert _pyyaml_constructor_tables() == before
    assert yaml_load_safe('!Router {}') == 'built'
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load('!Router {}')


def test_registered_tag_is_not_honoured_in_message_bodies(register):
    from occo.util.communication import codec
    built = []
    register('!Router', built.append)

    with pytest.raises(MessageDecodeError):
        codec.decode(b'x: !Router {a: 1}\n', 'application/yaml')

    assert built == []


@pytest.mark.parametrize('tag', [
    '!!python/object', '!!python/object/apply:os.system', '!!python/name:os.system',
    'tag:yaml.org,2002:python/object/apply:os.system',
    'tag:yaml.org,2002:python/module:os'])
def test_register_tag_refuses_python_tags(tag):
    with pytest.raises(ConfigurationError, match=r'refused tag .*plain data'):
        register_tag(tag, lambda value: value)


@pytest.mark.parametrize('tag', ['!!str', '!!map', 'tag:yaml.org,2002:str',
                                 'tag:yaml.org,2002:binary'])
def test_register_tag_refuses_standard_yaml_tags(tag):
    with pytest.raises(ConfigurationError, match='standard YAML tag'):
        register_tag(tag, lambda value: value)


@pytest.mark.parametrize('tag', ['!yaml_import', '!text_import'])
def test_register_tag_refuses_the_library_own_tags(tag):
    with pytest.raises(ConfigurationError, match='tag of occo.util.config itself'):
        register_tag(tag, lambda value: value)


@pytest.mark.parametrize('tag', ['', '!', 'Router', '! Router', '!Rou ter', None, 7])
def test_register_tag_refuses_malformed_tags(tag):
    with pytest.raises(ConfigurationError, match='a tag is'):
        register_tag(tag, lambda value: value)


def test_register_tag_refuses_constructor_that_is_not_callable():
    with pytest.raises(ConfigurationError, match='must be callable'):
        register_tag('!Router', 'Router')


def test_register_tag_again_with_same_constructor_does_nothing(register):
    def build(value):
        return 'built'
    register('!Router', build)

    register_tag('!Router', build)

    assert yaml_load_safe('!Router {}') == 'built'


def test_register_tag_again_with_other_constructor_raises(register):
    register('!Router', lambda value: 'first')

    with pytest.raises(ConfigurationError,
                       match=r"tag !Router is registered already.*unregister_tag"):
        register_tag('!Router', lambda value: 'second')

    assert yaml_load_safe('!Router {}') == 'first'


def test_register_tag_again_in_other_style_raises(register):
    def build(*args):
        return 'built'
    register('!Router', build)

    with pytest.raises(ConfigurationError, match='registered already'):
        register_tag('!Router', build, with_node=True)


def test_unregister_tag_makes_the_tag_unknown_again(register):
    register('!Router', lambda value: 'built')
    assert yaml_load_safe('!Router {}') == 'built'

    unregister_tag('!Router')

    with pytest.raises(ConfigurationError, match="unknown tag '!Router'"):
        yaml_load_safe('!Router {}')


def test_unregister_tag_then_register_another_constructor(register):
    register('!Router', lambda value: 'first')
    unregister_tag('!Router')

    register('!Router', lambda value: 'second')

    assert yaml_load_safe('!Router {}') == 'second'


@pytest.mark.parametrize('tag', ['!Router', '!yaml_import', '!!str'])
def test_unregister_tag_that_is_not_registered_raises(tag):
    with pytest.raises(ConfigurationError, match='is not registered'):
        unregister_tag(tag)


def test_constructor_error_names_file_line_and_tag(tmp_path, register):
    def build(value):
        raise TypeError('missing argument: name')
    register('!Provider', build)
    path = tmp_path / 'providers.yaml'
    path.write_text('providers:\n  - !Provider {size: 1}\n')

    with pytest.raises(ConfigurationError) as excinfo:
        yaml_load_file(path)

    assert str(excinfo.value) == (
        '{}, line 2, column 5: the constructor of !Provider failed: '
        'TypeError: missing argument: name'.format(path))
    assert isinstance(excinfo.value.__cause__.__cause__, TypeError)


def test_unknown_tag_names_the_tag_and_register_tag():
    with pytest.raises(ConfigurationError,
                       match=r"<string>, line 2, column 4: unknown tag '!Router' "
                             r"\(.*occo.util.config.register_tag\)"):
        yaml_load_safe('a: 1\nb: !Router {}\n')


def test_python_import_of_the_original_components_is_refused():
    with pytest.raises(ConfigurationError,
                       match=r"autoimport\.yaml, line 1, column 13: unknown tag "
                             r"'!python_import'"):
        yaml_load_file(COMPONENT / 'autoimport.yaml')
