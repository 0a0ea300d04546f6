"""A signal for this process when its parent exits (Linux's PR_SET_PDEATHSIG).

Two kinds of child use it: CONCERT_WORKERS server processes (SIGTERM when the
supervisor dies, so they drain instead of serving on, unsupervised), and the
open lane's hashing workers (SIGKILL when multiprocessing's fork server exits,
which ends a stopped worker too).

Stdlib only: the hashing workers import it.
"""

from __future__ import annotations

import ctypes
import os
import sys

# prctl(2)'s option: the signal this process gets when its parent exits.
_PR_SET_PDEATHSIG = 1


def signal_when_parent_exits(signum: int, parent: int | None = None) -> bool:
    """Ask for `signum` when the parent exits; False where the kernel cannot.

    `parent`, when the caller knows it, is the pid it was forked from: if that
    one exited before the request took hold (this process was reparented
    meanwhile), the signal is sent now, so nothing is missed. A caller that
    cannot know it checks for that race its own way.
    """
    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        return False
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signum)
    return True
