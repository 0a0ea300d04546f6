"""The load generator process: drives planned gRPC calls and records every outcome.

    python -m loadgen.drive PLAN.json RESULT.json

It runs apart from the orchestrator (which prepares data and samples the
server's memory) so that its CPU is the client's and nothing else. A plan is a
list of stages run one after the other; a stage is a list of phases run at the
same time (a sign-in storm beside a GetQueueStatus probe). A phase sends
prepared, already-serialised requests (bytes in, bytes out: the client spends
no time on protobuf) from `concurrency` coroutines spread over several
channels, until `requests` calls are done or `duration` seconds have passed,
whichever comes first. The on-sale day is a phase of its own kind, a scripted
crowd of fans (see onsale.py).

Every call's start (monotonic, comparable across processes), latency and
status code are recorded; the orchestrator turns them into the tables.

A phase with `honour_retry_info` plays clients built from our client guide:
refused with a RetryInfo (RESOURCE_EXHAUSTED, UNAVAILABLE), a client waits the
delay it was given, plus up to half again as jitter, before its next call.
Without it a client calls again at once, as a bot does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tqdm import tqdm

from loadgen.client import CALL_TIMEOUT_SECONDS, Channels, Recorder, run_drive
from loadgen.onsale import run_onsale
from server.cpu import yield_cpu


async def run_phase(channels: Channels, phase: dict[str, Any], progress: tqdm) -> Recorder:
    method = phase["method"]
    calls = [
        (base64.b64decode(c["request"]), tuple(tuple(m) for m in c["metadata"]))
        for c in phase["calls"]
    ]
    requests = int(phase["requests"])
    recorder = Recorder(phase["name"], method)
    # A phase measured against another one (the fans behind a storm) starts once that is going.
    await asyncio.sleep(float(phase.get("start_after", 0.0)))
    issued = 0
    recorder.began = time.monotonic()
    cpu_began = time.process_time()
    deadline = recorder.began + float(phase["duration"])

    honour_retry_info = bool(phase.get("honour_retry_info"))

    async def send(call: grpc.aio.UnaryUnaryMultiCallable, index: int, started: float) -> float:
        """Make one call and record it; the seconds the server asked to wait, if any."""
        request, metadata = calls[index % len(calls)]
        wait = 0.0
        try:
            await call(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as error:
            recorder.record(started, time.monotonic(), error.code().name, error.details() or "")
            wait = _retry_delay(error)
        else:
            recorder.record(started, time.monotonic(), "OK")
        progress.update()
        return wait

    async def client(index: int) -> None:
        """Closed loop: the next call as soon as the last one is answered."""
        nonlocal issued
        call = channels.unary(index, method)
        while issued < requests and time.monotonic() < deadline:
            issued += 1
            wait = await send(call, issued - 1, time.monotonic())
            if honour_retry_info and wait:
                pause = min(wait * random.uniform(1.0, 1.5), deadline - time.monotonic())
                await asyncio.sleep(max(0.0, pause))

    async def paced(rate: float, in_flight: asyncio.Semaphore) -> None:
        """Open loop: call i is due at began + i / rate, answered or not (a probe
        that measures latency without taking the machine from what it probes).
        Latency counts from the due time, so a stalled server cannot hide its
        queue by slowing the probe down (no coordinated omission)."""
        nonlocal issued
        pending: set[asyncio.Task[None]] = set()

        async def one(index: int, due: float) -> None:
            async with in_flight:
                await send(channels.unary(index, method), index, due)

        while issued < requests:
            due = recorder.began + issued / rate
            if due >= deadline:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            task = asyncio.create_task(one(issued, due))
            pending.add(task)
            task.add_done_callback(pending.discard)
            issued += 1
        await asyncio.gather(*pending)

    if phase.get("rate"):
        await paced(float(phase["rate"]), asyncio.Semaphore(int(phase["concurrency"])))
    else:
        await asyncio.gather(*(client(i) for i in range(int(phase["concurrency"]))))
    recorder.ended = time.monotonic()
    # The load generator's own CPU: near 1.0 means the client, not the server, set the pace.
    wall = recorder.ended - recorder.began
    recorder.extra["client_cores"] = (time.process_time() - cpu_began) / wall if wall else 0.0
    return recorder


def _retry_delay(error: grpc.aio.AioRpcError) -> float:
    """The RetryInfo delay of a refusal, in seconds; 0 when it carries none."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return 0.0


async def run_plan(plan: dict[str, Any]) -> list[dict[str, Any]]:
    channels = Channels(plan["target"], int(plan["channels"]))
    await channels.ready()
    results: list[dict[str, Any]] = []
    try:
        for stage in plan["stages"]:
            total = sum(
                int(p["requests"]) if p.get("kind", "calls") == "calls" else int(p["fans"])
                for p in stage
            )
            label = " + ".join(p["name"] for p in stage)
            with tqdm(
                total=total, desc=label[:60], unit="call", file=sys.stderr, mininterval=1.0
            ) as bar:
                recorders = await asyncio.gather(*(_run(channels, p, bar) for p in stage))
            for group in recorders:
                results.extend(r.as_json() for r in group)
    finally:
        await channels.close()
    return results


async def _run(channels: Channels, phase: dict[str, Any], progress: tqdm) -> list[Recorder]:
    if phase.get("own_process"):
        return await _run_apart(channels.target, len(channels.channels), phase)
    if phase.get("kind", "calls") == "calls":
        return [await run_phase(channels, phase, progress)]
    if phase["kind"] == "onsale":
        return await run_onsale(channels, phase, progress)
    raise ValueError(f"unknown phase kind {phase['kind']!r}")


async def _run_apart(target: str, channel_count: int, phase: dict[str, Any]) -> list[Recorder]:
    """A phase driven by a load generator process of its own: an attacker's
    client must not share an event loop (and so its delays) with the fans'
    clients it is measured against. `niceness` lowers that process's priority,
    so that on a small shared machine it stands for clients whose CPU is not
    the server's (a botnet's is its own)."""
    with tempfile.TemporaryDirectory(prefix="loadgen-") as folder:
        plan_path, result_path = Path(folder, "plan.json"), Path(folder, "result.json")
        alone = {key: value for key, value in phase.items() if key != "own_process"}
        plan = {"target": target, "channels": channel_count, "stages": [[alone]]}
        plan["niceness"] = int(phase.get("niceness", 0))
        await asyncio.to_thread(plan_path.write_text, json.dumps(plan))
        code = await run_drive(plan_path, result_path)
        if code != 0:
            raise RuntimeError(f"the load generator of {phase['name']!r} exited with {code}")
        results = json.loads(await asyncio.to_thread(result_path.read_text))
        return [Recorder.from_json(r) for r in results]


def main(argv: list[str]) -> int:
    plan_path, result_path = argv
    with open(plan_path) as handle:
        plan = json.load(handle)
    if plan.get("niceness"):
        yield_cpu(int(plan["niceness"]))
    results = asyncio.run(run_plan(plan))
    with open(result_path, "w") as handle:
        json.dump(results, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
