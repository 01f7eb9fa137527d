# SPDX-License-Identifier: Apache-2.0
"""Headers on a message, and what the processor sees of it (memory backend)."""

import threading

import occo.util.communication as comm

config = dict(protocol='memory', queue='orders', rpc_timeout=5)


def process(order):
    info = comm.current_message()
    print('order {} for tenant {}, message id {}, redelivered: {}'.format(
        order['id'], info.headers['tenant'], info.message_id, info.redelivered))
    if info.correlation_id is not None:          # an RPC request
        return {'accepted': order['id'], 'priority': info.headers.get('priority')}


cancel_event = threading.Event()
consumer = comm.EventDrivenConsumer(process, cancel_event=cancel_event, **config)
with consumer:
    thread = threading.Thread(target=consumer)
    thread.start()
    with comm.AsynchronProducer(**config) as producer:
        producer.push_message({'id': 1}, headers={'tenant': 'acme'})
    with comm.RPCProducer(**config) as rpc:
        print(rpc.push_message({'id': 2}, headers={'tenant': 'acme', 'priority': 5}))
    cancel_event.set()
    thread.join(timeout=10)
