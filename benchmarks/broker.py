# SPDX-License-Identifier: Apache-2.0
"""Find the broker's process, so that its CPU time can be measured too.

Issue 14 asks that publishing keep *one side* busy: the client's threads
or the broker at 90 % of a core or more. The client's share comes from
:func:`time.process_time`; the broker's from ``/proc/<pid>/stat`` of the
process that listens on the broker's port. That is only possible when the
broker runs on this machine: for a remote broker, or when ``/proc`` does
not tell (another user's process, no Linux), :func:`listening_pid` returns
``None`` and the ``brk%`` column stays empty.
"""

import glob
import ipaddress
import os
import re
import socket

__all__ = ['is_local', 'listening_pid', 'scheduler_cpus']

#: ``st`` field of ``/proc/net/tcp``: a socket in state LISTEN.
_LISTEN = '0A'


def is_local(host):
    """True when ``host`` resolves to a loopback address (this machine)."""
    try:
        address = socket.gethostbyname(host)
    except OSError:
        return False
    return ipaddress.ip_address(address).is_loopback


def _listening_inodes(port):
    """Socket inodes listening on TCP ``port``, IPv4 and IPv6."""
    inodes = set()
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    if state == _LISTEN and int(local.rsplit(':', 1)[1], 16) == port:
                        inodes.add(inode)
        except OSError:
            continue
    return inodes


def listening_pid(host, port):
    """Return the pid of the local process listening on ``port``, or None.

    ``None`` when ``host`` is not a loopback address, or no readable
    process holds the listening socket.
    """
    if not is_local(host):
        return None
    wanted = {'socket:[{}]'.format(i) for i in _listening_inodes(port)}
    if not wanted:
        return None
    for fd in glob.glob('/proc/[0-9]*/fd/*'):
        try:
            if os.readlink(fd) in wanted:
                return int(fd.split('/')[2])
        except OSError:
            continue
    return None


#: Thread names of an Erlang VM's normal schedulers (``1_scheduler``, ...;
#: not its dirty schedulers, pollers or helper threads).
_SCHEDULER_THREAD = re.compile(r'\d+_scheduler$')


def scheduler_cpus(pid):
    """The CPUs each normal scheduler thread of the Erlang VM ``pid`` may
    run on, as one set per scheduler, in thread order.

    RabbitMQ binds each scheduler to one CPU, so on a quiet machine this
    says which cores the broker's Erlang code runs on and how many
    schedulers it has. ``None`` when ``/proc`` does not tell.
    """
    schedulers = []
    for task in sorted(glob.glob('/proc/{}/task/*'.format(pid))):
        try:
            with open(os.path.join(task, 'comm')) as f:
                name = f.read().strip()
            if not _SCHEDULER_THREAD.match(name):
                continue
            with open(os.path.join(task, 'status')) as f:
                allowed = next(line for line in f
                               if line.startswith('Cpus_allowed_list:'))
        except (OSError, StopIteration):
            continue
        schedulers.append(_cpu_list(allowed.split(':', 1)[1].strip()))
    return schedulers or None


def _cpu_list(text):
    """``'0-2,5'`` as ``{0, 1, 2, 5}``."""
    cpus = set()
    for part in text.split(','):
        first, _, last = part.partition('-')
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus
