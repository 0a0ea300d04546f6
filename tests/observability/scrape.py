"""Reading a /metrics endpoint over HTTP, as Prometheus does."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> Samples:
    """Every sample on http://127.0.0.1:PORT/metrics, keyed by (name, labels)."""

    def fetch() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            assert reply.status == 200
            assert reply.headers["Content-Type"].startswith("text/plain")
            return str(reply.read().decode())

    # A thread, so that the in-process server keeps serving on this loop.
    text = await asyncio.to_thread(fetch)
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, labels: Mapping[str, str] | None = None) -> float:
    """One sample's value; 0 when absent (a counter not yet touched)."""
    return samples.get((name, frozenset((labels or {}).items())), 0.0)


def rpc(service: str, method: str, kind: str = "unary") -> dict[str, str]:
    return {"grpc_type": kind, "grpc_service": service, "grpc_method": method}
