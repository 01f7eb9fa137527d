# SPDX-License-Identifier: Apache-2.0
"""Many RPC calls from one thread: ``map`` and ``submit``, in memory."""

import concurrent.futures
import threading

import occo.util.communication as comm

config = dict(protocol='memory', queue='squares', rpc_timeout=5)


def square(n):
    if n < 0:   # the consumer logs this failure (stderr), the caller gets it
        raise ValueError('negative: {}'.format(n))
    return n * n


cancel_event = threading.Event()
consumer = comm.EventDrivenConsumer(square, cancel_event=cancel_event, **config)
with consumer:
    thread = threading.Thread(target=consumer)
    thread.start()
    with comm.RPCProducer(**config) as rpc:
        # map: the results in order, with many calls in flight.
        print('map:', list(rpc.map(range(10))))

        # submit: a future per call, returned at once.
        futures = {rpc.submit(n): n for n in (3, -1, 4)}
        results = {}
        for future in concurrent.futures.as_completed(futures, timeout=5):
            n = futures[future]
            try:
                results[n] = future.result()
            except ValueError as e:   # the remote ValueError, an ApplicationError
                results[n] = 'failed: {}'.format(e)
        for n in sorted(results):
            print('submit({}): {}'.format(n, results[n]))
    cancel_event.set()
    thread.join(timeout=10)
