# SPDX-License-Identifier: Apache-2.0
"""The original OCCO communication tests (occopus/util, tests/unittests/mq.py),
ported to Python 3 with their assertions kept.

What changed in the port: ``map(lambda (a, b): ...)`` became loops (Python 3),
the configuration names this machine's broker, waits and joins got generous
timeouts so a failure cannot hang the suite, and the queues are deleted
afterwards. The original configured logging at import
(``logging.config.dictConfig(cfg.logging)``); in one pytest session that
would disable the loggers every other test reads, so the port leaves
logging alone. ``test_async`` publishes while its consumer thread starts: the
original ran against a broker that held its queues from earlier runs, and
so does the port (a fixture declares them first); on an empty broker the
message could be published before any queue takes it. The objects are used
as the original used them: without ``with`` blocks.
"""

import logging
import os
import threading
import unittest

import pytest

import occo.util.communication as comm
import occo.util.communication.mq as mq
import occo.util.config as config
from conftest import JOIN_TIMEOUT, _delete_queues, raw_channel

pytestmark = pytest.mark.broker

CFG_FILE = os.path.join(os.path.dirname(__file__), 'data', 'original',
                        'comm_test_cfg.yaml')
with open(CFG_FILE) as cfg:
    cfg = config.DefaultYAMLConfig(cfg)

log = logging.getLogger()


QUEUES = ['occo_original_test', 'occo_original_unittest_queue_async',
          'occo_original_unittest_queue_rpc']


@pytest.fixture(autouse=True, scope='module')
def the_original_queues():
    with raw_channel() as channel:
        for queue in QUEUES:
            channel.queue_declare(queue, durable=True)
    yield
    _delete_queues(QUEUES)


def dummy(*args, **kwargs):
    pass


class MQBootstrapTest(unittest.TestCase):
    def setUp(self):
        self.test_config = cfg.default_mqconfig
        self.fail_config = dict(extra='something')

    def test_inst(self):
        for cls1, cls2 in [(comm.AsynchronProducer, mq.MQAsynchronProducer),
                           (comm.RPCProducer, mq.MQRPCProducer)]:
            self.assertEqual(cls1(**self.test_config).__class__, cls2)

    def test_inst_consumer(self):
        self.assertEqual(
            comm.EventDrivenConsumer(
                dummy, **self.test_config).__class__,
            mq.MQEventDrivenConsumer)

    def test_bad_inst(self):
        def tst(cls):
            with self.assertRaises(comm.ConfigurationError):
                cls(**self.fail_config)
        for cls in [comm.AsynchronProducer, comm.RPCProducer,
                    comm.EventDrivenConsumer]:
            tst(cls)


class MQConnectionTest(unittest.TestCase):
    def setUp(self):
        self.data = None

    def test_rpc_init_prod(self):
        comm.RPCProducer(**cfg.endpoints['producer_rpc'])

    def test_async_init_prod(self):
        comm.AsynchronProducer(**cfg.endpoints['producer_async'])

    def test_init_consumer(self):
        comm.EventDrivenConsumer(dummy, **cfg.endpoints['consumer_rpc'])

    def test_rpc(self):
        MSG = 'test message abc'
        e = threading.Event()

        def consumer_core(msg, *args, **kwargs):
            return msg
        p = comm.RPCProducer(**cfg.endpoints['producer_rpc'])
        c = comm.EventDrivenConsumer(consumer_core, cancel_event=e,
                                     **cfg.endpoints['consumer_rpc'])
        t = threading.Thread(target=c)
        t.start()
        log.debug('sendingrpc message')
        retval = p.push_message(MSG)
        e.set()
        t.join(JOIN_TIMEOUT)
        self.assertEqual(retval, MSG)
        self.assertFalse(t.is_alive())
        log.debug('sent, received rpc')

    def test_async(self):
        MSG = 'test message abc'
        e = threading.Event()

        def consumer_core(msg, *args, **kwargs):
            log.debug('Async Consumer: message has arrived')
            self.data = msg
            log.debug('Async Consumer: setting cancel event')
            e.set()
            log.debug('Async consumer: cancel event has been set')
        p = comm.AsynchronProducer(**cfg.endpoints['producer_async'])
        c = comm.EventDrivenConsumer(consumer_core, cancel_event=e,
                                     **cfg.endpoints['consumer_async'])
        t = threading.Thread(target=c)
        t.start()
        log.debug('Sending Async message')
        p.push_message(MSG)
        log.debug('Waiting Async arrival')
        self.assertTrue(e.wait(JOIN_TIMEOUT))
        log.debug('Async message has arrived')
        self.assertEqual(self.data, MSG)
        log.debug('Waiting for Async Consumer to exit')
        t.join(JOIN_TIMEOUT)
        self.assertFalse(t.is_alive())
