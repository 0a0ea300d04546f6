"""What runs first in each of the open lane's worker processes: give the CPU
away, and never outlive the server.

Priority. Each worker leads a session of its own, niced with its autogroup
(server/cpu.yield_cpu): niced threads in the server's process had still held
the server's whole autogroup share against the database's and the proxies'.

Lifetime. A pool's worker blocks reading its task queue, whose write end it
holds itself, so it never sees the server die; killed with SIGKILL, the server
would leave its workers (and multiprocessing's fork server, which they keep
alive) running forever. Each worker watches the server's process instead.

Imported by the worker processes: stdlib only, and server/cpu.py (stdlib only).
"""

from __future__ import annotations

import os
import select
import threading
import time

from server.cpu import yield_cpu

# How often a host without pidfds (not Linux) checks that the server lives.
_POLL_SECONDS = 1.0


def start(server_pid: int, niceness: int) -> None:
    """The pool's initializer: run in each worker before any task."""
    _watch_server(server_pid)
    yield_cpu(niceness)


def _watch_server(server_pid: int) -> None:
    """Exit this worker as soon as the server process is gone."""
    try:
        pidfd = os.pidfd_open(server_pid)
    except (AttributeError, OSError):  # not Linux 5.3+: poll instead
        pidfd = None
    if pidfd is None and not _alive(server_pid):
        os._exit(0)

    def wait_for_the_server() -> None:
        if pidfd is not None:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)  # readable once the process exits
            poller.poll()
        else:
            while _alive(server_pid):
                time.sleep(_POLL_SECONDS)
        os._exit(0)

    threading.Thread(target=wait_for_the_server, name="server-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's (the pid was reused)
        return False
    return True
