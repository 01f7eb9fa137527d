# SPDX-License-Identifier: Apache-2.0
"""Typed messages and remote exceptions, through the codec (no broker).

What a class of the application needs to travel, what the receiving side
builds (only registered classes, from states they accept), and what an RPC
caller gets for a remote exception.
"""

import dataclasses
import os

import pytest
import yaml

import occo.util.communication as comm
from occo.util.communication import codec, message_types


def roundtrip(message):
    body, content_type = codec.encode(message)
    return codec.decode(body, content_type)


def reply_of(result):
    """What an RPC caller gets for the processor's return value."""
    return codec.result_from_reply(codec.encode_reply(result))


def raised_at_caller(exc, http_code=None):
    """What an RPC caller gets when the processor raises ``exc`` (or returns
    ``ExceptionResponse(http_code, exc)``)."""
    try:
        raise exc
    except Exception as e:
        reply = (codec.encode_reply(comm.ExceptionResponse(http_code, e))
                 if http_code else codec.error_reply(e, 'Traceback: remote'))
    with pytest.raises(comm.ApplicationError) as info:
        codec.result_from_reply(reply)
    return info.value


@pytest.fixture
def registered():
    """Register classes for one test only."""
    classes = []

    def register(cls, *args, **kwargs):
        classes.append(cls)
        return comm.register_type(cls, *args, **kwargs)
    yield register
    for cls in classes:
        comm.unregister_type(cls)


@dataclasses.dataclass
class InfoProviderRequest:
    key: str
    args: list = dataclasses.field(default_factory=list)
    kwargs: dict = dataclasses.field(default_factory=dict)


class Command:
    """An instruction as the infra-processor sent them: state in __dict__."""

    def __init__(self, instruction, **kwargs):
        self.instruction = instruction
        self.__dict__.update(kwargs)

    def perform(self):
        return self.instruction

    def __eq__(self, other):
        return type(other) is type(self) and vars(other) == vars(self)


class Stateful:
    """State through __getstate__/__setstate__."""

    def __init__(self, value):
        self.value = value

    def __getstate__(self):
        return {'v': self.value}

    def __setstate__(self, state):
        self.value = state['v']


class Point:
    __slots__ = ('x', 'y')

    def __init__(self, x, y):
        self.x, self.y = x, y


class KeyNotFoundError(KeyError):
    pass


class ArgumentError(ValueError):
    def __init__(self, name, problem):
        super().__init__(name, problem)
        self.name = name


# -- typed messages ----------------------------------------------------------

def test_a_registered_dataclass_arrives_as_an_equal_instance(registered):
    registered(InfoProviderRequest)
    request = InfoProviderRequest('node.state', ['n1'], {'infra': 'i1'})
    body, content_type = codec.encode(request)
    assert content_type == codec.TYPED_JSON
    assert codec.decode(body, content_type) == request


def test_nested_objects_travel_in_lists_and_dicts(registered):
    registered(Command)
    registered(InfoProviderRequest)
    message = {'instructions': [Command('create_env', env_id='e1'),
                                Command('create_node', node={'name': 'A'})],
               'request': InfoProviderRequest('x'), 'raw': b'\x00\xff'}
    received = roundtrip(message)
    assert received == message
    assert [c.perform() for c in received['instructions']] == ['create_env', 'create_node']


def test_getstate_and_custom_functions_give_the_state(registered):
    registered(Stateful)
    registered(Point, encode=lambda p: [p.x, p.y], decode=lambda s: Point(*s))
    stateful, point = roundtrip([Stateful(5), Point(1, 2)])
    assert (type(stateful), stateful.value) == (Stateful, 5)
    assert (point.x, point.y) == (1, 2)


def test_a_plain_message_stays_plain_json_even_with_the_tag_key():
    message = {'__occo_type__': 'test_message_types.Command', 'state': {}}
    body, content_type = codec.encode(message)
    assert content_type == codec.JSON
    assert codec.decode(body, content_type) == message


def test_the_tag_key_in_a_dict_beside_objects_is_escaped(registered):
    registered(Command)
    message = [Command('x'), {'__occo_type__': 'test_message_types.Command'}]
    assert roundtrip(message) == message


def test_sending_an_unregistered_object_says_how_to_register_it():
    with pytest.raises(TypeError, match=r'register_type\(Command\)'):
        codec.encode([Command('x')])


def test_a_subclass_of_a_registered_class_is_not_sent_as_the_base(registered):
    registered(Command)

    class Special(Command):
        pass
    with pytest.raises(TypeError, match='register_type'):
        codec.encode(Special('x'))


