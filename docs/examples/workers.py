# SPDX-License-Identifier: Apache-2.0
"""Process up to four messages at once: an I/O-bound processor on workers."""

import threading
import time

import occo.util.communication as comm

config = dict(protocol='memory', queue='thumbnails',
              max_workers=4,        # four messages at once
              shutdown_grace=10)    # a stop waits 10 s at most for them

lock = threading.Lock()
running = peak = done = 0
all_done = threading.Event()


def make_thumbnail(name):
    """Waits 0.2 s for I/O, as a download would; runs in a worker thread."""
    global running, peak, done
    with lock:
        running += 1
        peak = max(peak, running)
    time.sleep(0.2)
    info = comm.current_message()          # this worker's own message
    with lock:
        print('{} by {} (id {})'.format(name, threading.current_thread().name,
                                        info.message_id))
        running -= 1
        done += 1
        if done == 8:
            all_done.set()


cancel_event = threading.Event()
consumer = comm.EventDrivenConsumer(make_thumbnail, cancel_event=cancel_event,
                                    **config)
with consumer:
    thread = threading.Thread(target=consumer)   # runs start_consuming()
    thread.start()
    with comm.AsynchronProducer(**config) as producer:
        for n in range(8):
            producer.push_message('photo-{}.jpg'.format(n))
    all_done.wait(timeout=10)
    cancel_event.set()      # running messages finish, unstarted ones go back
    thread.join(timeout=15)
print('processed {} messages with {} workers at once'.format(done, peak))
