# SPDX-License-Identifier: Apache-2.0
"""Headers and ``current_message()``, the same on both backends."""

import datetime
import decimal
import threading

import pytest

import occo.util.communication as comm
from conftest import JOIN_TIMEOUT, Collector, raw_channel, running_consumer

HEADERS = {
    'none': None, 'yes': True, 'small': 7, 'large': 2 ** 40, 'negative': -2 ** 63,
    'text': 'ünïcödé', 'raw': b'\x00\xff', 'price': decimal.Decimal('9.95'),
    'tiny': decimal.Decimal('-0.000000001'),
    'list': [1, 'two', [3]], 'table': {'nested': {'deep': 'value'}},
    'when': datetime.datetime(2026, 11, 30, 12, 30, 45, tzinfo=datetime.timezone.utc),
}


class Seen(Collector):
    """Records ``current_message()`` of every message it processes."""

    def __call__(self, message, *args, **kwargs):
        info = comm.current_message()
        return super().__call__((message, info), *args, **kwargs)


def test_headers_reach_the_processor_of_a_one_way_message(config):
    cfg = config()
    seen = Seen()
    with running_consumer(seen, **cfg):
        with comm.AsynchronProducer(**cfg) as producer:
            producer.push_message('m', headers=HEADERS)
            producer.push_message('plain')
        (_, info), (_, plain) = seen.wait_for(2)
    assert dict(info.headers) == HEADERS
    assert info.routing_key == cfg['queue']
    assert info.redelivered is False
    assert info.message_id is not None and info.message_id != plain.message_id
    assert info.correlation_id is None
    assert dict(plain.headers) == {}


def test_headers_reach_the_processor_of_an_rpc_request(config):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)

    def answer(message):
        info = comm.current_message()
        return {'tenant': info.headers['tenant'], 'has_id': info.correlation_id is not None,
                'routing_key': info.routing_key}
    with running_consumer(answer, **cfg):
        with comm.RPCProducer(**cfg) as rpc:
            result = rpc.push_message('x', headers={'tenant': 't1'})
    assert result == {'tenant': 't1', 'has_id': True, 'routing_key': cfg['queue']}


def test_tuples_arrive_as_lists_and_datetimes_as_aware_utc_to_the_second(config):
    cfg = config()
    seen = Seen()
    aware = datetime.datetime(2026, 11, 30, 13, 30, 45, 999,
                              tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    with running_consumer(seen, **cfg):
        with comm.AsynchronProducer(**cfg) as producer:
            producer.push_message('m', headers={
                'pair': (1, 2), 'when': aware,
                'naive': datetime.datetime(2026, 11, 30, 12, 30, 45, 999)})
        [(_, info)] = seen.wait_for(1)
    utc = datetime.datetime(2026, 11, 30, 12, 30, 45, tzinfo=datetime.timezone.utc)
    assert dict(info.headers) == {'pair': [1, 2], 'when': utc, 'naive': utc}


def test_headers_changed_after_push_message_are_not_sent_changed(config):
    cfg = config()
    seen = Seen()
    headers = {'n': 1, 'list': [1]}
    with running_consumer(seen, **cfg):
        with comm.AsynchronProducer(**cfg) as producer:
            producer.push_message('m', headers=headers)
            headers['n'] = 2
            headers['list'].append(2)
        [(_, info)] = seen.wait_for(1)
    assert dict(info.headers) == {'n': 1, 'list': [1]}


def test_the_processor_cannot_change_the_headers(config):
    cfg = config()
    errors = Collector()

    def process(message):
        try:
            comm.current_message().headers['n'] = 2
        except TypeError as e:
            errors(type(e).__name__)
    with running_consumer(process, **cfg):
        with comm.AsynchronProducer(**cfg) as producer:
            producer.push_message('m', headers={'n': 1})
        assert errors.wait_for(1) == ['TypeError']


@pytest.mark.parametrize('headers, error, match', [
    ({'obj': object()}, TypeError, r"headers\['obj'\]: a header value must be"),
    ({1: 'x'}, TypeError, 'header key must be a str'),
    ({'big': 2 ** 64}, ValueError, 'does not fit in 64 bits'),
    ({'ratio': 2.5}, TypeError, r'not float \(send a Decimal or a str\)'),
    ({'price': decimal.Decimal('1e20')}, ValueError, '32-bit integer'),
    ({'price': decimal.Decimal('NaN')}, ValueError, '32-bit integer'),
    ({'when': datetime.datetime(1969, 12, 31)}, ValueError, 'before 1970'),
    ({'k' * 256: 1}, ValueError, 'longer than 255 bytes'),
    ({'deep': {'x': [{'y': {1, 2}}]}}, TypeError, r"\['deep'\]\['x'\]\[0\]\['y'\]"),
    ({'text': '\udcff'}, ValueError, 'not UTF-8 text'),
    (['not', 'a', 'mapping'], TypeError, 'headers must be a mapping'),
])
def test_headers_amqp_cannot_carry_are_refused_before_anything_is_sent(
        config, headers, error, match):
    cfg = config(rpc_timeout=JOIN_TIMEOUT)
    with comm.AsynchronProducer(**cfg) as producer:
        with pytest.raises(error, match=match):
            producer.push_message('m', headers=headers)
    with comm.RPCProducer(**cfg) as rpc:
        with pytest.raises(error, match=match):
            rpc.push_message('m', headers=headers)
    seen = Seen()
    with running_consumer(seen, **cfg):
        with comm.AsynchronProducer(**cfg) as producer:
            producer.push_message('after')
        assert [m for m, _ in seen.wait_for(1)] == ['after']


def test_current_message_outside_a_processor_says_where_it_works():
    with pytest.raises(LookupError, match='only available inside a processor'):
        comm.current_message()


@pytest.mark.parametrize('processor', [lambda m: comm.current_message().message_id,
                                       lambda m: 1 / 0])
def test_current_message_is_gone_once_the_processor_returned_or_raised(processor):
    """In the processor's own thread, after it returned or raised."""
    from occo.util.communication import dispatch
    from occo.util.communication.message_context import message_info
    info = message_info({'k': 'v'}, 'id-1', None, 'q', False)
    outcome = dispatch.handle(processor, (), {}, b'"m"', 'application/json', True,
                              info=info)
    assert outcome.reply is not None
    with pytest.raises(LookupError):
        comm.current_message()


@pytest.mark.broker
def test_a_message_delivered_again_says_it_was_redelivered():
    """The consumer stops while a second message waits in its prefetch: it
    goes back to the queue, and the next consumer sees it redelivered."""
    from conftest import amqp_config
    cfg = amqp_config(prefetch_count=10)
    started, release = threading.Event(), threading.Event()
    cancel = threading.Event()

    def first_consumer(message):
        started.set()
        release.wait(JOIN_TIMEOUT)
        cancel.set()
    consumer = comm.EventDrivenConsumer(first_consumer, cancel_event=cancel, **cfg)
    with consumer:
        with comm.AsynchronProducer(**cfg) as producer:
            producer.push_message('first')
            producer.push_message('second')
        thread = threading.Thread(target=consumer)
        thread.start()
        assert started.wait(JOIN_TIMEOUT)
        with raw_channel() as channel:   # the second is in the consumer's hands
            assert channel.queue_declare(cfg['queue'], passive=True).method.message_count == 0
        release.set()
        thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive()
    seen = Seen()
    with running_consumer(seen, **cfg):
        [(message, info)] = seen.wait_for(1)
    assert (message, info.redelivered) == ('second', True)
