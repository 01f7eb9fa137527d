# SPDX-License-Identifier: Apache-2.0
"""What is sent and how much: the message, the counts, the broker address.

One :class:`Workload` is built from the command line and handed to every
case, in the parent and (as JSON) in each case's child process, so library
and raw pika send the very same message the same number of times.
"""

import json
import os
import uuid

__all__ = ['Workload', 'make_message', 'encode', 'read_ledger']

#: Messages or calls per timed window, full run. Sized so that the whole
#: suite with ``--runs 3`` stays well under 10 minutes on 2 cores.
FULL_COUNTS = {
    'publish': 50000,
    'publish_confirmed': 5000,   # raw pika, one round trip per message
    'consume': 50000,
    'consume_p1': 10000,         # prefetch 1: one round trip per message
    'rpc': 5000,
    'rpc_threads': 10000,
    'rpc_threads_seq': 2500,
    'rpc_futures': 20000,
    'idle_seconds': 3,
    'memory': 50000,
    'memory_rpc': 10000,
    'workers_1': 400,            # 5 ms per message, one at a time
    'workers_8': 2000,
    'rss': 200000,
}

#: ``--quick``: a smoke run of a few seconds per case.
QUICK_COUNTS = {
    'publish': 2000,
    'publish_confirmed': 300,
    'consume': 2000,
    'consume_p1': 500,
    'rpc': 200,
    'rpc_threads': 400,
    'rpc_threads_seq': 100,
    'rpc_futures': 1000,
    'idle_seconds': 1,
    'memory': 2000,
    'memory_rpc': 500,
    'workers_1': 50,
    'workers_8': 200,
    'rss': 20000,
}

#: At most this many bytes of messages per timed window (or pre-filled
#: queue): a count is first capped at ``MAX_WINDOW_BYTES // size``, then
#: scaled. It changes nothing up to 10 KB; at 1 MB a window has 512
#: messages instead of 50,000, and no queue holds more than 512 MiB.
MAX_WINDOW_BYTES = 512 * 1024 * 1024
#: The same for ``rss``, whose messages flow through and never pile up.
MAX_STREAM_BYTES = 4 * 1024 * 1024 * 1024
#: The same for RPC counts: a 1 MB call (request and reply) takes tens of
#: milliseconds, so 200 calls; nothing changes up to 10 KB.
MAX_CALL_BYTES = 200 * 1024 * 1024

def encode(message):
    """Encode ``message`` as the library's codec does (compact JSON), the
    way raw pika and the other clients' code encode every message they
    send: :func:`json.dumps`, as a user would write it."""
    return json.dumps(message, ensure_ascii=False,
                      separators=(',', ':')).encode('utf-8')


def make_message(size):
    """A JSON dict whose encoding is ``size`` bytes long (at least ~60).

    A dict, not a string, so that both implementations pay for JSON
    encoding and decoding, as an OCCO component would.
    """
    message = {'id': 12345, 'kind': 'benchmark', 'node': 'node-0001',
               'payload': ''}
    message['payload'] = 'x' * max(0, size - len(encode(message)))
    return message


def read_ledger(path):
    """Return the queue names recorded in the ledger file ``path``."""
    try:
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]
    except OSError:
        return []


class Workload:
    """The parameters of one benchmark run.

    :param size: message size in bytes.
    :param runs: timed runs per implementation (the row is their median).
    :param quick: use :data:`QUICK_COUNTS`.
    :param scale: multiplies every count (not the idle time).
    :param ledger: a file where every queue name is recorded before use, so
        that the parent can delete the queues of a case it had to kill.
    :param clients: the other clients to run where a case has them
        (``kombu``, ``aio-pika``, ``amqpstorm``; see
        :mod:`benchmarks.others`).
    """

    def __init__(self, size=100, runs=3, quick=False, scale=1.0,
                 host=None, port=None, ledger=None, clients=()):
        self.size = int(size)
        self.clients = tuple(clients)
        self.runs = int(runs)
        self.quick = bool(quick)
        self.scale = float(scale)
        self.host = host or os.environ.get('OCCO_TEST_AMQP_HOST', '127.0.0.1')
        self.port = int(port or os.environ.get('OCCO_TEST_AMQP_PORT', '5672'))
        self.ledger = ledger
        self.message = make_message(self.size)
        self.body = encode(self.message)

    def queue_name(self, case):
        """A fresh queue name (uuid), so runs and cases never share one.

        The name goes to the ledger first, if there is one.
        """
        name = 'bench-{}-{}'.format(case, uuid.uuid4().hex[:12])
        if self.ledger:
            with open(self.ledger, 'a') as f:
                f.write(name + '\n')
        return name

    def count(self, name):
        base = (QUICK_COUNTS if self.quick else FULL_COUNTS)[name]
        if name == 'idle_seconds':
            return base
        if name == 'rss':
            limit = MAX_STREAM_BYTES // self.size
        elif 'rpc' in name:
            limit = MAX_CALL_BYTES // self.size
        else:
            limit = MAX_WINDOW_BYTES // self.size
        return max(1, int(min(base, limit) * self.scale))

    def amqp_config(self, queue, **overrides):
        """Library configuration for ``queue`` on the benchmark broker."""
        config = dict(protocol='amqp', host=self.host, port=self.port,
                      vhost='/', user='guest', password='guest', queue=queue,
                      connect_timeout=10)
        config.update(overrides)
        return config

    def to_dict(self):
        return {'size': self.size, 'runs': self.runs, 'quick': self.quick,
                'scale': self.scale, 'host': self.host, 'port': self.port,
                'ledger': self.ledger, 'clients': list(self.clients)}

    @classmethod
    def from_dict(cls, data):
        return cls(**data)
