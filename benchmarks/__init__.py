# SPDX-License-Identifier: Apache-2.0
"""Benchmarks of ``occo.util.communication`` against raw pika.

Run from the repository root::

    python -m benchmarks            # full run, under 10 minutes
    python -m benchmarks --quick    # smoke run

See ``benchmarks/README.rst`` for the cases and how to read the table.

Modules, one job each:

* :mod:`benchmarks.__main__`: command line, one child process per case,
  table, JSON;
* :mod:`benchmarks.cases`: what each case runs, interleaving, rows;
* :mod:`benchmarks.lib`: the work through the library;
* :mod:`benchmarks.raw`: the same work on pika's ``BlockingConnection``;
* :mod:`benchmarks.procs`: RPC echo servers in spawned processes;
* :mod:`benchmarks.measure`: timers, CPU, RSS, percentiles, medians;
* :mod:`benchmarks.workload`: the message, the counts, the broker address;
* :mod:`benchmarks.report`: the table, the goals, the JSON file;
* :mod:`benchmarks.runner`: child-process entry point for one case.
"""
