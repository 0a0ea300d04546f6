"""How many CPUs this process may use (its affinity, capped by a container's CPU
quota), and how it gives them away (yield_cpu).

os.cpu_count() is the host's cores: in a container limited to one CPU on a
16-core node it says 16, and a pool sized by it runs 16 hashes at once on one
CPU's worth of time, each 16 times slower. The quota comes from cgroup v2
(`cpu.max`: "<quota> <period>", or "max") or v1 (`cpu.cfs_quota_us` /
`cpu.cfs_period_us`, -1 for none), rounded up, at least 1.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
AUTOGROUP = Path("/proc/self/autogroup")


def available_cpus(cgroup: Path = CGROUP) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def cpus_per_process(processes: int, cgroup: Path = CGROUP) -> int:
    """This process's share of the CPUs when `processes` server processes share
    them (CONCERT_WORKERS forks that many on one machine): at least one."""
    return max(1, available_cpus(cgroup) // max(1, processes))


def cgroup_cpu_quota(cgroup: Path = CGROUP) -> float | None:
    """CPUs' worth of time the cgroup allows, or None when unlimited or unknown."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return quota_us / period_us


def yield_cpu(niceness: int) -> None:
    """Run this process at a lower priority, whichever way the host shares the CPU.

    A nice value is per thread on Linux, but with the kernel's autogroups on (a
    process started in a session of its own: most hosts outside containers,
    and this CI machine) the CPU is first shared between sessions, and a nice
    value only counts inside one: a niced thread still holds its session's
    whole share against a proxy's or a database's session, and their wakeups
    wait for it. So the process leads a session of its own (unless it already
    does) and nices that session's autogroup and itself; in a container (no
    autogroups) its nice value is what counts. Raising a nice value needs no
    privilege. Stdlib only: the hasher's worker processes call it first thing.
    """
    if niceness <= 0:
        return
    try:
        os.setsid()
    except (AttributeError, OSError):  # already a session leader (or no sessions here)
        pass
    try:
        AUTOGROUP.write_text(str(niceness))
    except OSError:  # no autogroups here: the process's nice value is all there is
        pass
    try:
        os.nice(niceness)
    except (AttributeError, OSError):
        pass
