# SPDX-License-Identifier: Apache-2.0
"""The benchmark suite runs end to end and writes its JSON.

A smoke test only: it checks that ``python -m benchmarks --quick`` works
and produces positive rates. It never checks speed; the numbers of a quick
run on a shared CI machine mean nothing.
"""

import json

import pytest

from conftest import run_benchmark

CASES = ['publish-transient', 'rpc-seq', 'memory']


@pytest.mark.broker
def test_benchmark_quick_run_writes_rows_with_positive_rates(tmp_path):
    out = tmp_path / 'b.json'
    proc = run_benchmark('--clients', 'none', '--cases', ','.join(CASES),
                         '--json', out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    # Runs on different processors differ more than runs on one: the
    # header names it, as the JSON and the charts do.
    cpu_model = results['environment']['cpu_model']
    assert cpu_model and '({})'.format(cpu_model) in proc.stdout.splitlines()[0]
    rows = results['rows']
    for case in CASES:
        case_rows = [r for r in rows if r['case'] == case]
        assert case_rows, 'no row for {}'.format(case)
        for row in case_rows:
            assert row['error'] is None, row
            assert row['rate'] > 0, row
    for row in rows:
        if row['case'] == 'publish-transient':   # the broker is local here
            assert row['broker_pct'] > 0, row
