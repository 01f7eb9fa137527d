# SPDX-License-Identifier: Apache-2.0
"""Tests of :mod:`occo.util.config`."""

import argparse
import copy
import doctest

import pytest
import yaml

import occo.util.config as config
import occo.util.config.tags as config_tags
from occo.util.config import (Config, DefaultConfig, DefaultYAMLConfig,
                              mask_secrets)
from occo.util.exceptions import ConfigurationError

MQCONFIG = {
    'protocol': 'amqp',
    'host': 'localhost',
    'port': 5672,
    'user': 'guest',
    'password': 'secret',
    'queue': 'test',
}


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / 'config.yaml'
    path.write_text(yaml.safe_dump({'setting': 1, 'mqconfig': MQCONFIG}))
    return path


def test_default_yaml_config_keys_become_attributes_from_stream(config_file):
    with open(config_file) as f:
        cfg = DefaultYAMLConfig(f)

    assert cfg.setting == 1


def test_default_yaml_config_keys_become_attributes_from_string():
    cfg = DefaultYAMLConfig('setting: 1\nlist_setting: [a, b]\n')

    assert (cfg.setting, cfg.list_setting) == (1, ['a', 'b'])


def test_default_yaml_config_nested_mqconfig_round_trips(config_file):
    with open(config_file) as f:
        cfg = DefaultYAMLConfig(f)

    assert cfg.mqconfig == MQCONFIG


def test_default_yaml_config_empty_document_gives_empty_config():
    assert DefaultYAMLConfig('# nothing here\n').as_dict() == {}


def test_parse_args_overrides_value_given_on_command_line():
    cfg = DefaultYAMLConfig('setting: 1\nname: old\n')
    cfg.add_argument('--setting', type=int)

    cfg.parse_args(['--setting', '5'])

    assert (cfg.setting, cfg.name) == (5, 'old')


def test_parse_args_does_not_override_with_none():
    cfg = DefaultYAMLConfig('setting: 1\n')
    parser = argparse.ArgumentParser()
    parser.add_argument('--setting', type=int, default=None)

    cfg.parse_args([], parser=parser)

    assert cfg.setting == 1


def test_add_argument_defaults_to_configured_value():
    cfg = DefaultConfig({'setting': 1})

    action = cfg.add_argument('--setting', type=int)

    assert action.default == 1


def test_default_config_rejects_key_that_hides_a_method():
    with pytest.raises(ConfigurationError, match="'parse_args' cannot be"):
        DefaultConfig({'parse_args': 1})


def test_default_yaml_config_parse_error_names_file_and_line(tmp_path):
    path = tmp_path / 'broken.yaml'
    path.write_text('setting: 1\nmqconfig: {host: x\nother: 2\n')

    with pytest.raises(ConfigurationError,
                       match=r'broken\.yaml, line 3\b') as excinfo:
        with open(path) as f:
            DefaultYAMLConfig(f)

    assert isinstance(excinfo.value.__cause__, yaml.YAMLError)


def test_default_yaml_config_parse_error_in_string_names_string():
    with pytest.raises(ConfigurationError, match='<string>, line 2'):
        DefaultYAMLConfig('a: 1\n  b: 2\n')


def test_default_yaml_config_non_mapping_names_file_and_kind(tmp_path):
    path = tmp_path / 'list.yaml'
    path.write_text('- a\n- b\n')

    with pytest.raises(ConfigurationError,
                       match=r'list\.yaml: .*mapping.*got a list'):
        with open(path) as f:
            DefaultYAMLConfig(f)


def test_default_yaml_config_refuses_python_object_tag(tmp_path):
    marker = tmp_path / 'marker'
    payload = '!!python/object/apply:os.system ["touch {}"]\n'.format(marker)

    with pytest.raises(ConfigurationError,
                       match=r'<string>, line 1.*python/object/apply'):
        DefaultYAMLConfig('setting: ' + payload)

    assert not marker.exists()


def test_repr_masks_nested_password(config_file):
    with open(config_file) as f:
        cfg = DefaultYAMLConfig(f)

    assert 'secret' not in repr(cfg)
    assert "'password': '***'" in repr(cfg)


def test_repr_masks_password_in_url():
    cfg = Config(url='amqp://user:s3cr3t@host:5672/vhost')

    assert repr(cfg) == "Config(url='amqp://user:***@host:5672/vhost')"


def test_mask_secrets_masks_keys_ending_in_password_at_any_depth():
    data = {'a': [{'DB_Password': 'x', 'user': 'u'}], 'password': None}

    assert mask_secrets(data) == {
        'a': [{'DB_Password': '***', 'user': 'u'}], 'password': '***'}


def test_mask_secrets_does_not_mutate_input():
    data = {'mq': {'password': 'x', 'url': 'amqp://u:p@h'},
            'urls': ['amqp://u:p@h']}
    original = copy.deepcopy(data)

    mask_secrets(data)

    assert data == original


@pytest.mark.parametrize('password', ['se/cret', 'se?cret', 'se#cret',
                                      'se@cret', 'se cret', 'se:cret',
                                      '5672/se', 'a@b/c?d#e f'])
def test_mask_secrets_masks_url_password_with_unescaped_characters(password):
    url = 'amqp://bob:{}@h:5672/v?heartbeat=5'.format(password)

    assert mask_secrets(url) == 'amqp://bob:***@h:5672/v?heartbeat=5'
    assert repr(Config(url=url)) == (
        "Config(url='amqp://bob:***@h:5672/v?heartbeat=5')")


@pytest.mark.parametrize('text', ['amqp://bob@h/', 'amqp://h:5672/v',
                                  'mail bob@example.com', 'no url'])
def test_mask_secrets_leaves_text_without_url_password_unchanged(text):
    assert mask_secrets(text) == text


def test_mask_secrets_masks_every_password_of_several_urls_in_one_string():
    masked = mask_secrets('amqp://a:one/x@h1, amqp://b:two@h2 and c@d')

    assert 'one' not in masked and 'two' not in masked
    assert masked.startswith('amqp://a:***@')


@pytest.mark.parametrize('module', [config, config_tags])
def test_config_module_examples_run(module):
    results = doctest.testmod(module)

    assert results.attempted > 0
    assert results.failed == 0
