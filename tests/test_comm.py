# SPDX-License-Identifier: Apache-2.0
"""The abstract roles, the backend registry and responses."""

import pytest

import occo.util.communication as comm
from occo.util.communication import memory


def test_role_without_protocol_raises_configuration_error_listing_protocols():
    with pytest.raises(comm.ConfigurationError,
                       match="missing configuration key 'protocol'.*amqp, memory"):
        comm.AsynchronProducer(queue='q')


def test_unknown_protocol_suggests_the_nearest_one():
    with pytest.raises(comm.ConfigurationError,
                       match="unknown protocol 'amqq'.*did you mean 'amqp'.*"
                             "known protocols: amqp, memory"):
        comm.RPCProducer(protocol='amqq', queue='q')


def test_registering_a_protocol_twice_is_an_error():
    with pytest.raises(comm.ConfigurationError, match="'memory' is registered already"):
        @comm.register(comm.AsynchronProducer, 'memory')
        class Another(comm.AsynchronProducer):
            pass
    assert comm.backends(comm.AsynchronProducer)['memory'] is memory.MemoryAsynchronProducer


def test_register_refuses_a_class_of_another_role():
    with pytest.raises(comm.ConfigurationError,
                       match='MemoryAsynchronProducer.* is not a subclass of RPCProducer'):
        comm.register(comm.RPCProducer, 'other')(memory.MemoryAsynchronProducer)


def test_third_party_backend_registers_and_is_constructed_once():
    calls = []

    @comm.register(comm.AsynchronProducer, 'test-recording')
    class Recording(comm.AsynchronProducer):
        def __init__(self, **config):
            calls.append(config)
    try:
        prod = comm.AsynchronProducer(protocol='test-recording', queue='q')
        assert isinstance(prod, Recording)
        assert calls == [{'protocol': 'test-recording', 'queue': 'q'}]
        assert comm.has_backend(comm.AsynchronProducer, 'test-recording')
    finally:
        del comm.AsynchronProducer._backends['test-recording']


def test_backend_class_can_be_constructed_directly():
    prod = memory.MemoryAsynchronProducer(queue='direct')
    with prod:
        prod.push_message('x')
    assert memory.default_broker.queue('direct').get(0).body == b'x'


def test_roles_have_separate_registries():
    assert comm.backends(comm.RPCProducer)['memory'] is memory.MemoryRPCProducer
    assert comm.backends(comm.EventDrivenConsumer)['amqp'].__name__ == 'MQEventDrivenConsumer'


def test_consumer_needs_a_callable_processor():
    with pytest.raises(comm.ConfigurationError, match='processor must be callable'):
        comm.EventDrivenConsumer('not callable', protocol='memory', queue='q')


def test_application_error_is_not_a_communication_error():
    assert not issubclass(comm.ApplicationError, comm.CommunicationError)
    assert issubclass(comm.RPCTimeoutError, comm.TransientError)
    assert issubclass(comm.RPCTimeoutError, TimeoutError)


@pytest.mark.parametrize('code, error', [(400, comm.CriticalError),
                                         (499, comm.CriticalError),
                                         (500, comm.TransientError),
                                         (302, comm.TransientError)])
def test_response_check_raises_by_code(code, error):
    with pytest.raises(error) as info:
        comm.Response(code, 'why').check()
    assert (info.value.http_code, info.value.reason) == (code, 'why')


def test_response_check_returns_data_for_2xx():
    assert comm.Response(204, [1]).check() == [1]


def test_exception_response_carries_exception_text():
    response = comm.ExceptionResponse(503, ValueError('down'))
    assert (response.http_code, response.data) == (503, 'down')


def test_errors_keep_their_arguments():
    error = comm.CriticalError(404, 'gone')
    assert error.args == (404, 'gone') and str(error) == 'gone (code 404)'
    app = comm.ApplicationError('KeyError', "'k'", 'tb')
    assert app.args == ('KeyError', "'k'", 'tb') and str(app) == "KeyError: 'k'"


PLUGIN_MODULE = '''
import occo.util.communication as comm

@comm.register(comm.AsynchronProducer, 'plugin-test')
class PluginProducer(comm.AsynchronProducer):
    def __init__(self, **config):
        self.config = config
'''


def test_backend_of_installed_distribution_loads_through_entry_point(tmp_path, monkeypatch):
    (tmp_path / 'occo_plugin_test.py').write_text(PLUGIN_MODULE)
    dist_info = tmp_path / 'occo_plugin_test-1.0.dist-info'
    dist_info.mkdir()
    (dist_info / 'METADATA').write_text('Name: occo-plugin-test\nVersion: 1.0\n')
    (dist_info / 'entry_points.txt').write_text(
        '[occo.communication.backends]\nplugin-test = occo_plugin_test\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        prod = comm.AsynchronProducer(protocol='plugin-test', queue='q')
        assert type(prod).__name__ == 'PluginProducer'
        assert prod.config == {'protocol': 'plugin-test', 'queue': 'q'}
    finally:
        comm.AsynchronProducer._backends.pop('plugin-test', None)
