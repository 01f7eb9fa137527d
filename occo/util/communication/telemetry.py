# SPDX-License-Identifier: Apache-2.0
"""OpenTelemetry traces and metrics of the three roles, off until enabled.

With the optional ``opentelemetry-api`` installed (``pip install
'occo-util-communication[otel]'``) and :func:`enable` called, each message
makes spans named and attributed as OpenTelemetry's `messaging semantic
conventions <https://opentelemetry.io/docs/specs/semconv/messaging/>`_
describe, and the W3C trace context (``traceparent``, ``tracestate``) travels
in the message headers, so that producer, consumer and RPC reply form one
trace::

    call orders              CLIENT    RPCProducer.push_message, until the result
      send orders            PRODUCER  the request is handed over
        process orders       CONSUMER  the processor runs (the application's
                                       own spans are its children)
          send               PRODUCER  the reply, to an anonymous queue

Counters and histograms go through the OpenTelemetry metrics API; the
application's SDK exports them (to Prometheus, OTLP, ...). The page
:doc:`/telemetry` lists every span, attribute and metric.

**Turning it on**: the application configures the OpenTelemetry SDK and
calls :func:`enable`, before or after. Installing the package alone turns
nothing on: an application with an SDK for other reasons pays for our spans
only when it asks for them.

**Cost when off**: only :func:`enable` imports ``opentelemetry``. Each call
site costs a function call, a test of a module global and an empty
``with`` block (0.3 to 0.5 µs, see :doc:`/telemetry`); the OpenTelemetry
API, not free even without an SDK, is never reached.

**Call sites** (for backend authors). Each is one or two lines; call them as
``telemetry.publishing(...)`` and so on, through the module::

    # a producer, around handing the message over:
    with telemetry.publishing(routing_key, headers, exchange=exchange,
                              message_id=message_id, body_size=len(body)) as headers:
        publish(..., headers=headers)        # headers now carry traceparent

    # an RPC producer, around the whole call (the request's publishing
    # above goes inside it):
    with telemetry.rpc_call(routing_key, exchange=exchange,
                            correlation_id=correlation_id):
        ...publish, then wait for the reply...

    # a consumer, around handling one message and settling it:
    with telemetry.processing(queue, properties.headers, ...) as processing:
        outcome = dispatch.handle(...)
        processing.settled(outcome.ack, error_type)
        reply_headers = processing.reply_headers(reply_to)   # for an RPC reply
        ...send the reply with reply_headers, acknowledge or reject...

Telemetry raises no error of its own (a broken trace header is ignored),
and never swallows an exception of the ``with`` body: the exception is
recorded as ``error.type`` and goes on.

Threads: :func:`enable` and :func:`disable` may be called from any thread;
a message already in a ``with`` block finishes with the settings it started
with. The object a ``with`` block yields belongs to the thread that entered
it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union

from ..exceptions import ConfigurationError

if TYPE_CHECKING:   # imported by enable() only, when the application asks
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider
    from opentelemetry.util.types import AttributeValue

__all__ = ['enable', 'disable', 'enabled', 'publishing', 'rpc_call',
           'processing', 'Processing', 'INSTRUMENTATION_NAME']

log = logging.getLogger(__name__)

#: The name of our tracer and meter (the *instrumentation scope*).
INSTRUMENTATION_NAME = 'occo.util.communication'

#: ``True`` between :func:`enable` and :func:`disable` (written under
#: ``_switch``). Read it through the module (``telemetry.enabled``): a name
#: imported from here keeps the value it had then.
enabled = False

# -- names of the semantic conventions --------------------------------------
# Attribute and metric names as the messaging conventions define them
# (status "development"; these follow semantic-conventions 1.3x, where the
# operation type "publish" became "send").
_SYSTEM = 'messaging.system'
_DESTINATION = 'messaging.destination.name'
_TEMPORARY = 'messaging.destination.temporary'
_ANONYMOUS = 'messaging.destination.anonymous'
_OPERATION_NAME = 'messaging.operation.name'
_OPERATION_TYPE = 'messaging.operation.type'
_MESSAGE_ID = 'messaging.message.id'
_CONVERSATION_ID = 'messaging.message.conversation_id'
_BODY_SIZE = 'messaging.message.body.size'
_ROUTING_KEY = 'messaging.rabbitmq.destination.routing_key'
_DELIVERY_TAG = 'messaging.rabbitmq.message.delivery_tag'
_SERVER_ADDRESS = 'server.address'
_SERVER_PORT = 'server.port'
_ERROR_TYPE = 'error.type'
#: The conventions' fallback ``error.type`` when the cause has no name.
_OTHER_ERROR = '_OTHER'

#: Explicit bucket boundaries (seconds) that the conventions advise for
#: the duration histograms.
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5,
                     0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: A header value longer than this is not handed to the propagator: W3C
#: baggage, the longest of the trace context headers, stops at 8192 bytes.
_MAX_HEADER = 8192

_H = TypeVar('_H', bound=Mapping[str, Any])

#: Serializes enable() and disable(); readers take _state without it (one
#: reference, replaced whole).
_switch = threading.Lock()
#: What enable() set up, ``None`` while telemetry is off (_switch).
_state: Optional[_State] = None


def enable(tracer_provider: Optional[TracerProvider] = None,
           meter_provider: Optional[MeterProvider] = None, *,
           body_size: bool = False) -> None:
    """Trace and measure every message from now on, in every role.

    Calling it again replaces the providers (and instruments) of the
    previous call.

    :param tracer_provider: where spans go; by default OpenTelemetry's
        global one (``opentelemetry.trace.set_tracer_provider``), also when
        that is set only later.
    :param meter_provider: where measurements go; by default the global one.
    :param body_size: also record ``messaging.message.body.size``, which the
        conventions make opt-in.
    :raises ConfigurationError: when ``opentelemetry-api`` is not installed.
    """
    global _state, enabled
    try:
        state = _State(tracer_provider, meter_provider, body_size)
    except ImportError as e:
        raise ConfigurationError(
            'telemetry needs the opentelemetry-api package: pip install '
            '"occo-util-communication[otel]" ({})'.format(e)) from e
    with _switch:
        _state, enabled = state, True


def disable() -> None:
    """Stop tracing and measuring; safe to call when telemetry is off."""
    global _state, enabled
    with _switch:
        _state, enabled = None, False


def publishing(routing_key: str, headers: Optional[_H] = None, *,
               exchange: str = '', message_id: object = None,
               conversation_id: object = None, body_size: Optional[int] = None,
               system: str = 'rabbitmq', server_address: Optional[str] = None,
               server_port: Optional[int] = None,
               ) -> AbstractContextManager[Union[_H, dict[str, Any], None]]:
    """Trace sending one message: a ``send`` span of kind ``PRODUCER``.

    Yields the headers to send. When telemetry is on, that is a new dict:
    ``headers`` (left unchanged) plus the trace context of the span, so the
    consumer continues the trace; when it is off, ``headers`` itself.
    Headers that already carry a trace context (``traceparent``) keep it:
    the span links to it instead.

    On leaving the block the span ends, ``messaging.client.sent.messages``
    counts the message and ``messaging.client.operation.duration`` records
    how long the block took, with ``error.type`` if it raised.

    :param routing_key: where the message goes (the queue, with the
        default exchange).
    :param headers: the headers the caller gave, or ``None``.
    :param exchange: the exchange, ``''`` for the default one.
    :param message_id: the message's id, if it has one.
    :param conversation_id: the correlation id of an RPC request.
    :param body_size: the encoded body's length in bytes.
    :param system: ``messaging.system``: ``rabbitmq``, or ``memory`` for
        the in-process backend.
    :param server_address: the broker's host, when known.
    :param server_port: the broker's port, when known.
    """
    state = _state
    if state is None:
        return _NO_HEADERS if headers is None else _Given(headers)
    return _Publishing(state, routing_key, headers, exchange, message_id,
                       conversation_id, body_size, system, server_address,
                       server_port)


def rpc_call(routing_key: str, *, exchange: str = '',
             correlation_id: object = None, system: str = 'rabbitmq',
             server_address: Optional[str] = None,
             server_port: Optional[int] = None) -> AbstractContextManager[None]:
    """Trace one RPC call, from sending the request to the result.

    A ``call`` span of kind ``CLIENT``, current for the block: the
    request's :func:`publishing` span inside it is its child. On leaving,
    ``messaging.client.operation.duration`` records the call's duration
    (``messaging.operation.name`` ``call``), with ``error.type`` if the
    block raised: ``RPCTimeoutError``, ``CriticalError``, ..., or for a
    processor that raised, the class the caller gets, named as the remote
    one (``ValueError``).

    :param routing_key: where the request goes.
    :param exchange: the exchange, ``''`` for the default one.
    :param correlation_id: the request's correlation id.
    :param system: as for :func:`publishing`.
    :param server_address: as for :func:`publishing`.
    :param server_port: as for :func:`publishing`.
    """
    state = _state
    if state is None:
        return _NOTHING
    return _Call(state, routing_key, exchange, correlation_id, system,
                 server_address, server_port)


def processing(queue: str, headers: object, *, exchange: str = '',
               routing_key: Optional[str] = None, message_id: object = None,
               conversation_id: object = None, body_size: Optional[int] = None,
               delivery_tag: Optional[int] = None, system: str = 'rabbitmq',
               server_address: Optional[str] = None,
               server_port: Optional[int] = None,
               ) -> AbstractContextManager[Processing]:
    """Trace handling one received message: a ``process`` span.

    The span, of kind ``CONSUMER``, continues the trace whose context the
    message's ``headers`` carry: its parent is the producer's ``send`` span,
    to which it also links (a message without a valid context starts a new
    trace, whatever its headers hold). It is the current span for the
    block, so the processor's own spans are its children.

    The block yields a :class:`Processing`: tell it the outcome with
    :meth:`~Processing.settled`, and take an RPC reply's headers from
    :meth:`~Processing.reply_headers`. On leaving, the span ends and
    ``messaging.process.duration`` records the block's duration, with
    ``error.type`` when processing failed. The message was counted in
    ``messaging.client.consumed.messages`` on entering.

    :param queue: the queue the message came from.
    :param headers: the message's headers as received (anything: what is not
        a mapping of text is ignored).
    :param exchange: the exchange it was published to, when known.
    :param routing_key: the routing key it was published with, when known.
    :param message_id: its id (or, lacking one, what the logs name it by).
    :param conversation_id: the correlation id of an RPC request.
    :param body_size: the body's length in bytes.
    :param delivery_tag: the broker's delivery tag.
    :param system: as for :func:`publishing`.
    :param server_address: as for :func:`publishing`.
    :param server_port: as for :func:`publishing`.
    """
    state = _state
    if state is None:
        return _OFF
    return _Processing(state, queue, headers, exchange, routing_key,
                       message_id, conversation_id, body_size, delivery_tag,
                       system, server_address, server_port)


class Processing:
    """What a consumer tells the ``process`` span of one message.

    Yielded by :func:`processing`. While telemetry is off it is a shared
    object whose methods do nothing.
    """

    __slots__ = ()

    def settled(self, ack: bool, error_type: Optional[str] = None) -> None:
        """Record the outcome of the message.

        Without a call, the message counts as processed and acknowledged.

        :param ack: ``True`` when the message is acknowledged (processed,
            or answered with an error), ``False`` when it is rejected
            without requeue (the broker dead-letters it where the queue has
            a dead-letter exchange): that counts it in
            ``occo.messaging.rejected.messages``.
        :param error_type: why processing failed, usually the exception's
            class ``__qualname__`` (``'ValueError'``); ``None`` when it
            succeeded. A failure counts in ``occo.messaging.failed.messages``;
            a rejected message without a reason fails as ``_OTHER``.
        """

    def reply_headers(self, reply_to: Optional[str] = None,
                      body_size: Optional[int] = None) -> Optional[dict[str, Any]]:
        """Headers for the RPC reply, carrying the trace on to the caller.

        Starts the reply's ``send`` span (a child of the ``process`` span),
        which ends with the block.

        :param reply_to: the request's ``reply_to`` address.
        :param body_size: the reply body's length in bytes.
        :returns: the headers to send the reply with; ``None`` when
            telemetry is off, or nothing was injected.
        """
        return None

    def __enter__(self) -> Processing:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        return None


# -- while off: shared objects that do nothing --------------------------------

class _Given:
    """Yields the headers it was given (publishing while off)."""

    __slots__ = ('headers',)

    def __init__(self, headers: Any) -> None:
        self.headers = headers

    def __enter__(self) -> Any:
        return self.headers

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        return None


class _Nothing:
    """An empty ``with`` block (rpc_call while off)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        return None


