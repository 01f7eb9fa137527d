# SPDX-License-Identifier: Apache-2.0
"""Configuration keys: defaults, URLs, host lists, validation, secrecy."""

import pytest

from occo.util.communication import ConfigurationError
from occo.util.communication.settings import Settings


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
