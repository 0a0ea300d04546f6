"""What runs first in each of the open lane's worker processes: give the CPU
away, and never outlive the server.

Priority. Each worker leads a session of its own, niced with its autogroup
(server/cpu.yield_cpu): niced threads in the server's process had still held
the server's whole autogroup share against the database's and the proxies'.

Lifetime. A pool's worker blocks reading its task queue, whose write end it
holds itself, so it never sees the server die; killed with SIGKILL, the server
would leave its workers running forever. And a worker may be stopped (SIGSTOP:
the proven lane pauses the open one, server/accounts/passwords.py), so no
thread of its own can watch for the server either. On Linux the kernel does
it: the worker asks for SIGKILL when its parent, multiprocessing's fork
server, exits (PR_SET_PDEATHSIG; SIGKILL ends a stopped process too), and the
fork server exits as soon as nothing holds its "alive" pipe open, which the
server does, and each worker until it closes its copy here (it starts no
processes, the one use of that pipe). Elsewhere a thread polls the server, and
the server never pauses its workers (PAUSABLE).

Imported by the worker processes: stdlib only, and server/cpu.py and
server/parent_death.py (stdlib only).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from multiprocessing import forkserver
from typing import Any

from server.cpu import yield_cpu
from server.parent_death import signal_when_parent_exits

# Whether the server may stop its workers with SIGSTOP: only where a stopped
# worker still ends with the server.
PAUSABLE = sys.platform == "linux"
# How often a host without PR_SET_PDEATHSIG checks that the server lives.
_POLL_SECONDS = 1.0


def start(server_pid: int, niceness: int) -> None:
    """The pool's initializer: run in each worker before any task."""
    if not (PAUSABLE and _die_with_the_fork_server()):
        _poll_the_server(server_pid)
    if not _alive(server_pid):  # gone before the above took hold
        os._exit(0)
    yield_cpu(niceness)


def _die_with_the_fork_server() -> bool:
    """SIGKILL this worker when the fork server exits, and let it exit with the server."""
    # The fork server's pid is known only as getppid(), so the race with its
    # exit is start()'s check that the server still lives.
    if not signal_when_parent_exits(signal.SIGKILL):
        return False
    state: Any = forkserver._forkserver  # multiprocessing's own: the pipe has no public name
    if state._forkserver_alive_fd is not None:
        os.close(state._forkserver_alive_fd)
        state._forkserver_alive_fd = None
    return True


def _poll_the_server(server_pid: int) -> None:
    """Exit this worker once the server process is gone (checked every _POLL_SECONDS)."""

    def wait_for_the_server() -> None:
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