_NO_HEADERS = _Given(None)
_NOTHING = _Nothing()
_OFF = Processing()


# -- while on -------------------------------------------------------------------

class _State:
    """The tracer, the instruments and the OpenTelemetry modules in use.

    The only place that imports ``opentelemetry``; built by :func:`enable`,
    read-only afterwards, so threads share it freely.
    """

    def __init__(self, tracer_provider: Optional[TracerProvider],
                 meter_provider: Optional[MeterProvider], body_size: bool) -> None:
        from opentelemetry import context, metrics, propagate, trace
        from opentelemetry.trace import Link, SpanKind, Status, StatusCode
        from . import __version__
        self.context = context
        self.propagate = propagate
        self.trace = trace
        self.Link = Link
        self.SpanKind = SpanKind
        self.error_status = Status(StatusCode.ERROR)
        self.body_size = body_size
        self.tracer = trace.get_tracer(INSTRUMENTATION_NAME, __version__,
                                       tracer_provider=tracer_provider)
        meter = metrics.get_meter(INSTRUMENTATION_NAME, __version__,
                                  meter_provider=meter_provider)
        self.sent = meter.create_counter(
            'messaging.client.sent.messages', unit='{message}',
            description='Number of messages producer attempted to send to '
                        'the broker.')
        self.consumed = meter.create_counter(
            'messaging.client.consumed.messages', unit='{message}',
            description='Number of messages that were delivered to the '
                        'application.')
        self.failed = meter.create_counter(
            'occo.messaging.failed.messages', unit='{message}',
            description='Number of messages whose processing failed (the '
                        'processor raised, or the message could not be '
                        'decoded).')
        self.rejected = meter.create_counter(
            'occo.messaging.rejected.messages', unit='{message}',
            description='Number of messages rejected without requeue: '
                        'dead-lettered where the queue has a dead-letter '
                        'exchange, dropped otherwise.')

        def histogram(name: str, description: str) -> Any:
            try:   # the advice is in the API from 1.23 on
                return meter.create_histogram(
                    name, unit='s', description=description,
                    explicit_bucket_boundaries_advisory=_DURATION_BUCKETS)
            except TypeError:
                return meter.create_histogram(name, unit='s',
                                              description=description)

        self.operation_duration = histogram(
            'messaging.client.operation.duration',
            'Duration of messaging operation initiated by a producer or '
            'consumer client.')
        self.process_duration = histogram(
            'messaging.process.duration', 'Duration of processing operation.')

    def context_of(self, headers: object) -> Any:
        """The context that ``headers`` carry, or ``None`` when they carry
        no valid span context. Never raises: headers come off the wire."""
        try:
            carrier = _carrier(headers, self.propagate.get_global_textmap().fields)
            if not carrier:
                return None
            context = self.propagate.extract(carrier)
            if self.trace.get_current_span(context).get_span_context().is_valid:
                return context
        except Exception as e:   # a broken propagator must not stop the consumer
            log.debug('Ignored the trace context of a message: %s', e)
        return None