def test_a_message_that_contains_itself_is_refused():
    cycle = []
    cycle.append(cycle)
    with pytest.raises(TypeError, match='cannot send'):
        codec.encode(cycle)


def test_an_object_without_dict_needs_encode_and_decode(registered):
    registered(Point)
    with pytest.raises(TypeError, match='encode= and decode='):
        codec.encode(Point(1, 2))


def test_the_receiver_refuses_a_class_it_has_not_registered(registered):
    registered(Command)
    body, content_type = codec.encode(Command('x'))
    comm.unregister_type(Command)
    with pytest.raises(comm.MessageDecodeError, match='not registered here'):
        codec.decode(body, content_type)


def test_a_dataclass_state_with_an_unexpected_field_is_refused(registered):
    registered(InfoProviderRequest)
    body = (b'{"__occo_type__": "test_message_types.InfoProviderRequest",'
            b' "state": {"key": "k", "password": "s3cret"}}')
    with pytest.raises(comm.MessageDecodeError, match="no field 'password'") as info:
        codec.decode(body, codec.TYPED_JSON)
    assert 's3cret' not in str(info.value)


def test_a_state_that_would_hide_a_method_is_refused(registered):
    registered(Command)
    body = b'{"__occo_type__": "test_message_types.Command", "state": {"perform": 1}}'
    with pytest.raises(comm.MessageDecodeError, match="'perform'"):
        codec.decode(body, codec.TYPED_JSON)


def test_a_class_that_refuses_its_state_gives_a_decode_error(registered):
    registered(Point, encode=lambda p: [p.x, p.y], decode=lambda s: Point(*s))
    body = b'{"__occo_type__": "test_message_types.Point", "state": [1, 2, 3]}'
    with pytest.raises(comm.MessageDecodeError, match='decode function raised TypeError'):
        codec.decode(body, codec.TYPED_JSON)


def test_registration_conflicts_and_reserved_names_are_refused(registered):
    registered(Command, 'occo.Command')

    class Other:
        pass
    with pytest.raises(ValueError, match='registered already'):
        comm.register_type(Other, 'occo.Command')
    with pytest.raises(ValueError, match='reserved'):
        comm.register_type(Other, 'dict')
    with pytest.raises(TypeError, match='both encode= and decode='):
        comm.register_type(Other, encode=repr)
    with pytest.raises(TypeError, match='needs a class'):
        comm.register_type(Command('x'))


def test_register_type_works_as_a_decorator_with_a_name():
    @comm.register_type(name='occo.test.Decorated')
    class Decorated:
        def __init__(self):
            self.x = 1
    try:
        body, content_type = codec.encode(Decorated())
        assert b'"occo.test.Decorated"' in body
        assert type(codec.decode(body, content_type)) is Decorated
    finally:
        comm.unregister_type(Decorated)


def test_results_may_hold_registered_objects(registered):
    registered(Command)
    assert reply_of([Command('done')]) == [Command('done')]
    assert reply_of(comm.Response(201, Command('made'))) == Command('made')


def test_a_result_the_caller_cannot_build_is_a_502(registered):
    registered(Command)
    reply = codec.encode_reply(Command('done'))
    comm.unregister_type(Command)
    with pytest.raises(comm.CriticalError, match='not registered here') as info:
        codec.result_from_reply(reply)
    assert info.value.http_code == 502


# -- legacy YAML ---------------------------------------------------------------

def test_legacy_yaml_object_of_a_registered_class_is_built(registered):
    registered(Command)
    body = (b'- !!python/object:test_message_types.Command\n'
            b'  instruction: create_node\n  node_id: !!python/unicode n1\n'
            b'  ports: !!python/tuple [22, 80]\n')
    [command] = codec.decode(body, None)
    assert vars(command) == {'instruction': 'create_node', 'node_id': 'n1',
                             'ports': (22, 80)}


def test_legacy_yaml_object_of_an_unregistered_class_is_refused():
    with pytest.raises(comm.MessageDecodeError, match='not registered'):
        codec.decode(b'!!python/object:test_message_types.Command {instruction: x}', None)


def test_legacy_yaml_apply_never_runs(tmp_path):
    marker = tmp_path / 'ran'
    bodies = [
        '!!python/object/apply:builtins.open ["{}", "w"]',
        '!!python/object/new:builtins.open ["{}", "w"]',
        '!!python/object/apply:os.system ["touch {}"]',
        '!!python/name:os.system',
        '!!python/module:os',
    ]
    for body in bodies:
        with pytest.raises(comm.MessageDecodeError, match='constructor'):
            codec.decode(body.format(marker).encode(), None)
    assert not os.path.exists(marker)


