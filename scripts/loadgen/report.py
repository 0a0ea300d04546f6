"""From recorded calls to figures: the per-method table, the targets, the charts."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Deliberate answers: the server decided. Anything else is the server failing
# (or not yet implementing) the call, and does not count as throughput.
FAILURES = {
    "UNKNOWN",
    "INTERNAL",
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "UNIMPLEMENTED",
    "CANCELLED",
    "DATA_LOSS",
}
MIB = 1024 * 1024


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass
class Row:
    """One method (or step) measured in one run."""

    scenario: str
    name: str
    workers: int
    concurrency: int
    calls: int
    seconds: float
    answered: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    codes: dict[str, int]
    peak_rss_mib: float  # the largest server process during the phase
    baseline_rate: float = math.nan
    # Average cores busy during the phase: server tree, PostgreSQL, load generator.
    server_cores: float = math.nan
    database_cores: float = math.nan
    client_cores: float = math.nan
    first_errors: dict[str, str] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Answered calls per second (see FAILURES)."""
        return self.answered / self.seconds if self.seconds > 0 else 0.0

    @property
    def ratio(self) -> float:
        return self.rate / self.baseline_rate if self.baseline_rate > 0 else math.nan

    def as_json(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in self.__dict__.items()},
            "rate": self.rate,
            "ratio": self.ratio,
        }


def row_from(
    result: dict[str, Any], scenario: str, workers: int, concurrency: int, peak_rss: int
) -> Row:
    latencies = sorted(result["latencies"])
    codes = Counter(result["codes"])
    answered = sum(n for code, n in codes.items() if code not in FAILURES)
    return Row(
        scenario=scenario,
        name=result["name"],
        workers=workers,
        concurrency=concurrency,
        calls=len(latencies),
        seconds=max(0.0, result["ended"] - result["began"]),
        answered=answered,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p95_ms=percentile(latencies, 0.95) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        codes=dict(codes.most_common()),
        peak_rss_mib=peak_rss / MIB,
        first_errors=result.get("first_errors", {}),
        client_cores=result.get("extra", {}).get("client_cores", math.nan),
    )


def _codes(codes: dict[str, int]) -> str:
    return " ".join(f"{code}:{n}" for code, n in codes.items())


def table(rows: list[Row]) -> str:
    """A markdown table, one line per measured method."""
    header = (
        "| scenario | method | workers | clients | calls | answered/s | x baseline "
        "| p50 ms | p95 ms | p99 ms | peak RSS/proc MiB | CPU server/PG/client | status codes |"
    )
    lines = [header, "|" + "---|" * 13]
    for r in rows:
        lines.append(
            f"| {r.scenario} | {r.name} | {r.workers} | {r.concurrency} | {r.calls} "
            f"| {r.rate:,.0f} | {r.ratio:.2f} | {r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.p99_ms:.1f} "
            f"| {r.peak_rss_mib:.0f} "
            f"| {r.server_cores:.2f}/{r.database_cores:.2f}/{r.client_cores:.2f} "
            f"| {_codes(r.codes)} |"
        )
    return "\n".join(lines)


def chart(
    results: list[dict[str, Any]], memory: list[tuple[float, int]], path: Path, title: str
) -> None:
    """Throughput and p99 latency per second of every phase, and server RSS, over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in results if r["method"] and r["latencies"]]
    if not measured:
        return
    origin = min(r["began"] for r in measured)
    figure, (rate_axis, latency_axis, memory_axis) = plt.subplots(
        3, 1, figsize=(11, 9), sharex=True
    )
    for result in measured:
        buckets: dict[int, list[float]] = {}
        for start, latency in zip(result["starts"], result["latencies"], strict=True):
            buckets.setdefault(int(start + latency - origin), []).append(latency)
        seconds = sorted(buckets)
        rate_axis.plot(seconds, [len(buckets[s]) for s in seconds], label=result["name"])
        latency_axis.plot(
            seconds,
            [percentile(sorted(buckets[s]), 0.99) * 1000 for s in seconds],
            label=result["name"],
        )
    if memory:
        memory_axis.plot(
            [t - origin for t, _ in memory], [rss / MIB for _, rss in memory], color="black"
        )
    rate_axis.set_ylabel("calls completed / s")
    rate_axis.legend(fontsize=7, loc="upper right")
    latency_axis.set_ylabel("p99 latency (ms)")
    latency_axis.set_yscale("log")
    memory_axis.set_ylabel("largest server RSS (MiB)")
    memory_axis.set_xlabel("seconds since the first phase began")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