class _Operation:
    """One span being recorded, and the attributes of its measurements."""

    __slots__ = ('_state', '_metric', '_span', '_started')

    def __init__(self, state: _State, metric: dict[str, AttributeValue]) -> None:
        self._state = state
        self._metric = metric
        self._span: Optional[Span] = None
        self._started = 0.0

    def _begin(self, span: Span) -> None:
        self._span, self._started = span, time.perf_counter()

    def _end(self, error: Optional[str]) -> tuple[float, dict[str, AttributeValue]]:
        """End the span, marked with ``error`` if any; return its duration
        and the attributes to measure it with."""
        duration = time.perf_counter() - self._started
        span, metric = self._span, self._metric
        assert span is not None  # begun
        if error is not None:
            span.set_attribute(_ERROR_TYPE, error)
            span.set_status(self._state.error_status)
            metric = dict(metric)
            metric[_ERROR_TYPE] = error
        span.end()
        return duration, metric


class _Publishing(_Operation):
    """The ``send`` span of one message (publishing while on)."""

    __slots__ = ('_given', '_name', '_attributes')

    def __init__(self, state: _State, routing_key: str, headers: Optional[_H],
                 exchange: str, message_id: object, conversation_id: object,
                 body_size: Optional[int], system: str,
                 server_address: Optional[str], server_port: Optional[int]) -> None:
        destination = _producer_destination(exchange, routing_key)
        super().__init__(state, _metric_attributes(
            system, 'send', destination, server_address, server_port))
        self._given = headers
        self._name = 'send ' + destination
        self._attributes = _span_attributes(
            state, self._metric, 'send', routing_key=routing_key,
            message_id=message_id, conversation_id=conversation_id,
            body_size=body_size)

    def __enter__(self) -> Optional[dict[str, Any]]:
        state = self._state
        headers = dict(self._given) if self._given else {}
        # Headers that carry a trace context already hold the message's
        # creation context, which the conventions say to keep and link to.
        given = state.context_of(headers) if headers else None
        links = None
        if given is not None:
            links = [state.Link(state.trace.get_current_span(given).get_span_context())]
        span = state.tracer.start_span(self._name, kind=state.SpanKind.PRODUCER,
                                       attributes=self._attributes, links=links)
        if given is None:
            state.propagate.inject(headers, context=state.trace.set_span_in_context(span))
        self._begin(span)
        # Nothing injected (no SDK behind the API): send what was given.
        return headers if headers or self._given is not None else None

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        duration, metric = self._end(_error_type(exc_type))
        self._state.sent.add(1, metric)
        self._state.operation_duration.record(duration, metric)


