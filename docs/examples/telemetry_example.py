# SPDX-License-Identifier: Apache-2.0
"""One trace across producer, consumer and RPC reply, on the memory backend.

Needs ``pip install 'occo-util-communication[otel]' opentelemetry-sdk``. The
spans and measurements stay in memory and are printed at the end; an
application exports them instead (OTLP, Prometheus: see docs/telemetry.rst).
"""

import threading

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import occo.util.communication as comm
from occo.util.communication import telemetry

# The application configures the OpenTelemetry SDK once, as it likes...
spans = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(tracer_provider)
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
# ... and turns on the library's telemetry.
telemetry.enable()

tracer = trace.get_tracer('shop')


def process(message):
    with tracer.start_as_current_span('reserve stock'):  # a child of "process"
        return 'RE: ' + message


config = dict(protocol='memory', queue='orders', rpc_timeout=5)
cancel_event = threading.Event()
consumer = comm.EventDrivenConsumer(process, cancel_event=cancel_event, **config)
with consumer:
    thread = threading.Thread(target=consumer)
    thread.start()
    with tracer.start_as_current_span('checkout'):
        with comm.AsynchronProducer(**config) as producer:
            producer.push_message('order 42', headers={'tenant': 'acme'})
        with comm.RPCProducer(**config) as rpc:
            print('result:', rpc.push_message('order 42?'))
    cancel_event.set()
    thread.join(timeout=10)   # its spans have ended when it has stopped


def show(span, depth=0):
    kind = span.kind.name
    print('  ' * depth + span.name + ('' if kind == 'INTERNAL' else ' ({})'.format(kind)))
    children = [s for s in finished if s.parent and s.parent.span_id == span.context.span_id]
    for child in sorted(children, key=lambda s: s.start_time):
        show(child, depth + 1)


finished = spans.get_finished_spans()
for root in [s for s in finished if s.parent is None]:
    show(root)
for resource in reader.get_metrics_data().resource_metrics:
    for scope in resource.scope_metrics:
        for metric in scope.metrics:
            for point in metric.data.data_points:
                value = point.count if hasattr(point, 'count') else point.value
                print(metric.name, metric.unit, dict(point.attributes), value)
