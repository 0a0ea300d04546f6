"""scripts/bench, run tiny: it starts a server, measures the baseline and prints the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_harness_prints_the_table_with_the_baseline(
    postgres_server_url: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "scripts"),
        # The harness creates (and drops) its own database on this server.
        "CONCERT_DATABASE_URL": postgres_server_url,
    }
    out = tmp_path / "bench"
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadgen",
            "--scenario",
            "baseline",
            "--concurrency",
            "4",
            "--requests",
            "200",
            "--duration",
            "3",
            "--out",
            str(out),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    lines = finished.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| scenario | method |"))
    for column in ("answered/s", "x baseline", "p50 ms", "p95 ms", "p99 ms", "peak RSS"):
        assert column in header
    row = next(line for line in lines if "Health/Check (baseline)" in line)
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[4] == "200"  # every call of the bounded phase was made
    assert cells[6] == "1.00"  # the baseline against itself
    assert "OK:200" in cells[-1]
    summary = json.loads((out / "summary.json").read_text())
    [measured] = summary["rows"]
    assert measured["answered"] == 200
    assert 0 < measured["peak_rss_mib"] < 1024
    assert (out / "baseline-w1-c4-scon.png").stat().st_size > 0