class _Call(_Operation):
    """The ``call`` span of one RPC call (rpc_call while on)."""

    __slots__ = ('_name', '_attributes', '_token')

    def __init__(self, state: _State, routing_key: str, exchange: str,
                 correlation_id: object, system: str,
                 server_address: Optional[str], server_port: Optional[int]) -> None:
        destination = _producer_destination(exchange, routing_key)
        super().__init__(state, _metric_attributes(
            system, 'call', destination, server_address, server_port))
        self._name = 'call ' + destination
        self._attributes = _span_attributes(
            state, self._metric, None, routing_key=routing_key,
            conversation_id=correlation_id)
        self._token: Any = None

    def __enter__(self) -> None:
        state = self._state
        span = state.tracer.start_span(self._name, kind=state.SpanKind.CLIENT,
                                       attributes=self._attributes)
        self._token = state.context.attach(state.trace.set_span_in_context(span))
        self._begin(span)

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self._state.context.detach(self._token)
        duration, metric = self._end(_error_type(exc_type))
        self._state.operation_duration.record(duration, metric)


class _Reply(_Operation):
    """The ``send`` span of an RPC reply: started by reply_headers, ended
    with the ``process`` span."""

    __slots__ = ()

    def __init__(self, state: _State, process: Span, reply_to: Optional[str],
                 conversation_id: object, body_size: Optional[int],
                 system: str, server: tuple[Optional[str], Optional[int]]) -> None:
        super().__init__(state, _metric_attributes(system, 'send', None, *server))
        self._metric[_TEMPORARY] = True   # no destination name: unbounded
        attributes = _span_attributes(state, self._metric, 'send',
                                      conversation_id=conversation_id,
                                      body_size=body_size)
        attributes[_ANONYMOUS] = True
        _put(attributes, _DESTINATION, reply_to or None)
        # A temporary destination: the span name leaves it out.
        self._begin(state.tracer.start_span(
            'send', context=state.trace.set_span_in_context(process),
            kind=state.SpanKind.PRODUCER, attributes=attributes))

    def headers(self) -> Optional[dict[str, Any]]:
        state = self._state
        headers: dict[str, Any] = {}
        assert self._span is not None  # begun
        state.propagate.inject(headers, context=state.trace.set_span_in_context(self._span))
        return headers or None

    def finish(self, error: Optional[str]) -> None:
        duration, metric = self._end(error)
        self._state.sent.add(1, metric)
        self._state.operation_duration.record(duration, metric)


