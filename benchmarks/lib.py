# SPDX-License-Identifier: Apache-2.0
"""The benchmark's work done through ``occo.util.communication``.

Each function mirrors one in :mod:`benchmarks.raw` and times the same span,
so the two can be divided. Only the library's public API is used
(``AsynchronProducer``, ``RPCProducer``, ``EventDrivenConsumer``, their
``with`` blocks, ``push_message``, ``start_consuming``, ``cancel_event``):
what a user of the library would write.

Every wait has a timeout: a consumer that does not finish raises
:class:`TimeoutError`, and its thread is cancelled and joined with a bound.
"""

import gc
import itertools
import os
import threading
import time

import occo.util.communication as comm

from .measure import Meter, rss_mb, timed_echo_calls

__all__ = ['publish', 'consume', 'rpc_sequential', 'rpc_threads', 'rpc_map',
           'idle_consumer', 'idle_rpc', 'memory_publish_consume',
           'memory_rpc', 'rss_growth', 'echo_server', 'echo',
           'consume_workers']

#: Seconds to wait for a consumer thread to end after its cancel event.
JOIN_TIMEOUT = 10


def echo(message):
    """The RPC servers' processor: return the request."""
    return message


class _Counter:
    """A processor that counts messages and signals when ``n`` arrived."""

    def __init__(self, n):
        self.n = n
        self.count = 0
        self.done = threading.Event()

    def __call__(self, message):
        self.count += 1
        if self.count >= self.n:
            self.done.set()


class _ConsumerThread:
    """Run a consumer's ``start_consuming`` in a thread; stop it on exit.

    An exception in the thread is re-raised by :meth:`stop`, so a consumer
    that dies shows up as an error row instead of a timeout.
    """

    def __init__(self, consumer):
        self.consumer = consumer
        self.error = None
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='bench-consumer')

    def _run(self):
        try:
            self.consumer.start_consuming()
        except BaseException as e:  # re-raised by stop()
            self.error = e

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.consumer.cancel_event.set()
        self._thread.join(JOIN_TIMEOUT)
        if self._thread.is_alive():
            raise TimeoutError('consumer thread did not end within {} s of '
                               'its cancel event'.format(JOIN_TIMEOUT))
        if self.error is not None:
            raise self.error


def _wait(event, timeout, what):
    if not event.wait(timeout):
        raise TimeoutError('{} did not finish within {} s'.format(what, timeout))


def publish(workload, queue, n, durable):
    """Push ``n`` messages and leave the ``with`` block (all confirmed).

    ``durable=None`` keeps the library's defaults (durable queue,
    persistent messages); ``False`` asks for a transient queue. Confirms
    stay on (the default) either way. Timed from the first push until the
    ``with`` block exited, which waits for the last confirm and closes the
    connection.
    """
    config = workload.amqp_config(queue)
    if durable is not None:
        config['durable'] = durable
    message = workload.message
    with comm.AsynchronProducer(**config) as producer:
        meter = Meter().start()
        for _ in range(n):
            producer.push_message(message)
    return meter.stop(n)


def consume(workload, queue, n, prefetch, timeout):
    """Process ``n`` messages of a pre-filled ``queue``.

    ``prefetch=None`` leaves ``prefetch_count`` out of the configuration,
    so the library's default applies. Timed from starting the consumer
    thread until the processor saw the ``n``-th message.
    """
    config = workload.amqp_config(queue, durable=False)
    if prefetch is not None:
        config['prefetch_count'] = prefetch
    counter = _Counter(n)
    consumer = comm.EventDrivenConsumer(counter, cancel_event=threading.Event(),
                                        **config)
    return _timed_until_counted(consumer, counter, timeout, 'library consumer')


def _timed_until_counted(consumer, counter, timeout, what):
    """Time ``consumer``, run in a thread, until ``counter`` is done."""
    with consumer:
        meter = Meter().start()
        thread = _ConsumerThread(consumer).start()
        try:
            ok = counter.done.wait(timeout)
            sample = meter.stop(counter.count)
        finally:
            thread.stop()
    if not ok:
        raise TimeoutError('{} got {} of {} messages in {} s'.format(
            what, counter.count, counter.n, timeout))
    return sample


def _rpc_config(workload, queue):
    return workload.amqp_config(queue, durable=False, rpc_timeout=10)


def rpc_sequential(workload, queue, n, server_pids, warmup=20):
    """``n`` calls, one after the other, each timed for latency.

    ``warmup`` calls (untimed, the first one checked) run first, so
    connection set-up and the servers' first message are not measured.
    """
    message = workload.message
    with comm.RPCProducer(**_rpc_config(workload, queue)) as rpc:
        return timed_echo_calls(rpc.push_message, message, n, server_pids, warmup)


