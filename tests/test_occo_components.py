# SPDX-License-Identifier: Apache-2.0
"""How the original OCCO components used the package, in miniature, on both
backends.

Each test follows a component's own code: the info-broker's remote
provider stub and skeleton (request objects out, ``KeyError`` and
``ValueError`` subclasses back), the infra-processor's remote push strategy
and skeleton (a list of instruction objects), the enactor's local backend
registered through :mod:`occo.util.factory` and built with ``instantiate``,
and the api's polling loop.
"""

import pathlib
import subprocess
import sys
import threading

import pytest

import occo.util.communication as comm
import occo.util.config as config
import occo.util.factory as factory
from conftest import JOIN_TIMEOUT, Collector, amqp_config, raw_channel, running_consumer


# -- the components' own classes -------------------------------------------------

@comm.register_type
class InfoProviderRequest:
    """As the info-broker's remote provider sent it: a key and its arguments."""

    def __init__(self, key, *args, **kwargs):
        self.key = key
        self.args = list(args)
        self.kwargs = kwargs


@comm.register_type
class KeyNotFoundError(KeyError):
    pass


class ArgumentError(ValueError):
    """Not registered: it comes back as a ValueError."""

    def __init__(self, name, problem):
        super().__init__('{}: {}'.format(name, problem))


class Command:
    """The infra-processor's instructions: state in ``__dict__``, behaviour
    in methods, subclasses per instruction."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)

    def perform(self, infra):
        raise NotImplementedError


@comm.register_type
class CreateEnvironment(Command):
    def perform(self, infra):
        infra.setdefault(self.environment_id, [])
        return self.environment_id


@comm.register_type
class CreateNode(Command):
    def perform(self, infra):
        infra[self.environment_id].append(self.node['name'])
        return self.node['name']


class InfoProvider:
    """The skeleton side's local provider."""

    data = {'infrastructure.state': {'i1': 'ready'}, 'node.count': 3}

    def get(self, key, *args, **kwargs):
        if key == 'infrastructure.state':
            if kwargs.get('infra_id') is None:
                raise ArgumentError('infra_id', 'is required')
            return self.data[key][kwargs['infra_id']]
        if key not in self.data:
            raise KeyNotFoundError(key)
        return self.data[key]


def provider_skeleton(request, provider):
    """The info-broker's RemoteProviderSkeleton: failures as
    ExceptionResponse with an HTTP-like code."""
    try:
        return provider.get(request.key, *request.args, **request.kwargs)
    except KeyError as e:
        return comm.ExceptionResponse(404, e)
    except ValueError as e:
        return comm.ExceptionResponse(400, e)


class RemoteProviderStub:
    """The info-broker's RemoteProviderStub."""

    def __init__(self, rpc):
        self.rpc = rpc

    def get(self, key, *args, **kwargs):
        return self.rpc.push_message(InfoProviderRequest(key, *args, **kwargs))


# -- info-broker ---------------------------------------------------------------