class _Processing(Processing, _Operation):
    """The ``process`` span of one message (processing while on)."""

    __slots__ = ('_headers', '_name', '_attributes', '_token', '_ack',
                 '_error', '_reply', '_system', '_conversation_id', '_server')

    def __init__(self, state: _State, queue: str, headers: object, exchange: str,
                 routing_key: Optional[str], message_id: object,
                 conversation_id: object, body_size: Optional[int],
                 delivery_tag: Optional[int], system: str,
                 server_address: Optional[str], server_port: Optional[int]) -> None:
        destination = _consumer_destination(exchange, routing_key, queue)
        _Operation.__init__(self, state, _metric_attributes(
            system, 'process', destination, server_address, server_port))
        self._headers = headers
        self._name = 'process ' + destination
        self._attributes = _span_attributes(
            state, self._metric, 'process', routing_key=routing_key,
            message_id=message_id, conversation_id=conversation_id,
            body_size=body_size)
        _put(self._attributes, _DELIVERY_TAG, delivery_tag)
        self._system = system
        self._conversation_id = conversation_id
        self._server = (server_address, server_port)
        self._token: Any = None
        self._ack = True
        self._error: Optional[str] = None
        self._reply: Optional[_Reply] = None

    def __enter__(self) -> Processing:
        state = self._state
        trace = state.trace
        # The message's creation context is the parent (the conventions
        # allow it for single messages) and a link; the context this thread
        # was in, if any, becomes a second link.
        parent = state.context_of(self._headers)
        links = []
        if parent is not None:
            links.append(state.Link(trace.get_current_span(parent).get_span_context()))
            ambient = trace.get_current_span().get_span_context()
            if ambient.is_valid:
                links.append(state.Link(ambient))
        span = state.tracer.start_span(self._name, context=parent,
                                       kind=state.SpanKind.CONSUMER,
                                       attributes=self._attributes, links=links)
        self._token = state.context.attach(trace.set_span_in_context(span, parent))
        state.consumed.add(1, self._metric)
        self._begin(span)
        return self

    def settled(self, ack: bool, error_type: Optional[str] = None) -> None:
        self._ack = bool(ack)
        self._error = error_type or (None if ack else _OTHER_ERROR)

    def reply_headers(self, reply_to: Optional[str] = None,
                      body_size: Optional[int] = None) -> Optional[dict[str, Any]]:
        assert self._span is not None  # entered
        if self._reply is not None:   # a second reply replaces the first
            self._reply.finish(None)
        self._reply = _Reply(self._state, self._span, reply_to,
                             self._conversation_id, body_size, self._system,
                             self._server)
        return self._reply.headers()

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        state = self._state
        state.context.detach(self._token)
        raised = _error_type(exc_type)
        if self._reply is not None:
            self._reply.finish(raised)
        error = raised or self._error
        duration, metric = self._end(error)
        if error is not None:
            state.failed.add(1, metric)
            if not self._ack:
                state.rejected.add(1, metric)
        state.process_duration.record(duration, metric)


