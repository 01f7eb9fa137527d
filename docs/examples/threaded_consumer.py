# SPDX-License-Identifier: Apache-2.0
"""Consume in a thread of its own; the main thread stops it."""

import os
import threading

import occo.util.communication as comm
from occo.util.config import DefaultYAMLConfig

HERE = os.path.dirname(os.path.abspath(__file__))


def process(message, worker, done):
    print(worker, 'received:', message)
    done.set()


with open(os.path.join(HERE, 'config.yaml')) as f:
    cfg = DefaultYAMLConfig(f)

cancel_event = threading.Event()
done = threading.Event()
consumer = comm.EventDrivenConsumer(
    process, pargs=['worker-1'], pkwargs={'done': done},
    cancel_event=cancel_event, **cfg.mqconfig)

with consumer:
    thread = threading.Thread(target=consumer)   # runs start_consuming()
    thread.start()
    with comm.AsynchronProducer(**cfg.mqconfig) as producer:
        producer.push_message('hello from the main thread')
    done.wait(timeout=10)      # the main thread's own work would go here
    cancel_event.set()         # start_consuming returns within a second
    thread.join(timeout=10)
print('consumer thread ended:', not thread.is_alive())
