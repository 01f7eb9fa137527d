# SPDX-License-Identifier: Apache-2.0
"""Per-call latencies kept as a small CDF, for the RPC latency chart.

A run of 5,000 calls has 5,000 latencies; the JSON keeps :data:`POINTS` of
them per run (nearest-rank quantiles at evenly spaced ranks), enough to
draw the distribution without making the results file large. Runs of
the same row have the same number of calls, so the rows' runs can be
pooled by concatenating their points (:func:`pooled`).
"""

__all__ = ['POINTS', 'quantiles', 'keep', 'pooled']

#: Quantiles kept per run, at ranks ``(i + 0.5) / POINTS``.
POINTS = 200


def quantiles(latencies, points=POINTS):
    """``points`` latencies in milliseconds, at evenly spaced ranks."""
    ordered = sorted(latencies)
    n = len(ordered)
    return [round(1000.0 * ordered[min(n - 1, int((i + 0.5) * n / points))], 4)
            for i in range(points)]


def keep(sample):
    """Add ``latency_cdf_ms`` to ``sample``'s JSON if it has latencies."""
    latencies = getattr(sample, 'latencies', None)
    if latencies:
        sample.extra['latency_cdf_ms'] = quantiles(latencies)
    return sample


def pooled(row):
    """All runs' quantiles of ``row``, sorted; empty without latencies."""
    return sorted(v for run in row.get('runs') or ()
                  for v in run.get('latency_cdf_ms') or ())