# -- helpers ----------------------------------------------------------------------

def _producer_destination(exchange: str, routing_key: str) -> str:
    """``messaging.destination.name`` of a sent message, as the RabbitMQ
    conventions build it: ``exchange:routing_key``, either alone when the
    other is empty, or ``amq.default``."""
    if exchange and routing_key:
        return '{}:{}'.format(exchange, routing_key)
    return exchange or routing_key or 'amq.default'


def _consumer_destination(exchange: str, routing_key: Optional[str],
                          queue: str) -> str:
    """``messaging.destination.name`` of a received message:
    ``exchange:routing_key:queue`` without the empty parts, and the queue
    only once when the routing key names it."""
    parts = [exchange, routing_key if routing_key != queue else '', queue]
    return ':'.join(part for part in parts if part) or 'amq.default'


def _metric_attributes(system: str, operation: str, destination: Optional[str],
                       server_address: Optional[str],
                       server_port: Optional[int]) -> dict[str, AttributeValue]:
    """The attributes that spans and measurements share: low cardinality."""
    attributes: dict[str, AttributeValue] = {_SYSTEM: system,
                                             _OPERATION_NAME: operation}
    _put(attributes, _DESTINATION, destination)
    _put(attributes, _SERVER_ADDRESS, server_address)
    _put(attributes, _SERVER_PORT, server_port)
    return attributes


