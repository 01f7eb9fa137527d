# SPDX-License-Identifier: Apache-2.0
"""Configuration keys: defaults, URLs, host lists, validation, secrecy."""

import doctest

import pika
import pytest
from conftest import BROKER_HOST, BROKER_PORT, JOIN_TIMEOUT

from occo.util.communication import ConfigurationError, settings
from occo.util.communication.settings import (MAX_RPC_TIMEOUT, Secret, Settings,
                                              check_timeout)
from occo.util.config import mask_secrets


def test_defaults():
    s = Settings({'protocol': 'amqp', 'queue': 'q'})
    assert (s.hosts, s.vhost, s.user, s.exchange, s.routing_key) == (
        [('localhost', 5672)], '/', 'guest', '', 'q')
    assert s.durable and s.confirm and s.rpc_timeout is None


def test_url_sets_user_password_host_port_vhost_and_query():
    s = Settings({'url': 'amqps://bob:p%40ss@mq.example:5999/%2Fprod?heartbeat=30'})
    assert (s.user, s.password, s.hosts, s.vhost, s.heartbeat, s.ssl) == (
        'bob', 'p@ss', [('mq.example', 5999)], '/prod', 30, True)


def test_url_list_gives_hosts_in_order():
    s = Settings({'url': ['amqp://h1', 'amqp://h2:5673/v']})
    assert s.hosts == [('h1', 5672), ('h2', 5673)] and s.vhost == '/'


def test_host_list_with_ports():
    s = Settings({'host': ['a', 'b:5680', '[::1]:5690'], 'port': 5600})
    assert s.hosts == [('a', 5600), ('b', 5680), ('::1', 5690)]


@pytest.mark.parametrize('config, key', [
    ({'url': 'http://x'}, 'url'),
    ({'url': 'amqp://h/?bogus=1'}, 'url'),
    ({'host': []}, 'host'),
    ({'host_selection': 'random'}, 'host_selection'),
    ({'queue_type': 'stream'}, 'queue_type'),
    ({'queue_type': 'quorum', 'durable': False}, 'durable'),
    ({'ssl_options': {'cafile': 'x'}}, 'ssl_options'),
    ({'prefetch_count': -1}, 'prefetch_count'),
    ({'heartbeat': True}, 'heartbeat'),
])
def test_invalid_value_raises_configuration_error_naming_key(config, key):
    with pytest.raises(ConfigurationError, match=key):
        Settings(config)


def test_quorum_queue_arguments():
    s = Settings({'queue_type': 'quorum', 'delivery_limit': 3,
                  'dead_letter_exchange': 'dlx'})
    assert s.queue_arguments() == {'x-queue-type': 'quorum',
                                   'x-delivery-limit': 3,
                                   'x-dead-letter-exchange': 'dlx'}
    assert Settings({}).queue_arguments() is None


def test_repr_and_endpoint_never_show_the_password():
    s = Settings({'url': 'amqp://bob:hunter2@h/v'})
    assert 'hunter2' not in repr(s) + s.endpoint + str(vars(s).keys())
    assert s.endpoint == "user 'bob' at h:5672, vhost 'v'"


def _message(config):
    """The message of the ConfigurationError that ``config`` raises."""
    with pytest.raises(ConfigurationError) as info:
        Settings(config)
    return str(info.value)


@pytest.mark.parametrize('port', [70000, 65536, 0, -1, 5672.9, '5672.0', 'x',
                                  True, float('nan'), float('inf')])
def test_port_out_of_range_raises_naming_key_and_range(port):
    with pytest.raises(ConfigurationError, match='port') as info:
        Settings({'port': port})
    assert 'an integer from 1 to 65535' in str(info.value)


@pytest.mark.parametrize('port', [5672.0, '5672', 1, 65535])
def test_port_accepts_whole_numbers_in_range(port):
    assert Settings({'port': port}).port == int(float(port))


@pytest.mark.parametrize('host', ['h:70000', 'h:0', ['a', 'b:65536'],
                                  '[::1]:99999'])
def test_host_entry_port_out_of_range_raises(host):
    with pytest.raises(ConfigurationError, match='host') as info:
        Settings({'host': host})
    assert 'an integer from 1 to 65535' in str(info.value)


@pytest.mark.parametrize('url', ['amqp://h:70000/', 'amqp://h:0',
                                 'amqp://h:56x/', ['amqp://a', 'amqp://b:65536']])
