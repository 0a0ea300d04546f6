"""The embedded PostgreSQL used when no CONCERT_DATABASE_URL is given.

pgserver ships real PostgreSQL binaries in a wheel: the same SQL, the same
locks, the same isolation as production. The cluster lives in a data directory
and survives restarts; several processes may share it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


class EmbeddedPostgresUnavailable(RuntimeError):
    """pgserver is not installed or could not start a cluster."""


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or join) the cluster in data_dir; return its connection URL."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers); harmless.
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as exc:
        raise EmbeddedPostgresUnavailable(
            "CONCERT_DATABASE_URL is unset and pgserver is not installed "
            "(install the 'embedded' extra, or point CONCERT_DATABASE_URL at a server)"
        ) from exc
    # pgserver narrates every pg_ctl call at INFO; keep its warnings only.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    pgdata = data_dir.resolve() / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        # cleanup_mode="stop": the cluster stops when the last process using it exits.
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:
        raise EmbeddedPostgresUnavailable(f"embedded PostgreSQL failed to start: {exc}") from exc
    url: str = server.get_uri()
    log.info("embedded PostgreSQL ready in %s", pgdata)
    return url
