# SPDX-License-Identifier: Apache-2.0
"""The Quickstart: send a message, consume it, make a remote procedure call."""

import logging
import threading

import occo.util.communication as comm

logging.basicConfig(level=logging.INFO)
logging.getLogger('pika').setLevel(logging.WARNING)   # see "Logging"

config = {'protocol': 'memory', 'queue': 'quickstart'}


# 1. Send: push a message into the queue, and go on.
with comm.AsynchronProducer(**config) as producer:
    producer.push_message('hello')


# 2. Consume: the processor is called with each message; what it returns
#    answers an RPC request. The consumer runs in a thread of its own until
#    the event is set.
def process(message):
    print('received:', message)
    if isinstance(message, dict):
        return sum(message['add'])
    return None


stop = threading.Event()
with comm.EventDrivenConsumer(process, cancel_event=stop, **config) as consumer:
    worker = threading.Thread(target=consumer)
    worker.start()

    # 3. RPC: send a message and wait for the processor's result.
    with comm.RPCProducer(rpc_timeout=10, **config) as rpc:
        print('result:', rpc.push_message({'add': [1, 2, 3]}))

    stop.set()
    worker.join(timeout=10)
