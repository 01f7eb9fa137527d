# SPDX-License-Identifier: Apache-2.0
"""Fixtures of the fault-injection suite: a RabbitMQ node of its own.

Destructive tests kill connections and restart a broker, so they run on a
node this suite starts (own node name, ports and data directory under a
temporary directory) and always stops; the shared broker is not disturbed.
Each test records its figures; the suite prints them as one table at the
end (the table of ``docs/reliability.rst``) and writes them as JSON to
``$OCCO_FAULT_FIGURES`` when that is set.
"""

import json
import os

import pytest

from support.rabbitnode import RabbitNode

_FIGURES = []
_COLUMNS = ['scenario', 'messages', 'rate/s', 'faults', 'bad inputs', 'lost',
            'duplicates', 'longest pause s']


@pytest.fixture(scope='session')
def node():
    """A RabbitMQ node of the suite's own, running for the whole session."""
    with RabbitNode(name='occofault') as rabbit:
        yield rabbit


@pytest.fixture
def figures(request):
    """Record this test's figures: ``figures(messages=..., faults=...)``."""
    def record(**values):
        row = {'scenario': request.node.name.replace('test_', '', 1)}
        row.update(values)
        _FIGURES.append(row)
    return record


def pytest_terminal_summary(terminalreporter):
    if not _FIGURES:
        return
    rows = [[_cell(row.get(column)) for column in _COLUMNS] for row in _FIGURES]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLUMNS)]
    write = terminalreporter.write_line
    terminalreporter.section('reliability figures')
    write('  '.join(c.ljust(w) for c, w in zip(_COLUMNS, widths)))
    write('  '.join('-' * w for w in widths))
    for row in rows:
        write('  '.join(c.ljust(w) for c, w in zip(row, widths)))
    path = os.environ.get('OCCO_FAULT_FIGURES')
    if path:
        with open(path, 'w') as stream:
            json.dump(_FIGURES, stream, indent=2)


def _cell(value):
    if value is None:
        return '-'
    if isinstance(value, float):
        return '{:.2f}'.format(value)
    if isinstance(value, int):
        return '{:,}'.format(value)
    return str(value)
