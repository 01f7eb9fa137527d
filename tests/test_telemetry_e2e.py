# SPDX-License-Identifier: Apache-2.0
"""One trace across producer, consumer and RPC reply, through the real roles
on both backends, recorded by the SDK's in-memory exporters.

The roles call :mod:`occo.util.communication.telemetry` at their publish,
RPC call, process and reply points. The spans are read after the consumer's thread has stopped
(``running_consumer`` joins it), so every span it started has ended.
"""

import os
import subprocess
import sys

import pika
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import occo.util.communication as comm
from conftest import JOIN_TIMEOUT, Collector, running_consumer
from occo.util.communication import telemetry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Recorded:
    """SDK providers whose spans and metric points the test reads."""

    def __init__(self):
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self):
        return list(self.exporter.get_finished_spans())

    def named(self, name):
        found = [span for span in self.spans() if span.name == name]
        assert found, (name, [span.name for span in self.spans()])
        return found

    def metric_total(self, name, **attributes):
        """The sum (counter) or count (histogram) of the points of ``name``
        whose attributes include ``attributes``."""
        total = 0
        data = self.reader.get_metrics_data()
        for resource in (data.resource_metrics if data else []):
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        if attributes.items() <= dict(point.attributes).items():
                            total += point.count if hasattr(point, 'count') else point.value
        return total


@pytest.fixture
def otel():
    """Telemetry on, for both sides, with fresh in-memory exporters."""
    recorded = Recorded()
    telemetry.enable(recorded.tracer_provider, recorded.meter_provider)
    yield recorded
    telemetry.disable()
    recorded.tracer_provider.shutdown()
    recorded.meter_provider.shutdown()


def system(backend):
    return 'rabbitmq' if backend == 'amqp' else 'memory'


def test_telemetry_message_producer_and_consumer_form_one_trace(config, backend, otel):
    cfg = config()
    queue = cfg['queue']
    seen = []

    def processor(message):
        seen.append((trace.get_current_span().get_span_context(),
                     dict(comm.current_message().headers)))
    tracer = otel.tracer_provider.get_tracer('app')
    collector = Collector(result=processor)
    with running_consumer(collector, **cfg):
        with tracer.start_as_current_span('checkout') as checkout:
            with comm.AsynchronProducer(**cfg) as producer:
                producer.push_message('order 42', headers={'tenant': 'acme'})
        collector.wait_for(1)
    send, = otel.named('send ' + queue)
    process, = otel.named('process ' + queue)
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert send.parent.span_id == checkout.get_span_context().span_id
    assert process.context.trace_id == checkout.get_span_context().trace_id
    assert process.parent.span_id == send.context.span_id
    assert send.attributes['messaging.system'] == system(backend)
    assert process.attributes['messaging.destination.name'] == queue
    (current, headers), = seen
    assert current.span_id == process.context.span_id   # the processor's span
    assert headers['tenant'] == 'acme' and 'traceparent' in headers
    assert otel.metric_total('messaging.client.sent.messages',
                             **{'messaging.destination.name': queue}) == 1
    assert otel.metric_total('messaging.client.consumed.messages',
                             **{'messaging.destination.name': queue}) == 1
    assert otel.metric_total('messaging.process.duration',
                             **{'messaging.destination.name': queue}) == 1