def rpc_threads(workload, queue, n, threads, server_pids, n_seq, warmup=20):
    """``threads`` threads share one ``RPCProducer`` for ``n`` calls in all.

    Also measures ``n_seq`` sequential calls on the same producer and
    servers first, the baseline the notes compare against. Returns
    ``(threaded_sample, sequential_sample)``.
    """
    message = workload.message
    with comm.RPCProducer(**_rpc_config(workload, queue)) as rpc:
        sequential = timed_echo_calls(rpc.push_message, message, n_seq,
                                      server_pids, warmup)

        per_thread = max(1, n // threads)
        latencies = [[] for _ in range(threads)]
        errors = []
        barrier = threading.Barrier(threads + 1, timeout=30)

        def worker(index):
            clock = time.perf_counter
            mine = latencies[index]
            try:
                barrier.wait()
                for _ in range(per_thread):
                    t = clock()
                    rpc.push_message(message)
                    mine.append(clock() - t)
            except BaseException as e:  # reported below
                errors.append(e)

        workers = [threading.Thread(target=worker, args=(i,), daemon=True)
                   for i in range(threads)]
        for w in workers:
            w.start()
        barrier.wait()
        meter = Meter(server_pids).start()
        deadline = time.monotonic() + 120
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
        all_latencies = [x for mine in latencies for x in mine]
        sample = meter.stop(len(all_latencies), all_latencies)
        if any(w.is_alive() for w in workers):
            raise TimeoutError('RPC threads did not finish within 120 s')
        if errors:
            raise errors[0]
    return sample, sequential


def rpc_map(workload, queue, n, in_flight, server_pids, warmup=200):
    """``n`` calls from one thread with ``RPCProducer.map``, which keeps
    ``in_flight`` calls in flight (``rpc_max_in_flight``).

    ``warmup`` calls (untimed, the first one checked) run first. Timed from
    the ``map`` call until the last result was taken. No per-call
    latencies: with calls in flight, the time a result waits in line is
    not the call's.
    """
    message = workload.message
    config = dict(_rpc_config(workload, queue), rpc_max_in_flight=in_flight)
    with comm.RPCProducer(**config) as rpc:
        timed_echo_calls(rpc.push_message, message, 0, warmup=0)   # checks the echo
        for _ in rpc.map(itertools.repeat(message, warmup)):
            pass
        count = 0
        meter = Meter(server_pids).start()
        for _ in rpc.map(itertools.repeat(message, n)):
            count += 1
        return meter.stop(count)


def idle_consumer(workload, queue, seconds):
    """CPU used by a consumer waiting on an empty queue for ``seconds``."""
    config = workload.amqp_config(queue, durable=False)
    consumer = comm.EventDrivenConsumer(echo, cancel_event=threading.Event(),
                                        **config)
    with consumer:
        thread = _ConsumerThread(consumer).start()
        try:
            time.sleep(0.5)   # let basic_consume settle
            meter = Meter().start()
            time.sleep(seconds)
            sample = meter.stop(0)
        finally:
            thread.stop()
    return sample


def idle_rpc(workload, queue, seconds):
    """CPU used by an RPC call that waits ``seconds`` for a reply in vain."""
    config = workload.amqp_config(queue, durable=False)
    with comm.RPCProducer(**config) as rpc:
        meter = Meter().start()
        try:
            rpc.push_message(workload.message, timeout=seconds)
        except comm.RPCTimeoutError:
            pass
        else:
            raise RuntimeError('a call to a queue without consumer returned')
        return meter.stop(0)


def memory_publish_consume(workload, n, timeout=60):
    """Push ``n`` messages through the memory backend to a consumer thread.

    Timed from the first push until the consumer processed the last one.
    """
    queue = 'bench-memory-{}'.format(os.urandom(6).hex())
    config = dict(protocol='memory', queue=queue)
    counter = _Counter(n)
    consumer = comm.EventDrivenConsumer(counter, cancel_event=threading.Event(),
                                        **config)
    message = workload.message
    with consumer, comm.AsynchronProducer(**config) as producer:
        thread = _ConsumerThread(consumer).start()
        try:
            meter = Meter().start()
            for _ in range(n):
                producer.push_message(message)
            ok = counter.done.wait(timeout)
            sample = meter.stop(counter.count)
        finally:
            thread.stop()
    if not ok:
        raise TimeoutError('memory consumer got {} of {} messages'.format(
            counter.count, n))
    return sample


def memory_rpc(workload, n, warmup=20):
    """``n`` sequential RPC calls to an echo consumer thread, in memory."""
    queue = 'bench-memory-rpc-{}'.format(os.urandom(6).hex())
    config = dict(protocol='memory', queue=queue, rpc_timeout=10)
    consumer = comm.EventDrivenConsumer(echo, cancel_event=threading.Event(),
                                        **config)
    message = workload.message
    with consumer, comm.RPCProducer(**config) as rpc:
        thread = _ConsumerThread(consumer).start()
        try:
            sample = timed_echo_calls(rpc.push_message, message, n, (), warmup)
        finally:
            thread.stop()
    return sample


def rss_growth(workload, queue, n, warmup=2000, timeout=300):
    """RSS growth while ``n`` messages go through one producer and consumer.

    Both live in this process (consumer in a thread, transient queue). RSS
    is read before anything is opened, after a warm-up of ``warmup``
    messages (caches, pools and buffers filled) and after the ``n``
    messages were consumed, each after ``gc.collect()``; a sampler thread
    records the peak. The row's growth is end minus after-warm-up: what
    keeps growing with traffic, which a leak would.
    """
    gc.collect()
    before_open = rss_mb()
    config = workload.amqp_config(queue, durable=False)
    counter = _Counter(warmup + n)
    consumer = comm.EventDrivenConsumer(counter, cancel_event=threading.Event(),
                                        **config)
    message = workload.message
    peak = [0.0]
    sampling = threading.Event()

    def sample_rss():
        while not sampling.wait(0.1):
            peak[0] = max(peak[0], rss_mb())

    with consumer, comm.AsynchronProducer(**config) as producer:
        thread = _ConsumerThread(consumer).start()
        sampler = threading.Thread(target=sample_rss, daemon=True)
        try:
            for _ in range(warmup):
                producer.push_message(message)
            producer.flush(60)
            deadline = time.monotonic() + 60
            while counter.count < warmup:
                if time.monotonic() > deadline:
                    raise TimeoutError('warm-up: consumed {} of {}'.format(
                        counter.count, warmup))
                time.sleep(0.01)
            gc.collect()
            after_warmup = rss_mb()
            sampler.start()
            meter = Meter().start()
            for _ in range(n):
                producer.push_message(message)
            producer.flush(60)
            ok = counter.done.wait(timeout)
            sample = meter.stop(counter.count - warmup)
        finally:
            sampling.set()
            thread.stop()
    if not ok:
        raise TimeoutError('consumer got {} of {} messages'.format(
            counter.count, warmup + n))
    gc.collect()
    end = rss_mb()
    sample.extra.update({
        'rss_before_open_mb': before_open, 'rss_after_warmup_mb': after_warmup,
        'rss_end_mb': end, 'rss_peak_mb': max(peak[0], end),
        'rss_growth_mb': end - after_warmup,
        'rss_growth_from_start_mb': end - before_open,
    })
    sample.rss = end
    return sample


def consume_workers(workload, queue, n, workers, delay, timeout):
    """Process ``n`` messages of a pre-filled ``queue`` with a processor
    that waits ``delay`` seconds (I/O-bound), on ``max_workers=workers``.

    The default prefetch (100) applies. Timed from starting the consumer
    thread until the ``n``-th processor returned.
    """
    config = workload.amqp_config(queue, durable=False, max_workers=workers)
    lock = threading.Lock()
    counter = _Counter(n)

    def wait_for_io(message):
        time.sleep(delay)
        with lock:   # several workers count at once
            counter(message)
    consumer = comm.EventDrivenConsumer(wait_for_io,
                                        cancel_event=threading.Event(), **config)
    return _timed_until_counted(consumer, counter, timeout,
                                'library consumer with {} workers'.format(workers))


def echo_server(workload_dict, queue, ready, stop, max_seconds):
    """Run a library echo server until ``stop`` is set (child process).

    An ``EventDrivenConsumer`` with the default prefetch whose processor
    returns the request. Like the raw server it also ends after
    ``max_seconds`` or when its parent is gone.
    """
    from .workload import Workload
    workload = Workload.from_dict(workload_dict)
    parent = os.getppid()
    config = workload.amqp_config(queue, durable=False)
    consumer = comm.EventDrivenConsumer(echo, cancel_event=threading.Event(),
                                        **config)
    with consumer:
        thread = _ConsumerThread(consumer).start()
        ready.set()
        end = time.monotonic() + max_seconds
        try:
            while (not stop.wait(0.25) and time.monotonic() < end
                   and os.getppid() == parent):
                pass
        finally:
            thread.stop()