def test_remote_provider_stub_and_skeleton(config):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    with running_consumer(provider_skeleton, pkwargs={'provider': InfoProvider()}, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            stub = RemoteProviderStub(rpc)
            assert stub.get('node.count') == 3
            assert stub.get('infrastructure.state', infra_id='i1') == 'ready'
            with pytest.raises(KeyError) as missing:
                stub.get('global.nonexistent')
            with pytest.raises(ValueError) as bad:
                stub.get('infrastructure.state')
    assert isinstance(missing.value, KeyNotFoundError)
    assert missing.value.args == ('global.nonexistent',)
    assert missing.value.http_code == 404
    assert isinstance(bad.value, comm.ApplicationError)
    assert str(bad.value) == 'infra_id: is required'
    assert (bad.value.http_code, bad.value.remote_type) == (400, 'ArgumentError')


def test_transport_and_application_failures_stay_apart(config):
    """The seed's order: except CommunicationError, then ApplicationError."""
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    caught = []
    with running_consumer(provider_skeleton, pkwargs={'provider': InfoProvider()}, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            for key in ['global.nonexistent', 'node.count']:
                try:
                    caught.append(rpc.push_message(InfoProviderRequest(key)))
                except comm.CommunicationError:
                    caught.append('transport')
                except comm.ApplicationError as e:
                    caught.append(('application', e.http_code))
    assert caught == [('application', 404), 3]


# -- infra-processor -----------------------------------------------------------

def test_instruction_list_pushed_to_the_infra_processor_skeleton(config):
    cfg = config()
    infra = {}
    performed = Collector()

    def skeleton(instructions):
        performed([instruction.perform(infra) for instruction in instructions])
    with running_consumer(skeleton, **cfg):
        with comm.AsynchronProducer(**cfg) as push:
            push.push_message([CreateEnvironment(environment_id='e1'),
                               CreateNode(environment_id='e1', node={'name': 'A'}),
                               CreateNode(environment_id='e1', node={'name': 'B'})])
        [results] = performed.wait_for(1)
    assert results == ['e1', 'A', 'B']
    assert infra == {'e1': ['A', 'B']}


def test_instructions_over_rpc_return_objects(config):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)

    def skeleton(instructions):
        return [CreateNode(environment_id=i.environment_id, node={'name': 'made'})
                for i in instructions]
    with running_consumer(skeleton, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            [made] = rpc.push_message([CreateEnvironment(environment_id='e2')])
    assert type(made) is CreateNode
    assert vars(made) == {'environment_id': 'e2', 'node': {'name': 'made'}}


def test_an_unregistered_instruction_is_refused_at_the_sender(config):
    class DropNode(Command):
        pass
    cfg = config()
    with comm.AsynchronProducer(**cfg) as push:
        with pytest.raises(TypeError, match=r'register_type\(DropNode\)'):
            push.push_message([DropNode(node_id='n1')])


# -- enactor -------------------------------------------------------------------

class LocalInfraProcessor(comm.RPCProducer):
    """The enactor's local backend: positional parameters of its own."""

    def __init__(self, static_description, output, **kwargs):
        self.static_description = static_description
        self.output = output

    def push_instructions(self, instructions, **kwargs):
        infra = {}
        self.output.extend(i.perform(infra) for i in instructions)


@pytest.fixture
def local_backend():
    """The enactor registered its backend at import; a test unregisters it
    after, so that other tests see the registry as the package leaves it."""
    factory.register(comm.RPCProducer, 'local-test')(LocalInfraProcessor)
    yield
    factory.unregister(comm.RPCProducer, 'local-test')


def test_enactor_local_backend_through_occo_util_factory(local_backend):
    output = []
    processor = comm.RPCProducer.instantiate('local-test', {'name': 'infra'}, output)
    assert type(processor) is LocalInfraProcessor
    processor.push_instructions([CreateEnvironment(environment_id='e'),
                                 CreateNode(environment_id='e', node={'name': 'A'})])
    assert output == ['e', 'A']
    assert comm.backends(comm.RPCProducer)['local-test'] is LocalInfraProcessor
    assert comm.register is factory.register


def test_instantiate_with_a_protocol_keyword_is_the_constructor(config):
    cfg = config()
    producer = comm.AsynchronProducer.instantiate(**cfg)
    assert type(producer) is type(comm.AsynchronProducer(**cfg))
    with producer:
        producer.push_message('x')


def test_instantiate_without_a_protocol_names_the_known_ones():
    with pytest.raises(comm.ConfigurationError, match='known protocols: .*amqp'):
        comm.RPCProducer.instantiate()
    with pytest.raises(comm.ConfigurationError, match="unknown protocol 'lokal'"):
        comm.RPCProducer.instantiate('lokal')


def test_an_application_interface_gets_its_own_registry():
    class UDS(factory.MultiBackend):
        pass

    @factory.register(UDS, 'dict')
    class DictUDS(UDS):
        def __init__(self, **config):
            self.config = config
    assert type(UDS(protocol='dict')) is DictUDS
    assert UDS.instantiate('dict', x=1).config == {'x': 1}
    assert factory.MultiBackend.instantiate(UDS, 'dict', x=2).config == {'x': 2}
    with pytest.raises(comm.ConfigurationError, match='abstract class first'):
        factory.MultiBackend.instantiate('dict')
    assert factory.backends(UDS) == {'dict': DictUDS}
    assert not factory.has_backend(comm.RPCProducer, 'dict')
    factory.unregister(UDS, 'dict')
    assert factory.backends(UDS) == {}
    with pytest.raises(comm.ConfigurationError,
                       match="no backend is registered for protocol 'dict'"):
        factory.unregister(UDS, 'dict')


# -- api -------------------------------------------------------------------------

def test_api_polls_the_infrastructure_state_until_ready(config):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    states = iter(['pending', 'pending', 'ready'])
    ready = threading.Event()

    def skeleton(request):
        state = next(states)
        if state == 'ready':
            ready.set()
        return state
    seen = []
    with running_consumer(skeleton, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            while not ready.is_set():
                seen.append(rpc.push_message(InfoProviderRequest(
                    'infrastructure.state', infra_id='i1')))
    assert seen == ['pending', 'pending', 'ready']


# -- use without ``with`` ----------------------------------------------------------

def test_remote_provider_stub_without_with_as_the_original_wrote_it(config):
    """RemoteProviderStub kept ``comm.RPCProducer(**rpc_config)`` in an
    attribute and called it, never entering it."""
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    with running_consumer(provider_skeleton, pkwargs={'provider': InfoProvider()}, **cfg):
        stub = RemoteProviderStub(comm.RPCProducer(**cfg))
        try:
            assert stub.get('node.count') == 3
        finally:
            stub.rpc.close()


@pytest.mark.broker
def test_messages_pushed_without_with_are_confirmed_when_the_program_ends(tmp_path):
    """An asynchronous producer never closed is closed at exit, which waits
    for the broker's confirms: nothing pushed is lost."""
    cfg = amqp_config(durable=False)
    with raw_channel() as channel:
        channel.queue_declare(cfg['queue'], durable=False)
    script = tmp_path / 'producer.py'
    script.write_text(
        'import occo.util.communication as comm\n'
        'producer = comm.AsynchronProducer(**{!r})\n'
        'for i in range(500):\n'
        '    producer.push_message({{"i": i, "pad": "x" * 1000}})\n'.format(cfg))
    subprocess.run([sys.executable, str(script)], check=True, timeout=JOIN_TIMEOUT * 6)
    with raw_channel() as channel:
        declared = channel.queue_declare(cfg['queue'], passive=True)
    assert declared.method.message_count == 500


# -- a component's configuration ----------------------------------------------------

COMPONENT_CONFIG = pathlib.Path(__file__).parent / 'data' / 'legacy_config' / 'component'


class TestRouter:
    __test__ = False   # info-broker's name, not a pytest class

    def __init__(self, sub_providers):
        self.sub_providers = sub_providers

    def get(self, key, *args, **kwargs):
        for provider in self.sub_providers:
            if key in provider.data:
                return provider.get(key, *args, **kwargs)
        raise KeyNotFoundError(key)


class TestProviderA(InfoProvider):
    data = {'a.value': 'from A'}


class TestProviderB(InfoProvider):
    data = {'b.value': 'from B'}


@pytest.fixture
def info_broker_tags():
    """The tags info-broker's remote test configuration uses."""
    tags = {'!TestRouter': lambda value: TestRouter(**value),
            '!TestProviderA': lambda value: TestProviderA(),
            '!TestProviderB': lambda value: TestProviderB(),
            '!RemoteProviderStub': lambda value: RemoteProviderStub(
                comm.RPCProducer(**value['rpc_config']))}
    for tag, constructor in tags.items():
        config.register_tag(tag, constructor)
    yield
    for tag in tags:
        config.unregister_tag(tag)


def test_info_broker_remote_test_config_runs_stub_against_skeleton(info_broker_tags):
    """test_remote.yaml in info-broker's shape: merge keys, application tags
    building the router and the stub, logging by !yaml_import {url: ...};
    loaded from a path, as the era's later code did."""
    cfg = config.DefaultYAMLConfig(str(COMPONENT_CONFIG / 'test_remote.yaml'))
    assert cfg.logging['root']['level'] == 'CRITICAL'
    skeleton_config = dict(cfg.server_mqconfig, rpc_timeout=JOIN_TIMEOUT)
    stub = cfg.provider_stub
    with running_consumer(provider_skeleton, pkwargs={'provider': cfg.real_provider},
                          **skeleton_config):
        try:
            assert stub.get('a.value') == 'from A'
            assert stub.get('b.value') == 'from B'
            with pytest.raises(KeyNotFoundError) as missing:
                stub.get('c.value')
        finally:
            stub.rpc.close()
    assert missing.value.http_code == 404