def test_telemetry_rpc_call_request_process_and_reply_form_one_trace(config, backend, otel):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    queue = cfg['queue']
    with running_consumer(lambda m: 'RE: ' + m, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            assert rpc.push_message('order 42?', headers={'tenant': 'acme'}) == 'RE: order 42?'
    call, = otel.named('call ' + queue)
    send, = otel.named('send ' + queue)
    process, = otel.named('process ' + queue)
    reply, = otel.named('send')
    assert call.kind is SpanKind.CLIENT and reply.kind is SpanKind.PRODUCER
    assert {span.context.trace_id for span in otel.spans()} == {call.context.trace_id}
    assert send.parent.span_id == call.context.span_id
    assert process.parent.span_id == send.context.span_id
    assert reply.parent.span_id == process.context.span_id
    assert reply.attributes['messaging.destination.temporary'] is True
    conversation = call.attributes['messaging.message.conversation_id']
    assert process.attributes['messaging.message.conversation_id'] == conversation
    assert otel.metric_total('messaging.client.operation.duration',
                             **{'messaging.operation.name': 'call'}) == 1


def test_telemetry_records_a_failed_rpc_processor(config, otel):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)

    def fail(message):
        raise ValueError('bad order')
    with running_consumer(fail, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            with pytest.raises(comm.ApplicationError):
                rpc.push_message('order 42?')
    call, = otel.named('call ' + cfg['queue'])
    process, = otel.named('process ' + cfg['queue'])
    # The caller gets an ApplicationError that is also a ValueError: a
    # class named as the remote one.
    assert call.attributes['error.type'] == 'ValueError'
    assert process.attributes['error.type'] == 'ValueError'
    assert otel.metric_total('occo.messaging.failed.messages',
                             **{'error.type': 'ValueError'}) == 1
    assert otel.metric_total('occo.messaging.rejected.messages') == 0  # answered


def test_telemetry_counts_a_rejected_message(config, otel):
    cfg = config()

    def fail(message):
        raise ValueError('bad order')
    collector = Collector(result=fail)
    with running_consumer(collector, **cfg):
        with comm.AsynchronProducer(**cfg) as producer:
            producer.push_message('order 42')
        collector.wait_for(1)
    assert otel.metric_total('occo.messaging.rejected.messages',
                             **{'error.type': 'ValueError'}) == 1


def test_telemetry_off_sends_no_trace_context(config, otel):
    telemetry.disable()
    cfg = config()
    seen = []
    collector = Collector(result=lambda m: seen.append(dict(comm.current_message().headers)))
    with running_consumer(collector, **cfg):
        with comm.AsynchronProducer(**cfg) as producer:
            producer.push_message('order 42', headers={'tenant': 'acme'})
        collector.wait_for(1)
    assert seen == [{'tenant': 'acme'}]
    assert otel.spans() == []


def test_telemetry_example_prints_one_trace(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'docs', 'examples', 'telemetry_example.py')],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:10] == [
        'result: RE: order 42?',
        'checkout',
        '  send orders (PRODUCER)',
        '    process orders (CONSUMER)',
        '      reserve stock',
        '  call orders (CLIENT)',
        '    send orders (PRODUCER)',
        '      process orders (CONSUMER)',
        '        reserve stock',
        '        send (PRODUCER)',
    ]
    assert any(line.startswith('messaging.client.sent.messages {message} ')
               for line in lines[10:])


@pytest.mark.broker
def test_telemetry_consumer_survives_hostile_trace_headers(otel):
    """What the wire can put where the trace context goes: invalid UTF-8,
    another type, an oversized value. Each message is processed in a trace
    of its own; none stops the consumer."""
    from conftest import amqp_config, raw_channel
    cfg = amqp_config()
    hostile = [{'traceparent': b'\xff\xfe'}, {'traceparent': 7, 'tracestate': [1]},
               {'traceparent': '00-' + 'f' * 10000}, {b'\xff': b'\xff'}]
    collector = Collector()
    with running_consumer(collector, **cfg):
        with raw_channel() as channel:
            for n, headers in enumerate(hostile):
                channel.basic_publish('', cfg['queue'], '"m{}"'.format(n).encode(),
                                      pika.BasicProperties(content_type='application/json',
                                                           headers=headers))
        assert collector.wait_for(len(hostile)) == ['m0', 'm1', 'm2', 'm3']
    processes = otel.named('process ' + cfg['queue'])
    assert len(processes) == len(hostile)
    assert len({span.context.trace_id for span in processes}) == len(hostile)
