# SPDX-License-Identifier: Apache-2.0
"""Run the benchmark with the broker and the client on cores of their own.

``python -m benchmarks.own_core [benchmark arguments]``

RabbitMQ starts one scheduler per core and binds each to its core, so on a
machine with as many cores as the broker has schedulers the client always
shares a core with one of them, and each takes time the other could have
used. Issue 14's busiest-side goal (one side at 90 % of a core) is about
where the pipeline waits, which that sharing hides. This runs what a
machine with more cores than the broker has schedulers would give:

* an extra RabbitMQ node of the local installation (the test suite's
  :class:`support.rabbitnode.RabbitNode`: own name, ports and data
  directory, stopped and removed afterwards) with one scheduler
  (``+S 1:1``), which RabbitMQ binds to one core;
* ``python -m benchmarks`` with the given arguments, against that node,
  allowed only on the other cores (its case processes inherit that).

The benchmark's header and JSON (``environment.client_cpus``,
``environment.broker_scheduler_cpus``) record the split. The machine's own
broker is not touched, so ``--queue-version``, which sets a policy on it,
is refused.
"""

import os
import sys

from . import broker
from .__main__ import main as run_benchmark

__all__ = ['main', 'one_scheduler_node']

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rabbit_node_class():
    """The test suite's RabbitNode (``tests/support``; not installed)."""
    sys.path.insert(0, os.path.join(_REPO_ROOT, 'tests'))
    from support.rabbitnode import RabbitNode
    return RabbitNode


def one_scheduler_node():
    """A :class:`RabbitNode` whose Erlang VM runs one scheduler."""
    RabbitNode = _rabbit_node_class()

    class OneSchedulerNode(RabbitNode):
        @property
        def env(self):
            env = super().env
            env['RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS'] += ' +S 1:1'
            return env

    return OneSchedulerNode(name='owncore')


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a.startswith('--queue-version') for a in argv):
        print('error: --queue-version sets a policy on the machine\'s broker, '
              'not on this run\'s own node', file=sys.stderr)
        return 2
    with one_scheduler_node() as node:
        pid = broker.listening_pid('127.0.0.1', node.amqp_port)
        schedulers = broker.scheduler_cpus(pid) if pid else None
        if not schedulers or len(schedulers) != 1:
            print('error: the node should run one scheduler; /proc shows '
                  '{}'.format(schedulers), file=sys.stderr)
            return 2
        others = os.sched_getaffinity(0) - schedulers[0]
        if not others:
            print('error: no core left beside the broker\'s scheduler (CPU '
                  '{})'.format(sorted(schedulers[0])), file=sys.stderr)
            return 2
        os.sched_setaffinity(0, others)
        os.environ.update(OCCO_TEST_AMQP_HOST='127.0.0.1',
                          OCCO_TEST_AMQP_PORT=str(node.amqp_port))
        return run_benchmark(argv)


if __name__ == '__main__':
    sys.exit(main())