def _span_attributes(state: _State, metric: dict[str, AttributeValue],
                     operation_type: Optional[str], routing_key: Optional[str] = None,
                     message_id: object = None, conversation_id: object = None,
                     body_size: Optional[int] = None) -> dict[str, AttributeValue]:
    """A span's attributes: those of its measurements, and the message's."""
    attributes = dict(metric)
    _put(attributes, _OPERATION_TYPE, operation_type)
    _put(attributes, _ROUTING_KEY, routing_key or None)
    _put(attributes, _MESSAGE_ID, _text(message_id))
    _put(attributes, _CONVERSATION_ID, _text(conversation_id))
    if state.body_size:
        _put(attributes, _BODY_SIZE, body_size)
    return attributes


def _put(attributes: dict[str, AttributeValue], key: str, value: Any) -> None:
    if value is not None:
        attributes[key] = value


def _text(value: object) -> Optional[str]:
    """An id as an attribute value: text, ``None`` when there is none."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode('utf-8', 'backslashreplace')
    return str(value)


def _error_type(exc_type: Optional[type[BaseException]]) -> Optional[str]:
    """``error.type`` for an exception: its class's ``__qualname__``."""
    return None if exc_type is None else exc_type.__qualname__


def _carrier(headers: object, fields: Iterable[str]) -> dict[str, str]:
    """The trace context headers among ``headers``, as text.

    Only the propagator's own fields are read (a message may carry many
    headers); a value that is not text, not UTF-8, or longer than
    :data:`_MAX_HEADER` is left out.
    """
    if not isinstance(headers, Mapping):
        return {}
    carrier = {}
    for field in fields:
        value = headers.get(field)
        if isinstance(value, bytes):
            try:
                value = value.decode('utf-8')
            except UnicodeDecodeError:
                continue
        if isinstance(value, str) and len(value) <= _MAX_HEADER:
            carrier[field] = value
    return carrier
