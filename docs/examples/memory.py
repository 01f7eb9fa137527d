# SPDX-License-Identifier: Apache-2.0
"""All three roles in one process, with no broker: ``protocol: memory``."""

import os
import threading

import occo.util.communication as comm
from occo.util.config import DefaultYAMLConfig

HERE = os.path.dirname(os.path.abspath(__file__))


def process(message):
    print('consumer got:', message)
    if isinstance(message, dict):
        return sum(message['add'])


with open(os.path.join(HERE, 'config.yaml')) as f:
    cfg = DefaultYAMLConfig(f)
config = dict(cfg.mqconfig, protocol='memory')   # the same keys, in memory

cancel_event = threading.Event()
consumer = comm.EventDrivenConsumer(process, cancel_event=cancel_event,
                                    **config)
with consumer:
    thread = threading.Thread(target=consumer)
    thread.start()
    with comm.AsynchronProducer(**config) as producer:
        producer.push_message('hello')
    with comm.RPCProducer(rpc_timeout=5, **config) as rpc:
        print('result:', rpc.push_message({'add': [1, 2, 3]}))
    cancel_event.set()
    thread.join(timeout=10)