def test_url_port_out_of_range_raises(url):
    with pytest.raises(ConfigurationError, match='url') as info:
        Settings({'url': url})
    assert 'integer from 1 to 65535' in str(info.value)


def test_url_ipv6_host_keeps_its_port():
    s = Settings({'url': 'amqp://[::1]:5673/v'})
    assert s.hosts == [('::1', 5673)]


@pytest.mark.parametrize('key, value, allowed', [
    ('prefetch_count', 65536, 'from 0 to 65535'),
    ('prefetch_count', -1, 'from 0 to 65535'),
    ('prefetch_count', 1.5, 'from 0 to 65535'),
    ('heartbeat', 65536, 'from 0 to 65535'),
    ('heartbeat', -1, 'from 0 to 65535'),
    ('heartbeat', 'nan', 'from 0 to 65535'),
    ('delivery_limit', -1, 'from 0 to 2147483647'),
    ('delivery_limit', 2 ** 31, 'from 0 to 2147483647'),
    ('delivery_limit', 2.5, 'from 0 to 2147483647'),
    ('connection_attempts', 0, 'from 1 to 1000'),
    ('connection_attempts', 1001, 'from 1 to 1000'),
    ('connection_attempts', float('inf'), 'from 1 to 1000'),
    ('max_in_flight', 0, 'from 1 to 1000000'),
    ('max_in_flight', 1000001, 'from 1 to 1000000'),
    ('max_message_size', 0, 'from 1 to 536870912'),
    ('max_message_size', 536870913, 'from 1 to 536870912'),
])
def test_integer_key_out_of_range_raises_naming_key_and_range(key, value, allowed):
    with pytest.raises(ConfigurationError, match=key) as info:
        Settings({key: value})
    assert 'an integer ' + allowed in str(info.value)


@pytest.mark.parametrize('key, lowest, highest', [
    ('prefetch_count', 0, 65535), ('heartbeat', 0, 65535),
    ('delivery_limit', 0, 2 ** 31 - 1), ('connection_attempts', 1, 1000),
    ('max_in_flight', 1, 1000000), ('max_message_size', 1, 536870912),
])
def test_integer_key_accepts_its_bounds(key, lowest, highest):
    assert getattr(Settings({key: lowest}), key) == lowest
    assert getattr(Settings({key: str(highest)}), key) == highest


SHORT_STRING_KEYS = ['queue', 'routing_key', 'exchange', 'vhost', 'user',
                     'dead_letter_exchange']


@pytest.mark.parametrize('key', SHORT_STRING_KEYS)
def test_short_string_key_over_255_bytes_raises_naming_key_and_size(key):
    with pytest.raises(ConfigurationError, match=key) as info:
        Settings({key: 'q' * 300})
    assert 'at most 255 bytes' in str(info.value)
    assert 'got 300 bytes' in str(info.value)


@pytest.mark.parametrize('key', SHORT_STRING_KEYS)
def test_short_string_key_counts_utf8_bytes(key):
    assert getattr(Settings({key: 'é' * 127}), key) == 'é' * 127   # 254 bytes
    with pytest.raises(ConfigurationError, match='got 256 bytes'):
        Settings({key: 'é' * 128})


@pytest.mark.parametrize('key, value', [
    ('connect_timeout', float('inf')), ('connect_timeout', float('nan')),
    ('connect_timeout', 'nan'), ('connect_timeout', 0), ('connect_timeout', 1e10),
    ('confirm_timeout', float('inf')), ('confirm_timeout', float('nan')),
    ('confirm_timeout', -1), ('confirm_timeout', True),
    ('retry_delay', float('nan')), ('retry_delay', float('-inf')),
    ('retry_delay', -0.1), ('retry_delay', 'inf'),
])
def test_seconds_key_not_finite_or_out_of_range_raises(key, value):
    with pytest.raises(ConfigurationError, match=key) as info:
        Settings({key: value})
    assert 'a finite number of seconds from ' in str(info.value)
    assert ' to 315360000, got ' in str(info.value)


@pytest.mark.parametrize('query', ['connect_timeout=nan', 'retry_delay=inf',
                                   'heartbeat=70000', 'connection_attempts=0'])
def test_url_query_value_out_of_range_raises_naming_key(query):
    key = query.partition('=')[0]
    with pytest.raises(ConfigurationError, match=key):
        Settings({'url': 'amqp://h/?' + query})


@pytest.mark.parametrize('timeout', [float('nan'), float('inf'), 1e9, 0, -1,
                                     0.0009, 'nan', True])