def test_registering_types_adds_nothing_to_pyyaml_loaders(registered):
    before = {loader: (dict(loader.yaml_constructors), dict(loader.yaml_multi_constructors))
              for loader in (yaml.SafeLoader, yaml.CSafeLoader, yaml.FullLoader)}
    registered(Command)
    codec.decode(b'!!python/object:test_message_types.Command {instruction: x}', None)
    after = {loader: (dict(loader.yaml_constructors), dict(loader.yaml_multi_constructors))
             for loader in before}
    assert after == before


# -- remote exceptions ---------------------------------------------------------

def test_a_builtin_remote_exception_is_its_type_and_an_application_error():
    error = raised_at_caller(KeyError('global.nonexistent'), 404)
    assert isinstance(error, KeyError) and isinstance(error, comm.ApplicationError)
    assert not isinstance(error, comm.CommunicationError)
    assert error.args == ('global.nonexistent',)
    assert str(error) == "'global.nonexistent'"
    assert (error.http_code, error.remote_type, error.remote_module) == (
        404, 'KeyError', 'builtins')
    assert 'in raised_at_caller' in error.remote_traceback


def test_a_registered_remote_exception_is_its_own_class(registered):
    registered(KeyNotFoundError)
    registered(ArgumentError)
    error = raised_at_caller(KeyNotFoundError('global.nonexistent'), 404)
    assert isinstance(error, KeyNotFoundError) and isinstance(error, comm.ApplicationError)
    assert error.http_code == 404
    error = raised_at_caller(ArgumentError('size', 'must be positive'))
    assert isinstance(error, ArgumentError) and error.name == 'size'
    assert str(error) == "('size', 'must be positive')"
    assert error.http_code == 500 and error.remote_traceback == 'Traceback: remote'


def test_an_unregistered_subclass_of_a_builtin_comes_back_as_the_builtin():
    error = raised_at_caller(ArgumentError('size', 'must be positive'), 400)
    assert isinstance(error, ValueError) and isinstance(error, comm.ApplicationError)
    assert not isinstance(error, ArgumentError)
    assert type(error).__name__ == 'ArgumentError'
    assert (error.remote_type, error.remote_module) == ('ArgumentError', __name__)


def test_an_exception_of_no_builtin_kind_is_an_application_error_naming_it():
    class Unsendable(Exception):
        pass

    class Odd(BaseException):
        pass
    error = raised_at_caller(Unsendable())
    assert type(error) is comm.ApplicationError
    assert str(error) == 'Unsendable'   # no message: no trailing ': '
    try:
        raise Odd('x')
    except Odd as e:
        reply = codec.error_reply(e)
    with pytest.raises(comm.ApplicationError) as info:
        codec.result_from_reply(reply)
    assert type(info.value) is comm.ApplicationError


@pytest.mark.parametrize('name', ['SystemExit', 'KeyboardInterrupt', 'StopIteration',
                                  'GeneratorExit'])
def test_exceptions_that_would_stop_the_caller_never_come_back_as_themselves(name):
    reply = ('{"code": 500, "error": {"type": "%s", "module": "builtins", "builtin": '
             '"%s", "args": [], "message": "", "traceback": null}}' % (name, name))
    with pytest.raises(comm.ApplicationError) as info:
        codec.result_from_reply(reply.encode())
    assert type(info.value) is comm.ApplicationError


def test_remote_args_a_builtin_refuses_give_a_plain_application_error():
    reply = (b'{"code": 500, "error": {"type": "UnicodeDecodeError", "module": '
             b'"builtins", "builtin": "UnicodeDecodeError", "args": ["x"], '
             b'"message": "m", "traceback": null}}')
    with pytest.raises(comm.ApplicationError) as info:
        codec.result_from_reply(reply)
    assert type(info.value) is comm.ApplicationError
    assert info.value.remote_type == 'UnicodeDecodeError'


def test_one_caller_class_per_remote_class():
    first = raised_at_caller(KeyError('a'))
    second = raised_at_caller(KeyError('b'))
    assert type(first) is type(second)


def test_a_plain_exception_response_with_text_keeps_the_response_meaning():
    with pytest.raises(comm.CriticalError) as info:
        reply_of(comm.ExceptionResponse(404, 'no such node'))
    assert (info.value.http_code, info.value.reason) == (404, 'no such node')


def test_message_types_registry_reports_what_is_registered(registered):
    registered(Command)
    assert message_types.registered_type('test_message_types.Command') is Command
    comm.unregister_type(Command)
    assert message_types.registered_type('test_message_types.Command') is None
