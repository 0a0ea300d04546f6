"""py-spy on the server while a stage runs, summarised as the functions that cost the most.

`scripts/bench --profile` samples every server process (py-spy record
--subprocesses, non-blocking, so the server is not paused) for the whole of
each measured stage and writes the collapsed stacks (`LABEL.folded`, open in
any flame graph viewer) and a text summary (`LABEL.profile.txt`): for the
functions of this project and of the libraries it calls, the share of samples
in which they were on the stack (inclusive) and at its top (self).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Frames worth naming in the summary: ours, and the libraries on our hot path.
INTERESTING = ("server/", "psycopg", "grpc", "google/protobuf", "asyncio", "hashlib", "json")
TOP = 25


@contextmanager
def sampling(pid: int, folded: Path) -> Iterator[None]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    process = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--nonblocking",
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(folded),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def summarise(folded: Path) -> str:
    """The top functions by inclusive and by self samples, with their share."""
    inclusive: Counter[str] = Counter()
    itself: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short(frame) for frame in stack.split(";")]
        for frame in set(frames):
            if any(mark in frame for mark in INTERESTING):
                inclusive[frame] += count
        itself[frames[-1]] += count
    if total == 0:
        return "no samples\n"
    busy = total
    lines = [
        f"{total} samples of running threads (py-spy leaves out idle ones)",
        "",
        "inclusive (on the stack):",
        *(f"  {n / busy:6.1%}  {frame}" for frame, n in inclusive.most_common(TOP)),
        "",
        "self (at the top of the stack):",
        *(f"  {n / busy:6.1%}  {frame}" for frame, n in itself.most_common(TOP)),
    ]
    return "\n".join(lines) + "\n"


def _short(frame: str) -> str:
    # py-spy frames read "function (path/to/file.py:line)"; keep the path from
    # a recognisable root and drop the line (so a function is one entry).
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for root in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if root in path:
            path = path.split(root, 1)[1]
            break
    return f"{name} ({path})"
