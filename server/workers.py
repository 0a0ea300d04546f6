"""CONCERT_WORKERS=N: N server processes sharing one port, under one supervisor.

Python runs one request handler at a time per process, so a 2-core machine
needs two processes to use both cores. Each worker is a whole server (its own
event loop, gRPC server, pool and job scheduler) bound to the same address with
SO_REUSEPORT (server.app sets grpc.so_reuseport when workers > 1): the kernel
spreads new connections across them. The workers share everything else through
PostgreSQL: the signing secret, the queue counters, the advisory locks; the
JobRunner's per-job advisory lock keeps each scheduled job to one process at a
time.

The supervisor (this module, in the parent) forks the workers BEFORE anything
in it has started gRPC: gRPC's core threads do not survive a fork. The parent
started the embedded PostgreSQL, if any, so the workers share one cluster, and
children leave with os._exit so that none of them runs the parent's atexit
hooks (which stop that cluster).

Signals: SIGTERM or SIGINT to the parent is forwarded (as SIGTERM) to every
worker, which drains like a single server; the parent exits 0 once every worker
exited 0. A parent killed outright forwards nothing: on Linux the kernel sends
each worker SIGTERM then (PR_SET_PDEATHSIG), and they drain and exit. A worker
that dies on its own is not restarted: the supervisor stops the others and
exits 1, leaving restarts to whatever runs the service (systemd, Kubernetes),
which sees one process fail instead of a half-sized server that looks healthy.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable

from server.parent_death import signal_when_parent_exits

log = logging.getLogger(__name__)

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
_WATCHED = STOP_SIGNALS | {signal.SIGCHLD}
# Beyond the workers' own drain, how long the supervisor waits before SIGKILL.
_KILL_MARGIN_SECONDS = 5.0


def run_workers(
    count: int,
    serve: Callable[[int], int],
    *,
    grace_seconds: float,
    on_exit: Callable[[int], None] | None = None,
) -> int:
    """Fork `count` workers, each running serve(index) (one whole server), and supervise them.

    serve() must unblock STOP_SIGNALS once it handles them itself (server.__main__
    does, after installing its asyncio handlers): the workers start with them
    blocked so that a signal arriving during start-up waits instead of killing.
    on_exit(index) runs in the supervisor once worker `index` has exited, however
    it ended (what it shared with the others, the supervisor clears).
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    # Blocked before the first fork: children inherit the mask, and the parent
    # receives these signals synchronously through sigtimedwait below.
    signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
    workers: dict[int, int] = {}  # pid -> worker index
    for index in range(count):
        pid = _fork_worker(index, serve)
        workers[pid] = index
    log.info("supervising %d workers: %s", count, sorted(workers))
    return _supervise(workers, grace_seconds, on_exit)


def _fork_worker(index: int, serve: Callable[[int], int]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    supervisor = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    # The child: SIGCHLD is the supervisor's business only.
    code = 1
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        # A supervisor killed outright (SIGKILL, the OOM killer) forwards
        # nothing: its workers get SIGTERM from the kernel and drain, instead of
        # serving on unsupervised (blocked until serve() handles it).
        signal_when_parent_exits(signal.SIGTERM, parent=supervisor)
        _label_logs(index)
        code = serve(index)
    except BaseException:
        log.exception("worker %d failed", index)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class _WorkerLabel(logging.Filter):
    """Stamps each record with its worker's index (JSON logs carry it as "worker")."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def _label_logs(index: int) -> None:
    # One stderr, N writers: say which worker wrote each line. Only a plain text
    # format is rewritten; a structured formatter (JSON) keeps its class and
    # gets the index as a field.
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerLabel(index))
        formatter = handler.formatter
        if type(formatter) is logging.Formatter and formatter._fmt:
            fmt = formatter._fmt.replace("%(name)s", "w%(worker)s[%(process)d] %(name)s", 1)
            handler.setFormatter(logging.Formatter(fmt))


def _supervise(
    workers: dict[int, int], grace_seconds: float, on_exit: Callable[[int], None] | None
) -> int:
    result = 0
    stopping = False
    kill_at: float | None = None
    while workers:
        info = signal.sigtimedwait(_WATCHED, 0.5)
        if info is not None and info.si_signo in STOP_SIGNALS:
            if not stopping:
                log.info("signal %d: stopping %d workers", info.si_signo, len(workers))
            stopping = True
            _signal_all(workers, signal.SIGTERM)
            kill_at = kill_at or time.monotonic() + grace_seconds + _KILL_MARGIN_SECONDS
        for pid, code in _reap():
            index = workers.pop(pid, None)
            if index is None:
                continue
            if on_exit is not None:
                on_exit(index)
            if code != 0 or not stopping:
                log.error("worker %d (pid %d) exited with %d", index, pid, code)
                result = 1
            if not stopping:
                stopping = True
                _signal_all(workers, signal.SIGTERM)
                kill_at = time.monotonic() + grace_seconds + _KILL_MARGIN_SECONDS
        if kill_at is not None and workers and time.monotonic() > kill_at:
            log.error("workers %s did not drain in time: killing", sorted(workers))
            _signal_all(workers, signal.SIGKILL)
            result = 1
            kill_at = None
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _WATCHED)
    log.info("all workers stopped")
    return result


def _reap() -> list[tuple[int, int]]:
    done = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        done.append((pid, os.waitstatus_to_exitcode(status)))
    return done


def _signal_all(workers: dict[int, int], signum: int) -> None:
    for pid in workers:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
