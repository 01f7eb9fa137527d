# SPDX-License-Identifier: Apache-2.0
"""The telemetry module alone: spans, context propagation and metrics of a
producer -> consumer -> reply flow carried through a headers dict, no broker.

Each test gets its own SDK providers with in-memory exporters, passed to
:func:`telemetry.enable` explicitly: OpenTelemetry's global providers can be
set only once per process, so the one test of the global path runs in a
process of its own.
"""

import inspect
import os
import subprocess
import sys
import textwrap
import threading

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import occo.util.communication as comm
from occo.util.communication import telemetry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Recorded:
    """What the SDK received: finished spans and metric points."""

    def __init__(self):
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self):
        return {span.name: span for span in self.spans.get_finished_spans()}

    def metrics(self):
        """``{name: (unit, [(attributes, value or histogram count), ...])}``."""
        data = self.reader.get_metrics_data()
        found = {}
        for resource in (data.resource_metrics if data else []):
            for scope in resource.scope_metrics:
                assert scope.scope.name == telemetry.INSTRUMENTATION_NAME
                for metric in scope.metrics:
                    points = [(dict(p.attributes),
                               p.count if hasattr(p, 'count') else p.value)
                              for p in metric.data.data_points]
                    found[metric.name] = (metric.unit, points)
        return found

    def shutdown(self):
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def recorded():
    """SDK providers with in-memory exporters; telemetry off at the start."""
    telemetry.disable()
    recorded = Recorded()
    yield recorded
    telemetry.disable()
    recorded.shutdown()


@pytest.fixture
def otel(recorded):
    """Telemetry on, sending to :func:`recorded`."""
    telemetry.enable(recorded.tracer_provider, recorded.meter_provider,
                     body_size=True)
    return recorded


def consume(headers, queue='orders', reply_to=None, ack=True, error_type=None,
            **attributes):
    """Handle one message as a consumer does, in a thread of its own (as
    the consumer's thread has no ambient span); return the reply headers."""
    result = {}

    def run():
        with telemetry.processing(queue, headers, **attributes) as processing:
            processing.settled(ack, error_type)
            if reply_to is not None:
                result['reply'] = processing.reply_headers(reply_to, body_size=7)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return result.get('reply')


def trace_id_in(headers):
    """The trace id that a W3C ``traceparent`` header carries."""
    version, trace_id, span_id, flags = headers['traceparent'].split('-')
    return int(trace_id, 16)


def span_id_in(headers):
    return int(headers['traceparent'].split('-')[2], 16)


# -- off ------------------------------------------------------------------------

def test_telemetry_is_off_until_enabled(recorded):
    assert telemetry.enabled is False
    given = {'tenant': 'acme'}
    with telemetry.publishing('orders', given, message_id='m1') as headers:
        assert headers is given
    with telemetry.publishing('orders') as headers:
        assert headers is None
    with telemetry.rpc_call('orders', correlation_id='c1'):
        pass
    with telemetry.processing('orders', given) as processing:
        processing.settled(False, 'ValueError')
        assert processing.reply_headers('amq.gen-x') is None
    assert given == {'tenant': 'acme'}
    assert recorded.spans.get_finished_spans() == ()
    assert recorded.metrics() == {}


def test_telemetry_disable_stops_recording(otel):
    telemetry.disable()
    telemetry.disable()   # twice is harmless
    assert telemetry.enabled is False
    with telemetry.publishing('orders') as headers:
        assert headers is None
    assert otel.spans.get_finished_spans() == ()


def test_telemetry_off_never_calls_opentelemetry(recorded, monkeypatch):
    import opentelemetry.propagate
    import opentelemetry.trace

    def called(*args, **kwargs):
        pytest.fail('OpenTelemetry was called while telemetry is off')
    monkeypatch.setattr(opentelemetry.propagate, 'inject', called)
    monkeypatch.setattr(opentelemetry.propagate, 'extract', called)
    monkeypatch.setattr(opentelemetry.trace, 'get_current_span', called)
    with telemetry.publishing('orders', {'a': 1}):
        pass
    consume({'traceparent': '00-' + '1' * 32 + '-' + '2' * 16 + '-01'},
            reply_to='amq.gen-x')


def test_telemetry_module_import_does_not_import_opentelemetry():
    code = textwrap.dedent("""
        import sys
        import occo.util.communication.telemetry
        import occo.util.communication
        assert not any(name.split('.')[0] == 'opentelemetry' for name in sys.modules), \\
            sorted(name for name in sys.modules if name.startswith('opentelemetry'))
    """)
    subprocess.run([sys.executable, '-c', code], check=True, cwd=ROOT,
                   timeout=60)


