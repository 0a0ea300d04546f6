"""The load generator's client side, shared by its two kinds of phase (drive.py's
planned calls and onsale.py's crowd of fans): the channels to the server and
the recorder of every call's outcome."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

# Each channel its own TCP connection: with CONCERT_WORKERS > 1 the kernel
# spreads connections (not calls) across the workers sharing the port.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]
CALL_TIMEOUT_SECONDS = 30.0


@dataclass
class Recorder:
    """The outcomes of one phase (or one step of the on-sale day)."""

    name: str
    method: str
    starts: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    first_errors: dict[str, str] = field(default_factory=dict)
    began: float = 0.0
    ended: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self, started: float, ended: float, code: str, message: str = "") -> None:
        self.starts.append(started)
        self.latencies.append(ended - started)
        self.codes.append(code)
        if code != "OK" and code not in self.first_errors:
            self.first_errors[code] = message[:300]

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "began": self.began,
            "ended": self.ended,
            "starts": self.starts,
            "latencies": self.latencies,
            "codes": self.codes,
            "status_counts": dict(Counter(self.codes)),
            "first_errors": self.first_errors,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Recorder:
        fields = ("name", "method", "starts", "latencies", "codes", "first_errors", "began")
        recorder = cls(**{key: data[key] for key in fields})
        recorder.ended, recorder.extra = data["ended"], data["extra"]
        return recorder


class Channels:
    def __init__(self, target: str, count: int) -> None:
        self.target = target
        self.channels = [
            grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(count)
        ]

    def unary(self, index: int, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
        channel = self.channels[index % len(self.channels)]
        return channel.unary_unary(method)  # bytes in, bytes out

    def stream(self, index: int, method: str) -> grpc.aio.UnaryStreamMultiCallable:
        channel = self.channels[index % len(self.channels)]
        return channel.unary_stream(method)

    async def ready(self) -> None:
        await asyncio.gather(*(c.channel_ready() for c in self.channels))

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.channels))


async def run_drive(plan_path: Path, result_path: Path, env: dict[str, str] | None = None) -> int:
    """`python -m loadgen.drive PLAN RESULT` in a session of its own (its own
    autogroup, and a Ctrl-C of ours does not reach it by the terminal); awaited,
    not run blocking, so that a cancel kills it at once. Its exit code."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadgen.drive",
        str(plan_path),
        str(result_path),
        env=env,
        start_new_session=True,
    )
    try:
        return await process.wait()
    except asyncio.CancelledError:
        process.kill()
        await process.wait()
        raise
