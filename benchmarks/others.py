# SPDX-License-Identifier: Apache-2.0
"""The other Python AMQP clients, run through the same cases as the library.

kombu (on py-amqp), aio-pika (asyncio) and AMQPStorm are optional: the
``bench`` extra installs them. Each has a module of its own,
:mod:`benchmarks.others_kombu`, :mod:`benchmarks.others_aiopika` and
:mod:`benchmarks.others_amqpstorm`, with the functions of
:mod:`benchmarks.raw` that the client has: ``publish(workload, queue, n,
confirm)``, ``consume(workload, queue, n, prefetch, timeout)`` and
``rpc_sequential(workload, queue, n, server_pids)``, sending the same
message, timing the same span.

A case builds an :class:`Others` for one of its labels, adds its ``jobs``
to the jobs it interleaves (so a slow minute on the machine hits every
client alike), then appends ``others.rows(results)`` to its rows; the
ratio is to raw pika, as for the library. The clients that run are those
in ``workload.clients`` (``--clients``); one that is selected but cannot be
imported gets one row per label with ``not installed`` in its notes and no
error. Every queue comes from the case, so the ledger and the case's
clean-up cover them.
"""

import importlib
import importlib.metadata

from .measure import timed_echo_calls

__all__ = ['CLIENTS', 'NOT_INSTALLED', 'load', 'versions', 'Others',
           'publishing', 'consuming', 'rpc', 'timed_calls']

#: Client name (``--clients``) -> (package it imports, its module here,
#: distribution name for the version).
CLIENTS = {
    'kombu': ('kombu', 'benchmarks.others_kombu', 'kombu'),
    'aio-pika': ('aio_pika', 'benchmarks.others_aiopika', 'aio-pika'),
    'amqpstorm': ('amqpstorm', 'benchmarks.others_amqpstorm', 'AMQPStorm'),
}

#: The notes of a selected client whose package cannot be imported.
NOT_INSTALLED = 'not installed (pip install -e .[bench])'


def load(name):
    """Return the module for client ``name``, or ``None`` when its package
    cannot be imported.

    The package is imported first and on every call, so an import error
    inside our own module is not mistaken for a missing client, and a
    package made unimportable (``sys.modules[package] = None``) counts as
    missing even after our module was imported.
    """
    package, module, _ = CLIENTS[name]
    try:
        importlib.import_module(package)
    except ImportError:
        return None
    return importlib.import_module(module)


def versions():
    """``{client: version or None}`` of the installed distributions."""
    found = {}
    for name, (_, _, distribution) in CLIENTS.items():
        try:
            found[name] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


class Others:
    """The other clients' jobs for one case label, then their rows.

    :ivar clients: ``[(name, module)]`` of the selected, installed clients.
    :ivar jobs: ``[(key, fn)]`` to add to the case's interleaved jobs.
    """

    def __init__(self, workload, case, label, unit, run=True):
        self.case, self.label, self.unit = case, label, unit
        self.clients = []
        self.jobs = []
        self._specs = []
        self._missing = []
        for name in workload.clients if run else ():
            module = load(name)
            if module is None:
                self._missing.append(name)
            else:
                self.clients.append((name, module))

    def add(self, client, impl, fn, notes):
        """Run ``fn()`` in every run, as the row ``impl`` of ``client``."""
        key = 'other: ' + impl
        self.jobs.append((key, fn))
        self._specs.append((key, client, impl, notes))

    def rows(self, results, baseline='raw'):
        """The rows of the jobs (from the case's ``_interleave`` results)
        and one ``not installed`` row per missing client."""
        from .cases import make_row   # cases imports this module
        rows = []
        for key, client, impl, notes in self._specs:
            row = make_row(self.case, self.label, impl, self.unit,
                           *results[key], baseline=baseline, notes=notes)
            row['client'] = client
            rows.append(row)
        for client in self._missing:
            row = make_row(self.case, self.label, client, self.unit,
                           notes=NOT_INSTALLED)
            row['error'] = None   # missing is a fact of the run, not a failure
            row['client'] = client
            rows.append(row)
        return rows


def _count(workload, spec):
    name, divisor = spec
    return max(1, workload.count(name) // divisor)


def publishing(workload, published):
    """``publish-transient``: each client without confirms (the publish
    count) and with (the count its confirm style allows, see each
    module's ``CONFIRMED``).

    :param published: the case's ``_published(workload, fn, n, *args)``,
        which times ``fn`` on a fresh queue and checks the queue's count.
    """
    others = Others(workload, 'publish-transient', 'publish-transient',
                    'msg/s')
    n = workload.count('publish')
    for name, module in others.clients:
        n_confirmed = _count(workload, module.CONFIRMED)
        others.add(name, name, lambda m=module: published(
            workload, m.publish, n, False), module.NOTES['publish'])
        others.add(name, name + ' confirmed', lambda m=module, k=n_confirmed:
                   published(workload, m.publish, k, True),
            '{}, N={}'.format(module.NOTES['confirmed'], n_confirmed))
    return others


#: The prefetch counts at which the other clients consume.
CONSUME_PREFETCH = (100,)


def consuming(workload, drain, n, prefetch, timeout):
    """``consume P=<prefetch>``: each client drains a pre-filled queue, at
    the prefetch counts in :data:`CONSUME_PREFETCH` (no jobs, no rows at
    the others).

    :param drain: the case's ``_drain(workload, fn, n, prefetch, timeout)``.
    """
    others = Others(workload, 'consume', 'consume P={}'.format(prefetch),
                    'msg/s', run=prefetch in CONSUME_PREFETCH)
    for name, module in others.clients:
        others.add(name, name, lambda m=module: drain(
            workload, m.consume, n, prefetch, timeout),
            module.NOTES['consume'])
    return others


def rpc(workload, queue, n, server_pids):
    """``rpc-seq``: each client calls the raw echo server on ``queue``."""
    others = Others(workload, 'rpc-seq', 'rpc-seq', 'calls/s')
    for name, module in others.clients:
        count = max(1, n // module.RPC_DIVISOR)
        notes = module.NOTES['rpc']
        if count != n:
            notes += ', N={}'.format(count)
        others.add(name, name, lambda m=module, k=count: m.rpc_sequential(
            workload, queue, k, server_pids), notes)
    return others


def timed_calls(client, workload, queue, n, server_pids, warmup=20):
    """``n`` sequential ``client.call(queue, message)``, each timed, as
    every client's row does (:func:`benchmarks.measure.timed_echo_calls`)."""
    return timed_echo_calls(lambda message: client.call(queue, message),
                            workload.message, n, server_pids, warmup)
