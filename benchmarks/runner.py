# SPDX-License-Identifier: Apache-2.0
"""Run one case in this process and write its rows as JSON (child entry).

``python -m benchmarks`` starts ``python -m benchmarks.runner`` once per
case, so that

* a case that hangs despite its own timeouts is killed, with its server
  processes, and the run goes on;
* each case starts from a fresh interpreter: its RSS column is its own,
  not what earlier cases left behind.

Usage (internal)::

    python -m benchmarks.runner CASE WORKLOAD_JSON OUT_PATH
"""

import json
import sys
import traceback

from . import broker, measure
from .cases import CASES, error_text, make_row
from .workload import Workload


def run_case(name, workload):
    """Return the rows of case ``name``; an exception becomes an error row."""
    try:
        return CASES[name](workload)
    except Exception as e:  # reported in the table, the run goes on
        traceback.print_exc(file=sys.stderr)
        return [make_row(name, name, '-', '-', errors=[error_text(e)])]


def main(argv):
    name, workload_json, out_path = argv
    workload = Workload.from_dict(json.loads(workload_json))
    measure.watch_broker(broker.listening_pid(workload.host, workload.port))
    rows = run_case(name, workload)
    with open(out_path, 'w') as f:
        json.dump(rows, f)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