def test_telemetry_enable_without_opentelemetry_raises_configuration_error(
        recorded, monkeypatch):
    monkeypatch.setitem(sys.modules, 'opentelemetry', None)  # not installed
    with pytest.raises(comm.ConfigurationError, match=r'\[otel\]'):
        telemetry.enable()
    assert telemetry.enabled is False
    with telemetry.publishing('orders') as headers:
        assert headers is None


# -- spans ------------------------------------------------------------------------

def test_telemetry_publishing_makes_a_producer_span_and_injects_its_context(otel):
    given = {'tenant': 'acme'}
    with telemetry.publishing('orders', given, message_id='m1', body_size=12,
                              server_address='rabbit', server_port=5672) as headers:
        pass
    span = otel.finished()['send orders']
    assert span.kind is SpanKind.PRODUCER
    assert dict(span.attributes) == {
        'messaging.system': 'rabbitmq',
        'messaging.operation.name': 'send',
        'messaging.operation.type': 'send',
        'messaging.destination.name': 'orders',
        'messaging.rabbitmq.destination.routing_key': 'orders',
        'messaging.message.id': 'm1',
        'messaging.message.body.size': 12,
        'server.address': 'rabbit',
        'server.port': 5672,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert headers['tenant'] == 'acme'
    assert trace_id_in(headers) == span.context.trace_id
    assert span_id_in(headers) == span.context.span_id
    assert given == {'tenant': 'acme'}   # the caller's dict is not changed


@pytest.mark.parametrize('exchange, routing_key, name', [
    ('', 'orders', 'send orders'),
    ('shop', 'orders', 'send shop:orders'),
    ('shop', '', 'send shop'),
    ('', '', 'send amq.default'),
])
def test_telemetry_publishing_names_the_destination_as_rabbitmq_conventions_do(
        otel, exchange, routing_key, name):
    with telemetry.publishing(routing_key, exchange=exchange):
        pass
    span, = otel.spans.get_finished_spans()
    assert span.name == name
    assert span.attributes['messaging.destination.name'] == name[len('send '):]


def test_telemetry_publishing_is_a_child_of_the_applications_span(otel):
    tracer = otel.tracer_provider.get_tracer('app')
    with tracer.start_as_current_span('checkout') as checkout:
        with telemetry.publishing('orders') as headers:
            pass
    send = otel.finished()['send orders']
    assert send.parent.span_id == checkout.get_span_context().span_id
    assert trace_id_in(headers) == checkout.get_span_context().trace_id


def test_telemetry_publishing_keeps_a_trace_context_the_caller_gave(otel):
    given = {'traceparent': '00-' + 'a' * 32 + '-' + 'b' * 16 + '-01'}
    with telemetry.publishing('orders', given) as headers:
        pass
    assert headers == given
    span, = otel.spans.get_finished_spans()
    link, = span.links
    assert (link.context.trace_id, link.context.span_id) == (int('a' * 32, 16),
                                                            int('b' * 16, 16))


def test_telemetry_publishing_records_the_error_and_lets_it_through(otel):
    with pytest.raises(comm.CriticalError):
        with telemetry.publishing('orders'):
            raise comm.CriticalError(404, 'no route')
    span, = otel.spans.get_finished_spans()
    assert span.attributes['error.type'] == 'CriticalError'
    assert span.status.status_code is StatusCode.ERROR
    unit, points = otel.metrics()['messaging.client.sent.messages']
    assert [(a['error.type'], n) for a, n in points] == [('CriticalError', 1)]


def test_telemetry_processing_continues_the_producers_trace(otel):
    with telemetry.publishing('orders', message_id='m1') as headers:
        pass
    consume(headers, message_id='m1', body_size=5, delivery_tag=3,
            routing_key='orders')
    spans = otel.finished()
    send, process = spans['send orders'], spans['process orders']
    assert process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == send.context.trace_id
    assert process.parent.span_id == send.context.span_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert dict(process.attributes) == {
        'messaging.system': 'rabbitmq',
        'messaging.operation.name': 'process',
        'messaging.operation.type': 'process',
        'messaging.destination.name': 'orders',
        'messaging.rabbitmq.destination.routing_key': 'orders',
        'messaging.message.id': 'm1',
        'messaging.message.body.size': 5,
        'messaging.rabbitmq.message.delivery_tag': 3,
    }


def test_telemetry_processing_links_to_the_span_its_thread_was_in(otel):
    with telemetry.publishing('orders') as headers:
        pass
    tracer = otel.tracer_provider.get_tracer('app')
    with tracer.start_as_current_span('poll loop') as ambient:
        with telemetry.processing('orders', headers):
            pass
    spans = otel.finished()
    process, send = spans['process orders'], spans['send orders']
    assert process.parent.span_id == send.context.span_id
    assert [link.context.span_id for link in process.links] == [
        send.context.span_id, ambient.get_span_context().span_id]


@pytest.mark.parametrize('exchange, routing_key, queue, name', [
    ('', None, 'orders', 'process orders'),
    ('', 'orders', 'orders', 'process orders'),
    ('shop', 'orders', 'orders', 'process shop:orders'),
    ('shop', 'new', 'orders', 'process shop:new:orders'),
    ('', 'new', 'orders', 'process new:orders'),
])
def test_telemetry_processing_names_the_destination_as_rabbitmq_conventions_do(
        otel, exchange, routing_key, queue, name):
    consume(None, queue=queue, exchange=exchange, routing_key=routing_key)
    span, = otel.spans.get_finished_spans()
    assert span.name == name


def test_telemetry_processor_spans_are_children_of_the_process_span(otel):
    tracer = otel.tracer_provider.get_tracer('app')
    with telemetry.processing('orders', None) as processing:
        with tracer.start_as_current_span('reserve stock'):
            pass
        processing.settled(True)
    assert not trace.get_current_span().get_span_context().is_valid  # detached
    spans = otel.finished()
    assert (spans['reserve stock'].parent.span_id
            == spans['process orders'].context.span_id)


def test_telemetry_rpc_call_request_process_and_reply_form_one_trace(otel):
    with telemetry.rpc_call('orders', correlation_id='c1'):
        with telemetry.publishing('orders', conversation_id='c1') as request:
            pass
        reply = consume(request, reply_to='amq.gen-x', conversation_id='c1')
    spans = otel.finished()
    call, send, process, reply_send = (spans['call orders'], spans['send orders'],
                                       spans['process orders'], spans['send'])
    assert call.kind is SpanKind.CLIENT
    assert reply_send.kind is SpanKind.PRODUCER
    assert {s.context.trace_id for s in spans.values()} == {call.context.trace_id}
    assert trace_id_in(reply) == call.context.trace_id
    assert call.parent is None
    assert send.parent.span_id == call.context.span_id
    assert process.parent.span_id == send.context.span_id
    assert reply_send.parent.span_id == process.context.span_id
    assert span_id_in(reply) == reply_send.context.span_id
    assert call.attributes['messaging.operation.name'] == 'call'
    assert call.attributes['messaging.message.conversation_id'] == 'c1'
    assert dict(reply_send.attributes) == {
        'messaging.system': 'rabbitmq',
        'messaging.operation.name': 'send',
        'messaging.operation.type': 'send',
        'messaging.destination.name': 'amq.gen-x',
        'messaging.destination.temporary': True,
        'messaging.destination.anonymous': True,
        'messaging.message.conversation_id': 'c1',
        'messaging.message.body.size': 7,
    }


def test_telemetry_rpc_call_records_why_it_failed(otel):
    with pytest.raises(comm.RPCTimeoutError):
        with telemetry.rpc_call('orders'):
            raise comm.RPCTimeoutError(reason='no reply')
    span, = otel.spans.get_finished_spans()
    assert span.attributes['error.type'] == 'RPCTimeoutError'
    assert span.status.status_code is StatusCode.ERROR


@pytest.mark.parametrize('headers', [
    None,
    'not a mapping',
    {'traceparent': b'\xff\xfe'},
    {'traceparent': 'garbage', 'tracestate': 5},
    {'traceparent': '00-' + '0' * 32 + '-' + '0' * 16 + '-01'},   # invalid ids
    {'traceparent': ['00-' + 'a' * 32 + '-' + 'b' * 16 + '-01']},
    {'traceparent': '00-' + 'a' * 32 + '-' + 'b' * 16 + '-01' + ' ' * 9000},
])
def test_telemetry_processing_of_a_message_without_valid_context_starts_a_trace(
        otel, headers):
    consume(headers)
    span, = otel.spans.get_finished_spans()
    assert span.parent is None and span.links == ()


def test_telemetry_processing_reads_a_traceparent_sent_as_bytes(otel):
    consume({'traceparent': ('00-' + 'a' * 32 + '-' + 'b' * 16 + '-01').encode()})
    span, = otel.spans.get_finished_spans()
    assert span.context.trace_id == int('a' * 32, 16)


def test_telemetry_uses_the_memory_system_name_it_is_given(otel):
    with telemetry.publishing('orders', system='memory') as headers:
        pass
    consume(headers, system='memory')
    assert {s.attributes['messaging.system']
            for s in otel.spans.get_finished_spans()} == {'memory'}


def test_telemetry_body_size_is_opt_in(recorded):
    telemetry.enable(recorded.tracer_provider, recorded.meter_provider)
    with telemetry.publishing('orders', body_size=12):
        pass
    span, = recorded.spans.get_finished_spans()
    assert 'messaging.message.body.size' not in span.attributes


# -- metrics ---------------------------------------------------------------------

def test_telemetry_counts_sent_and_consumed_messages_and_times_them(otel):
    with telemetry.rpc_call('orders'):
        with telemetry.publishing('orders') as request:
            pass
        consume(request, reply_to='amq.gen-x')
    metrics = otel.metrics()
    orders = {'messaging.system': 'rabbitmq', 'messaging.destination.name': 'orders'}
    assert metrics['messaging.client.sent.messages'] == ('{message}', [
        (dict(orders, **{'messaging.operation.name': 'send'}), 1),
        ({'messaging.system': 'rabbitmq', 'messaging.operation.name': 'send',
          'messaging.destination.temporary': True}, 1),
    ])
    assert metrics['messaging.client.consumed.messages'] == ('{message}', [
        (dict(orders, **{'messaging.operation.name': 'process'}), 1)])
    assert metrics['messaging.process.duration'] == ('s', [
        (dict(orders, **{'messaging.operation.name': 'process'}), 1)])
    unit, points = metrics['messaging.client.operation.duration']
    assert unit == 's'
    assert sorted((a['messaging.operation.name'], n) for a, n in points) == [
        ('call', 1), ('send', 1), ('send', 1)]
    assert 'occo.messaging.failed.messages' not in metrics
    assert 'occo.messaging.rejected.messages' not in metrics


@pytest.mark.skipif(
    'explicit_bucket_boundaries_advisory' not in inspect.signature(
        metrics.Meter.create_histogram).parameters,
    reason='opentelemetry-api < 1.23 takes no bucket advice')
def test_telemetry_duration_histograms_use_the_advised_buckets(otel):
    consume(None)
    data = otel.reader.get_metrics_data()
    histogram, = [m for r in data.resource_metrics for s in r.scope_metrics
                  for m in s.metrics if m.name == 'messaging.process.duration']
    point, = histogram.data.data_points
    assert list(point.explicit_bounds) == [0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
                                           0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]


@pytest.mark.parametrize('ack, error_type, failed, rejected, error', [
    (True, None, 0, 0, None),                    # processed
    (True, 'ValueError', 1, 0, 'ValueError'),    # answered with an error
    (False, 'ValueError', 1, 1, 'ValueError'),   # rejected: dead-lettered
    (False, None, 1, 1, '_OTHER'),               # rejected, no reason given
])
def test_telemetry_counts_failed_and_rejected_messages(
        otel, ack, error_type, failed, rejected, error):
    consume(None, ack=ack, error_type=error_type)
    span, = otel.spans.get_finished_spans()
    assert span.attributes.get('error.type') == error
    assert (span.status.status_code is StatusCode.ERROR) == (error is not None)
    metrics = otel.metrics()

    def count(name):
        return sum(n for a, n in metrics.get(name, ('', []))[1])
    assert count('occo.messaging.failed.messages') == failed
    assert count('occo.messaging.rejected.messages') == rejected
    duration, = metrics['messaging.process.duration'][1]
    assert duration[0].get('error.type') == error
    if failed:
        assert metrics['occo.messaging.failed.messages'][0] == '{message}'


def test_telemetry_processing_records_an_exception_of_its_block(otel):
    with pytest.raises(KeyboardInterrupt):
        with telemetry.processing('orders', None) as processing:
            processing.reply_headers('amq.gen-x')
            raise KeyboardInterrupt
    spans = otel.finished()
    assert spans['process orders'].attributes['error.type'] == 'KeyboardInterrupt'
    assert spans['send'].attributes['error.type'] == 'KeyboardInterrupt'
    assert not trace.get_current_span().get_span_context().is_valid  # detached


# -- the global providers ----------------------------------------------------------

def test_telemetry_enable_uses_the_global_providers_set_later():
    """``enable()`` before the SDK is configured: spans go to the providers
    set afterwards. In a process of its own, as the global providers can be
    set only once."""
    code = textwrap.dedent("""
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter)
        from occo.util.communication import telemetry

        telemetry.enable()
        exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        with telemetry.publishing('orders') as headers:
            pass
        assert [s.name for s in exporter.get_finished_spans()] == ['send orders']
        assert 'traceparent' in headers
        names = [m.name for r in reader.get_metrics_data().resource_metrics
                 for s in r.scope_metrics for m in s.metrics]
        assert 'messaging.client.sent.messages' in names, names
    """)
    subprocess.run([sys.executable, '-c', code], check=True, cwd=ROOT,
                   timeout=60)


def test_telemetry_enabled_without_an_sdk_sends_no_headers(recorded):
    """The API alone records nothing and injects nothing."""
    telemetry.enable(trace.NoOpTracerProvider())
    with telemetry.publishing('orders') as headers:
        assert headers is None
    with telemetry.publishing('orders', {'a': 1}) as headers:
        assert headers == {'a': 1}
