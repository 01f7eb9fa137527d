# SPDX-License-Identifier: Apache-2.0
"""Run every benchmark queue as a classic queue of a chosen storage version.

RabbitMQ 3.10 brought a second storage format for classic queues
(version 2). Versions 3.10 to 3.13 keep version 1 unless told otherwise;
4.0 removed version 1, so there every classic queue is version 2. For
persistent messages the format decides much of the broker's work, so
``--queue-version 2`` shows what an operator of 3.10 to 3.13 gains by
choosing it, and what 4.x gives everyone.

The version is the operator's choice, made with a policy: a queue argument
(``x-queue-version``) would have to match on every later declaration of
the queue, and the library's declarations carry none. So this module sets
one policy over the benchmark's queues (names starting with ``bench-``, all
clients alike) for the whole run, with ``rabbitmqctl`` on this machine,
and clears it afterwards, also when the run fails.
"""

import contextlib
import json
import subprocess
import sys

from . import broker

__all__ = ['POLICY', 'PATTERN', 'queue_version', 'QueuePolicyError']

#: Name of the policy while a run holds it.
POLICY = 'occo-benchmarks-queue-version'
#: The benchmark's queue names (:meth:`benchmarks.workload.Workload.queue_name`).
PATTERN = '^bench-'
#: Above any policy an operator is likely to have on such names, so that
#: the benchmark's queues get exactly this definition.
PRIORITY = 100
_TIMEOUT = 60


class QueuePolicyError(RuntimeError):
    """The policy could not be set or cleared; the message says why."""


def _rabbitmqctl(*args):
    command = ('rabbitmqctl', '-q') + args
    try:
        subprocess.run(command, check=True, capture_output=True, text=True,
                       timeout=_TIMEOUT)
    except FileNotFoundError:
        raise QueuePolicyError('--queue-version needs rabbitmqctl on this '
                               'machine (it sets a policy)') from None
    except subprocess.CalledProcessError as e:
        raise QueuePolicyError('{} failed: {}'.format(
            ' '.join(command[:3]), (e.stderr or e.stdout).strip())) from None
    except subprocess.TimeoutExpired:
        raise QueuePolicyError('{} took more than {} s'.format(
            ' '.join(command[:3]), _TIMEOUT)) from None


@contextlib.contextmanager
def queue_version(version, host):
    """Hold the policy that stores the benchmark's queues as ``version``.

    ``version=None`` sets nothing: the broker's default applies.

    :raises QueuePolicyError: ``host`` is not this machine, or
        ``rabbitmqctl`` is missing or refuses to set the policy. Failing to
        clear it afterwards is only a warning on stderr: the run's results
        stand.
    """
    if version is None:
        yield
        return
    if not broker.is_local(host):
        raise QueuePolicyError(
            '--queue-version sets a policy with rabbitmqctl, so the broker '
            'must run on this machine; {!r} is not a loopback address'.format(
                host))
    _rabbitmqctl('set_policy', POLICY, PATTERN,
                 json.dumps({'queue-version': version}),
                 '--apply-to', 'queues', '--priority', str(PRIORITY))
    try:
        yield
    finally:
        try:
            _rabbitmqctl('clear_policy', POLICY)
        except QueuePolicyError as e:   # the results stand; say what is left
            print('warning: the policy {} is still set ({}); remove it with: '
                  'rabbitmqctl clear_policy {}'.format(POLICY, e, POLICY),
                  file=sys.stderr)
