"""The server's own view during a stage, read from its /metrics endpoint.

The load generator sees each call's latency from outside; the server's
`concert_event_loop_lag_seconds` says whether its event loop was the
bottleneck (lag near the calls' latency) or the calls waited elsewhere (the
host's CPU, grpc's queue of calls not yet accepted). Read before and after a
stage; the difference of the cumulative buckets is the stage's.
"""

from __future__ import annotations

import math
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

LOOP_LAG = "concert_event_loop_lag_seconds"
Buckets = dict[float, float]  # upper bound (seconds) -> cumulative count


def histogram(address: str, name: str) -> Buckets:
    """The cumulative buckets of an unlabelled histogram at http://ADDRESS/metrics."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    buckets: Buckets = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


def quantile_bound(before: Buckets, after: Buckets, quantile: float) -> float:
    """The upper bound of the bucket holding the quantile of what was observed
    between the two readings (inf when it lies past the last finite bound)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return math.nan
    for bound, count in zip(bounds, counts, strict=True):
        if count >= quantile * total:
            return bound
    return math.inf
