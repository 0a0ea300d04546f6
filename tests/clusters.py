"""Embedded PostgreSQL clusters a test owns, and how to crash one."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from server.db.embedded import EmbeddedCluster, open_cluster


@contextmanager
def own_cluster() -> Iterator[EmbeddedCluster]:
    """A PostgreSQL of the test's own, in a temp dir: never the shared one."""
    with tempfile.TemporaryDirectory(prefix="concert-own-pg-") as directory:
        cluster = open_cluster(Path(directory) / "pgdata")
        try:
            yield cluster
        finally:
            cluster.close()


def kill_postgres(pgdata: Path) -> int:
    """SIGKILL the postmaster and every backend (each runs in a session of its
    own, so a process group kill would miss them); postmaster.pid stays behind.
    Returns the postmaster's PID."""
    postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
    backends = postmaster.children()
    for process in [postmaster, *backends]:
        process.kill()
    psutil.wait_procs([postmaster, *backends], timeout=10)
    return postmaster.pid
