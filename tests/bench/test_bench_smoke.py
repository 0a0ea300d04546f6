"""scripts/bench, run tiny: it starts a server, measures the baseline and prints the table."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _baseline_harness(
    postgres_server_url: str, out: Path, *, requests: int, duration: int
) -> dict[str, Any]:
    """scripts/bench's Python entry, baseline only, 4 clients, on this PostgreSQL
    (the harness creates and drops its own database there)."""
    return {
        "args": [
            sys.executable,
            "-m",
            "loadgen",
            "--scenario",
            "baseline",
            "--concurrency",
            "4",
            "--requests",
            str(requests),
            "--duration",
            str(duration),
            "--out",
            str(out),
        ],
        "env": {
            **os.environ,
            "PYTHONPATH": str(ROOT / "scripts"),
            "CONCERT_DATABASE_URL": postgres_server_url,
        },
        "cwd": ROOT,
    }


@pytest.mark.slow
def test_the_harness_prints_the_table_with_the_baseline(
    postgres_server_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    finished = subprocess.run(
        **_baseline_harness(postgres_server_url, out, requests=200, duration=3),
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


@pytest.mark.slow
def test_a_paced_junk_storm_sends_at_its_rate_and_says_so(
    postgres_server_url: str, tmp_path: Path
) -> None:
    """--junk-rate: the botnet sends on a schedule, answered or not, and the
    targets name the rate (another experiment than the closed-loop storm)."""
    out = tmp_path / "bench"
    harness = _baseline_harness(postgres_server_url, out, requests=40, duration=2)
    harness["args"][harness["args"].index("baseline")] = "junk-storm"
    harness["args"] += ["--junk-rate", "50"]
    harness["env"]["CONCERT_PASSWORD_HASH_COST"] = "10"  # the cheapest the server allows
    finished = subprocess.run(**harness, capture_output=True, text=True, timeout=180)
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    [junk] = [r for r in summary["rows"] if r["name"] == "SignIn (junk)"]
    # 2 s plus the warm-ups before and after the fans (3 s each) at 50/s.
    assert 300 <= junk["answered"] <= 401, junk
    assert "a fan's SignIn p99 behind junk paced at 50/s" in finished.stdout


@pytest.mark.slow
def test_ctrl_c_stops_the_harness_and_everything_it_started(
    postgres_server_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    harness = subprocess.Popen(
        **_baseline_harness(postgres_server_url, out, requests=10_000_000, duration=60),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob("*.plan.json")):  # the load generator has its plan
            assert harness.poll() is None, harness.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the baseline stage never started"
            time.sleep(0.1)
        time.sleep(1.0)
        [log] = out.glob("server-*.log")
        port = int(log.stem.rpartition("-")[2])
        harness.send_signal(signal.SIGINT)  # what the terminal sends on Ctrl-C
        _, stderr = harness.communicate(timeout=20)
    finally:
        if harness.poll() is None:
            harness.kill()
    assert harness.returncode == 130, stderr[-3000:]
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    # The server it started no longer listens.
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
