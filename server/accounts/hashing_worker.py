"""What runs first in each of the open lane's worker processes: give the CPU
away, and never outlive the server.

Priority. A nice value is per thread on Linux, but with the kernel's
autogroups on (a process started in a session of its own: most hosts outside
containers, and this CI machine) the CPU is first shared between sessions, and
a nice value only counts inside one. A niced thread of the server still holds
the server's whole share against a proxy's or a database's session, and their
wakeups wait for it. A worker process that leads a session of its own, with
that session's autogroup niced, yields the CPU whichever way the host shares
it; in a container (no autogroups) its nice value is what counts.

Lifetime. A pool's worker blocks reading its task queue, whose write end it
holds itself, so it never sees the server die; killed with SIGKILL, the server
would leave its workers (and multiprocessing's fork server, which they keep
alive) running forever. Each worker watches the server's process instead.

Imported by the worker processes: stdlib only.
"""

from __future__ import annotations

import os
import select
import threading
import time
from pathlib import Path

AUTOGROUP = Path("/proc/self/autogroup")
# How often a host without pidfds (not Linux) checks that the server lives.
_POLL_SECONDS = 1.0


def start(server_pid: int, niceness: int) -> None:
    """The pool's initializer: run in each worker before any task."""
    _watch_server(server_pid)
    _yield_cpu(niceness)


def _yield_cpu(niceness: int) -> None:
    """Lead a session of its own (so an autogroup of its own) and nice both.

    Raising a nice value needs no privilege; the session also keeps a
    terminal's Ctrl-C to the server, which stops its workers itself.
    """
    if niceness <= 0 or not hasattr(os, "setsid"):
        return
    try:
        os.setsid()
    except OSError:  # already a session leader
        pass
    try:
        AUTOGROUP.write_text(str(niceness))
    except OSError:  # no autogroups here: the process's nice value is all there is
        pass
    try:
        os.nice(niceness)
    except OSError:
        pass


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
