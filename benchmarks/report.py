# SPDX-License-Identifier: Apache-2.0
"""The results table, the goal check, and the JSON file.

One table for the whole run, one row per case and implementation. The
ratio column divides a row's rate by its baseline's (raw pika doing the
same work); ``-`` where there is no raw counterpart (memory backend, idle,
RSS, threads). ``CPU%`` is process CPU time over wall time of the timed
window, including the RPC server processes; ``srv%`` is the servers' part.
It may exceed 100: the library uses an I/O thread, and there are 2 cores.
"""

import json
import os

__all__ = ['format_table', 'evaluate_goals', 'format_goals', 'write_json']

_COLUMNS = [
    ('case', 'label', '{}'),
    ('implementation', 'impl', '{}'),
    ('rate', 'rate', '{:,.0f}'),
    ('unit', 'unit', '{}'),
    ('ratio', 'ratio', '{:.2f}x'),
    ('p50 ms', 'p50_ms', '{:.3f}'),
    ('p99 ms', 'p99_ms', '{:.3f}'),
    ('CPU%', 'cpu_pct', '{:.1f}'),
    ('srv%', 'child_pct', '{:.1f}'),
    ('RSS MB', 'rss_mb', '{:.1f}'),
    ('notes', 'notes', '{}'),
]


def _cell(row, key, fmt):
    if key == 'notes':
        text = row.get('notes') or ''
        if row.get('error'):
            return 'ERROR: ' + row['error']
        failed = row.get('failed_runs') or []
        if failed:
            text = '; '.join(t for t in (text, '{} run(s) failed: {}'.format(
                len(failed), failed[0])) if t)
        return text
    value = row.get(key)
    if key == 'child_pct' and not value:
        return '-'
    if value is None or value == '':
        return '-'
    if key == 'cpu_pct' and value < 10:
        return '{:.2f}'.format(value)   # idle CPU: show what 0.1 hides
    return fmt.format(value)


def format_table(rows):
    """Return the rows as one aligned plain-text table."""
    header = [title for title, _, _ in _COLUMNS]
    body = [[_cell(r, key, fmt) for _, key, fmt in _COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in [header] + body)
              for i in range(len(header))]
    numeric = {2, 4, 5, 6, 7, 8, 9}

    def line(cells):
        out = []
        for i, cell in enumerate(cells):
            last = i == len(cells) - 1
            if last:
                out.append(cell)
            elif i in numeric:
                out.append(cell.rjust(widths[i]))
            else:
                out.append(cell.ljust(widths[i]))
        return '  '.join(out).rstrip()

    rule = '  '.join('-' * w for w in widths[:-1]) + '  ' + '-' * 5
    return '\n'.join([line(header), rule] + [line(c) for c in body])


def _find(rows, label, impl_prefix):
    for row in rows:
        if row['label'] == label and row['impl'].startswith(impl_prefix):
            return row
    return None


def _ratio(rows, label, impl):
    row = _find(rows, label, impl)
    return row and row.get('ratio')


def _p99_ratio(rows):
    lib, base = _find(rows, 'rpc-seq', 'library'), _find(rows, 'rpc-seq', 'raw')
    if lib and base and lib.get('p99_ms') and base.get('p99_ms'):
        return lib['p99_ms'] / base['p99_ms']
    return None


def _threads_ratio(rows):
    threaded = _find(rows, 'rpc-threads', 'library 8')
    seq = _find(rows, 'rpc-threads', 'library sequential')
    if threaded and seq and threaded.get('rate') and seq.get('rate'):
        return threaded['rate'] / seq['rate']
    return None


def _field(label, impl, key):
    def get(rows):
        row = _find(rows, label, impl)
        return row and row.get(key)
    return get


def _default_consume(rows):
    for row in rows:
        if row['case'] == 'consume' and 'default' in row['impl']:
            return row.get('ratio')
    return None


#: (description, how to read the value, comparison, target)
GOALS = [
    ('publish-transient library / raw unconfirmed',
     lambda r: _ratio(r, 'publish-transient', 'library'), '>=', 1.5),
    ('publish-durable library / raw persistent',
     lambda r: _ratio(r, 'publish-durable', 'library'), '>=', 0.8),
    ('consume P=1 library / raw',
     lambda r: _ratio(r, 'consume P=1', 'library'), '>=', 0.9),
    ('consume P=100 library / raw',
     lambda r: _ratio(r, 'consume P=100', 'library'), '>=', 0.9),
    ('consume library default / raw P=100', _default_consume, '>=', 0.8),
    ('rpc-seq library / raw calls/s',
     lambda r: _ratio(r, 'rpc-seq', 'library'), '>=', 0.9),
    ('rpc-seq library p99 / raw p99', _p99_ratio, '<=', 1.3),
    ('rpc-threads 8 threads / sequential', _threads_ratio, '>=', 2.0),
    ('idle consumer CPU%', _field('idle', 'library consumer', 'cpu_pct'),
     '<', 1.0),
    ('idle rpc wait CPU%', _field('idle', 'library rpc wait', 'cpu_pct'),
     '<', 1.0),
    ('rss growth MB', _field('rss', 'library', 'rss_growth_mb'), '<', 10.0),
]

_COMPARE = {'>=': lambda a, b: a >= b, '<=': lambda a, b: a <= b,
            '<': lambda a, b: a < b}


def evaluate_goals(rows):
    """Check the rows against the project's goals.

    Goals whose case did not run (or failed) are left out.
    """
    results = []
    for text, read, op, target in GOALS:
        value = read(rows)
        if value is None:
            continue
        results.append({'goal': text, 'value': value, 'op': op,
                        'target': target,
                        'met': _COMPARE[op](value, target)})
    return results


def format_goals(goals):
    return '\n'.join('  {:<4} {:<45} {:8.2f} (goal {} {})'.format(
        'ok' if g['met'] else 'MISS', g['goal'], g['value'], g['op'],
        g['target']) for g in goals)


def write_json(path, document):
    """Write ``document`` to ``path`` atomically (temp file, rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(document, f, indent=1, sort_keys=False)
        f.write('\n')
    os.replace(tmp, path)
