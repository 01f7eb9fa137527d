# SPDX-License-Identifier: Apache-2.0
"""Testing your own processors with pytest, each test on a broker of its own.

Run it as ``python -m pytest test_processor_example.py``: the
``memory_broker`` fixture comes with occo-util-communication, nothing to
configure.
"""

import pytest

import occo.util.communication as comm
from occo.util.communication.testing import Collector, running_consumer

# -- the code under test: two processors of your component -----------------

PRICES = {'tea': 3, 'coffee': 4}


def quote(request):
    """Answers RPC calls: the price of some items."""
    if request['item'] not in PRICES:
        raise ValueError('unknown item: {}'.format(request['item']))
    return PRICES[request['item']] * request['quantity']


class Stock:
    """Consumes one-way messages: counts the items delivered."""

    def __init__(self):
        self.counts = {}

    def __call__(self, delivery):
        item = delivery['item']
        self.counts[item] = self.counts.get(item, 0) + delivery['quantity']


# -- the tests ---------------------------------------------------------------

# The component's configuration, on the memory backend. The queue names need
# not be unique: each test that asks for memory_broker has its own broker.
QUOTES = {'protocol': 'memory', 'queue': 'quotes', 'rpc_timeout': 5}
DELIVERIES = {'protocol': 'memory', 'queue': 'deliveries'}


def test_quote_returns_the_price(memory_broker):
    with running_consumer(quote, **QUOTES):
        with comm.RPCProducer(**QUOTES) as rpc:
            assert rpc.push_message({'item': 'tea', 'quantity': 2}) == 6


def test_quote_of_an_unknown_item_fails_at_the_caller(memory_broker):
    with running_consumer(quote, **QUOTES):
        with comm.RPCProducer(**QUOTES) as rpc:
            with pytest.raises(comm.ApplicationError, match='unknown item: cake'):
                rpc.push_message({'item': 'cake', 'quantity': 1})


def test_stock_counts_the_deliveries(memory_broker):
    stock = Stock()
    handled = Collector(stock)          # calls stock, then records the message
    with running_consumer(handled, **DELIVERIES):
        with comm.AsynchronProducer(**DELIVERIES) as producer:
            producer.push_message({'item': 'tea', 'quantity': 2})
            producer.push_message({'item': 'tea', 'quantity': 3})
        handled.wait_for(2)             # stock has processed both
    assert stock.counts == {'tea': 5}


def test_a_message_nobody_consumed_stays_in_this_test(memory_broker):
    with comm.AsynchronProducer(**DELIVERIES) as producer:
        producer.push_message({'item': 'coffee', 'quantity': 1})
    assert len(memory_broker.queue('deliveries')) == 1
    # The next test's broker has no queue "deliveries" until it declares one.


def test_the_next_test_starts_empty(memory_broker):
    assert len(memory_broker.queue('deliveries')) == 0