def test_rpc_timeout_out_of_range_raises_naming_key_and_range(timeout):
    with pytest.raises(ConfigurationError, match='rpc_timeout') as info:
        Settings({'rpc_timeout': timeout})
    assert 'from 0.001 to 315360000' in str(info.value)


@pytest.mark.parametrize('timeout', [None, 0.001, 5, '5', MAX_RPC_TIMEOUT])
def test_rpc_timeout_accepts_none_and_its_range(timeout):
    expected = None if timeout is None else float(timeout)
    assert Settings({'rpc_timeout': timeout}).rpc_timeout == expected


def test_check_timeout_returns_float_and_raises_value_error_naming_what():
    assert check_timeout(2, 'timeout') == 2.0
    with pytest.raises(ValueError, match=r"^timeout must be .* got nan$"):
        check_timeout(float('nan'), 'timeout')


def test_max_rpc_timeout_is_the_largest_expiration_rabbitmq_accepts():
    # What push_message sends; RabbitMQ refuses more than 315360000000 ms.
    assert str(max(1, int(MAX_RPC_TIMEOUT * 1000))) == '315360000000'


@pytest.mark.broker
@pytest.mark.parametrize('expiration, accepted', [
    (int(MAX_RPC_TIMEOUT * 1000), True), (int(MAX_RPC_TIMEOUT * 1000) + 1, False)])
def test_broker_accepts_expiration_up_to_max_rpc_timeout(expiration, accepted):
    connection = pika.BlockingConnection(pika.ConnectionParameters(
        BROKER_HOST, BROKER_PORT, credentials=pika.PlainCredentials('guest', 'guest'),
        blocked_connection_timeout=JOIN_TIMEOUT))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        queue = channel.queue_declare('', exclusive=True).method.queue
        properties = pika.BasicProperties(expiration=str(expiration))
        if accepted:
            channel.basic_publish('', queue, b'x', properties)
        else:
            with pytest.raises(pika.exceptions.ChannelClosedByBroker,
                               match='value_too_large') as info:
                channel.basic_publish('', queue, b'x', properties)
            assert info.value.reply_code == 406
    finally:
        connection.close()


def test_password_is_kept_in_a_secret():
    s = Settings({'password': 'hunter2'})
    assert s.password == 'hunter2'
    assert 'hunter2' not in repr(s) + str(s) + str(vars(s))
    assert isinstance(vars(s)['_password'], Secret)
    secret = Secret('hunter2')
    assert (repr(secret), str(secret), '{}'.format(secret)) == ('***',) * 3
    assert not hasattr(secret, '__dict__') and secret.reveal() == 'hunter2'


AWKWARD_PASSWORDS = ['S3cr/et', 'S3cr?et', 'S3cr#et', 'S3cr@et', 'S3cr et',
                     '5999/S3cr', '5999?S3cr=1', '5999#S3cr', 'S3cr:et@h2/v']


@pytest.mark.parametrize('password', AWKWARD_PASSWORDS)
def test_url_with_awkward_password_parses_and_never_shows_it(password):
    url = 'amqp://bob:{}@h:5673/v?heartbeat=5'.format(password)
    s = Settings({'url': url})
    assert (s.user, s.password, s.hosts, s.vhost, s.heartbeat) == (
        'bob', password, [('h', 5673)], 'v', 5)
    shown = (repr(s) + str(s) + str(vars(s)) + s.endpoint
             + str(mask_secrets(url)) + str(mask_secrets({'mq': {'url': [url]}})))
    assert 'S3cr' not in shown


@pytest.mark.parametrize('url', [
    'amqp://bob:S3cr/et@h:70000/v', 'amqp://bob:S3cr?et@h/?bogus=1',
    'http://bob:S3cr/et@h', 'bob:S3cr@h/x://y', 'amqp://bob:S3cr#et@[::1/v',
    'amqp://bob:S3cr@', 'amqp://bob:S3cr@h:x/',
])
def test_url_error_never_shows_the_password(url):
    assert 'S3cr' not in _message({'url': url})


def test_url_with_at_in_vhost_raises_asking_for_percent_40():
    with pytest.raises(ConfigurationError, match='url.*%40'):
        Settings({'url': 'amqp://h/my@vhost'})
    assert Settings({'url': 'amqp://h/my%40vhost'}).vhost == 'my@vhost'


def test_settings_module_examples_run():
    assert doctest.testmod(settings).failed == 0
