"""scripts/bench: the load test, from an empty machine to the tables.

For every combination of --workers, --concurrency and --scenario: a fresh
database, a fresh server (`python -m server`, CONCERT_WORKERS=workers), data
prepared in bulk, then for each measured stage a separate load generator
process (loadgen.drive) that first measures the baseline, Health/Check, and
then the stage, with the same client and the same bounds. Prints a table per
method (throughput, latency percentiles, status codes, peak server RSS, the
ratio to the baseline measured just before it) and the issue's targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# The orchestrator starts subprocesses while its channel is open; they exec at
# once, so gRPC's fork handlers have nothing to protect (and would warn).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc
import psycopg

from loadgen import cluster, report, server_metrics
from loadgen import profile as profiling
from loadgen.client import run_drive
from loadgen.prepare import Preparer, measure_hash_seconds
from loadgen.scenarios import SCENARIOS, Options, Setup, baseline
from loadgen.targets import evaluate

SCRIPTS_DIR = Path(__file__).resolve().parent.parent
# Admission wide open for everything but the on-sale day, which sets its own.
OPEN_CAPACITY = 1_000_000


def _int_list(raw: str) -> list[int]:
    values = [int(part) for part in raw.split(",") if part.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def _on_off_list(raw: str) -> list[str]:
    values = [part.strip() for part in raw.split(",") if part.strip()]
    if not values or any(v not in ("on", "off") for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of on/off")
    return values


def _scenarios(raw: str) -> list[str]:
    names = [part.strip() for part in raw.split(",") if part.strip()]
    for name in names:
        if name not in SCENARIOS:
            raise argparse.ArgumentTypeError(
                f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}"
            )
    return names


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument(
        "--scenario",
        type=_scenarios,
        default=["methods"],
        help=f"comma-separated, from: {', '.join(SCENARIOS)} (default: methods)",
    )
    parser.add_argument(
        "--concurrency", type=_int_list, default=[64], help="clients in flight, e.g. 16,64"
    )
    parser.add_argument(
        "--requests", type=int, default=3000, help="at most this many calls per phase"
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="at most this many seconds per phase"
    )
    parser.add_argument("--workers", type=_int_list, default=[1], help="server processes, e.g. 1,2")
    parser.add_argument(
        "--synchronous-commit",
        type=_on_off_list,
        default=["on"],
        help="PostgreSQL synchronous_commit of the bench database, e.g. on,off: 'off' shows "
        "what waiting for the WAL flush at each commit costs (a diagnosis, not a setting)",
    )
    parser.add_argument("--users", type=int, default=10_000, help="on-sale day: fans")
    parser.add_argument("--seats", type=int, default=1_000, help="seats of the on-sale date")
    parser.add_argument(
        "--capacity", type=int, default=1_000, help="on-sale day: admission capacity"
    )
    parser.add_argument(
        "--sale-seconds", type=float, default=120.0, help="on-sale day: give up after this long"
    )
    parser.add_argument(
        "--junk-rate",
        type=float,
        default=0.0,
        help="junk-storm: the botnet's calls a second, sent whether answered or not (at most "
        "--concurrency in flight), e.g. what a per-address limit in a proxy lets through; "
        "0 (the default): each junk client calls again as soon as it is answered",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the server during every stage"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="where results go")
    args = parser.parse_args(argv)
    if args.seats > 10_000:
        parser.error("--seats: one date has at most 10,000 seats")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        # The server, the load generator and the databases run in sessions of
        # their own (they never see the terminal's SIGINT) and were stopped by
        # the context managers on the way here.
        print("\nscripts/bench: interrupted; what it started is stopped", file=sys.stderr)
        return 130


async def _run(args: argparse.Namespace) -> int:
    hash_cost = int(os.environ.get("CONCERT_PASSWORD_HASH_COST") or 14)
    rows: list[report.Row] = []
    extras: list[dict[str, Any]] = []
    machine = _machine()
    print(f"machine: {machine}", file=sys.stderr)
    started = time.monotonic()
    with cluster.postgres(os.environ.get("CONCERT_DATABASE_URL")) as postgres:
        for synchronous_commit, workers, concurrency in [
            (sc, w, c)
            for sc in args.synchronous_commit
            for w in args.workers
            for c in args.concurrency
        ]:
            options = Options(
                concurrency=concurrency,
                requests=args.requests,
                duration=args.duration,
                users=args.users,
                seats=args.seats,
                capacity=args.capacity,
                hash_cost=hash_cost,
                sale_seconds=args.sale_seconds,
                synchronous_commit=synchronous_commit,
                junk_rate=args.junk_rate,
            )
            for scenario in args.scenario:
                new_rows, new_extras = await _scenario(
                    scenario, workers, options, postgres, args.out, args.profile
                )
                rows += new_rows
                extras += new_extras
                print(report.table(new_rows), file=sys.stderr)
    text = report.table(rows)
    verdicts = evaluate(rows, extras)
    print()
    print(text)
    print()
    for extra in extras:
        print(json.dumps(extra))
    print()
    print(verdicts)
    print(f"\n{len(rows)} rows in {time.monotonic() - started:.0f}s; results in {args.out}/")
    (args.out / "table.md").write_text(text + "\n\n" + verdicts + "\n")
    (args.out / "summary.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "args": {k: str(v) for k, v in vars(args).items()},
                "rows": [r.as_json() for r in rows],
                "extras": extras,
            },
            indent=1,
            default=str,
        )
    )
    return 0


async def _scenario(
    scenario: str,
    workers: int,
    options: Options,
    postgres: cluster.Postgres,
    out: Path,
    profile: bool,
) -> tuple[list[report.Row], list[dict[str, Any]]]:
    rows: list[report.Row] = []
    extras: list[dict[str, Any]] = []
    prepares = SCENARIOS[scenario] or [None]
    if options.synchronous_commit != "on":
        scenario_label = f"{scenario} (sync commit {options.synchronous_commit})"
    else:
        scenario_label = scenario
    with cluster.fresh_database(postgres.url, options.synchronous_commit) as database_url:
        with cluster.server(database_url, workers, out, postgres) as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                preparer = Preparer(channel, cluster.ADMIN_KEY)
                setup = Setup(database_url, preparer, cluster.ADMIN_KEY, options)
                if scenario != "baseline":
                    await preparer.set_capacity(OPEN_CAPACITY)
                for prepare in prepares:
                    label = (
                        f"{scenario}-w{workers}-c{options.concurrency}"
                        f"-sc{options.synchronous_commit}"
                    )
                    extra: dict[str, Any] = {
                        "scenario": scenario_label,
                        "workers": workers,
                        "concurrency": options.concurrency,
                    }
                    if scenario in ("storm", "junk-storm"):
                        # The KDF's own limit, measured now, on this machine, server idle.
                        seconds = measure_hash_seconds(options.hash_cost)
                        extra["hash_seconds"] = seconds
                        extra["kdf_limit_per_second"] = (os.cpu_count() or 1) / seconds
                    if scenario == "junk-storm":
                        extra["junk_rate"] = options.junk_rate
                    phases = [] if prepare is None else await prepare(setup)
                    if prepare is not None:
                        label = (
                            f"{prepare.__name__}-w{workers}-c{options.concurrency}"
                            f"-sc{options.synchronous_commit}"
                        )
                    stages = [baseline(options), phases]
                    lag_before = _loop_lag(server)
                    if profile:
                        folded = out / f"{label}.folded"
                        with profiling.sampling(server.process.pid, folded):
                            results = await _drive(server.address, options, stages, out, label)
                        summary = out / f"{label}.profile.txt"
                        summary.write_text(profiling.summarise(folded))
                        extra["profile"] = str(summary)
                    else:
                        results = await _drive(server.address, options, stages, out, label)
                    extra.update(_loop_lag_figures(lag_before, _loop_lag(server)))
                    base = next(r for r in results if r["name"].endswith("(baseline)"))
                    base_row = _row(base, scenario_label, workers, options, server)
                    for result in results:
                        if not result["method"]:
                            extra.update(result["extra"])
                            continue
                        row = _row(result, scenario_label, workers, options, server)
                        row.baseline_rate = base_row.rate
                        rows.append(row)
                    if scenario == "onsale":
                        extra.update(await _oversold(database_url, phases[0]["date_id"]))
                    memory = [
                        (t, max(tree.values(), default=0)) for t, tree in server.memory.samples
                    ]
                    report.chart(results, memory, out / f"{label}.png", label)
                    extra["chart"] = str(out / f"{label}.png")
                    extra["peak_rss_mib_per_process"] = (
                        server.memory.peak_per_process() / report.MIB
                    )
                    extra["peak_rss_mib_total"] = server.memory.peak_total() / report.MIB
                    extras.append(extra)
    return rows, extras


def _loop_lag(server: cluster.ServerProcess) -> server_metrics.Buckets | None:
    if server.metrics_address is None:
        return None
    return server_metrics.histogram(server.metrics_address, server_metrics.LOOP_LAG)


def _loop_lag_figures(
    before: server_metrics.Buckets | None, after: server_metrics.Buckets | None
) -> dict[str, float | None]:
    """The server's event-loop lag over the baseline and the stage, as bucket
    bounds ("p99 at most 5 ms"): near the calls' latency, the loop was the
    bottleneck; far under it, the calls waited elsewhere."""
    if before is None or after is None:
        return {}
    figures: dict[str, float | None] = {}
    for name, quantile in (("p50", 0.5), ("p99", 0.99)):
        bound = server_metrics.quantile_bound(before, after, quantile)
        # JSON has no infinity: past the last bucket (2.5 s) reads as null.
        figures[f"loop_lag_{name}_at_most_ms"] = bound * 1000 if math.isfinite(bound) else None
    return figures


def _row(
    result: dict[str, Any], scenario: str, workers: int, options: Options, server: Any
) -> report.Row:
    peak = server.memory.peak_per_process(result["began"], result["ended"])
    row = report.row_from(result, scenario, workers, options.concurrency, peak)
    row.server_cores, row.database_cores = server.memory.cores(result["began"], result["ended"])
    return row


async def _drive(
    address: str, options: Options, stages: list[list[dict[str, Any]]], out: Path, label: str
) -> list[dict[str, Any]]:
    stages = [stage for stage in stages if stage]
    plan = {
        "target": address,
        "channels": max(2, min(16, options.concurrency // 4)),
        "stages": stages,
    }
    plan_path = out / f"{label}.plan.json"
    result_path = out / f"{label}.result.json"
    plan_path.write_text(json.dumps(plan))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SCRIPTS_DIR), os.environ.get("PYTHONPATH", "")]),
    }
    code = await run_drive(plan_path, result_path, env)
    if code != 0:
        raise subprocess.CalledProcessError(code, "loadgen.drive")
    results: list[dict[str, Any]] = json.loads(result_path.read_text())
    # The plan and raw calls are large and rebuilt by every run: keep the summary only.
    plan_path.unlink()
    result_path.unlink()
    return results


async def _oversold(database_url: str, date_id: str) -> dict[str, Any]:
    """What the database says was sold; oversold: seats paid twice, or beyond the date."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*), count(DISTINCT (r.date_id, r.seat_number))"
            " FROM payments p JOIN reservations r ON r.id = p.reservation_id"
            " WHERE p.state = 'completed' AND r.date_id = %s",
            (date_id,),
        )
        paid, distinct_seats = await cursor.fetchone() or (0, 0)
        cursor = await conn.execute(
            "SELECT total_seat_count, sold_seat_count,"
            " (SELECT count(*) FROM seats WHERE date_id = d.id AND sold)"
            " FROM concert_dates d WHERE id = %s",
            (date_id,),
        )
        total, sold_counter, sold_seats = await cursor.fetchone() or (0, 0, 0)
    return {
        "db_completed_payments": paid,
        "db_seats_sold": sold_seats,
        "db_sold_seat_count": sold_counter,
        "db_total_seats": total,
        "oversold": (paid - distinct_seats) + max(0, sold_seats - total),
    }


def _machine() -> dict[str, Any]:
    import psutil

    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "kernel": platform.release(),
        "cpu": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
