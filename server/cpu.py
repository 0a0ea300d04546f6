"""How many CPUs this process may use (its affinity, capped by a container's CPU
quota), and how it gives them away (yield_cpu).

os.cpu_count() is the host's cores: in a container limited to one CPU on a
16-core node it says 16, and a pool sized by it runs 16 hashes at once on one
CPU's worth of time, each 16 times slower. The quota comes from cgroup v2
(`cpu.max`: "<quota> <period>", or "max") or v1 (`cpu.cfs_quota_us` /
`cpu.cfs_period_us`, -1 for none), rounded up, at least 1, the tightest of
this process's cgroup and the ones above it (/proc/self/cgroup names it).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
MEMBERSHIP = Path("/proc/self/cgroup")
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
    return share_per_process(available_cpus(cgroup), processes)


def share_per_process(total: int, processes: int) -> int:
    """One of `processes` server processes' share of a machine's `total`: at least one."""
    return max(1, total // max(1, processes))


def cgroup_cpu_quota(cgroup: Path = CGROUP, membership: Path = MEMBERSHIP) -> float | None:
    """CPUs' worth of time this process's cgroups allow, or None when unlimited or unknown.

    The process's own cgroup and every one above it count (a limit on a parent
    binds its children), found from /proc/self/cgroup: in a container with a
    cgroup namespace that is the mount's root itself; on a host (or a container
    sharing the host's namespace) it is a path below it.
    """
    v2_path, v1_path = _own_cgroup_paths(membership)
    quotas = [
        quota
        for directory in _this_and_above(cgroup, v2_path)
        if (quota := _v2_quota(directory)) is not None
    ]
    if not quotas:  # cgroup v1: the cpu controller's own hierarchy
        quotas = [
            quota
            for directory in _this_and_above(cgroup / "cpu", v1_path)
            if (quota := _v1_quota(directory)) is not None
        ]
    return min(quotas) if quotas else None


def _own_cgroup_paths(membership: Path) -> tuple[str, str]:
    """This process's cgroup path in the v2 hierarchy and in v1's cpu controller."""
    v2, v1 = "/", "/"
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return v2, v1
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _this_and_above(root: Path, path: str) -> list[Path]:
    """root/path and each of its parents up to root (a path outside root: root alone)."""
    parts = [p for p in path.split("/") if p and p != ".."]
    return [root.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(directory: Path) -> float | None:
    try:
        quota_us = int((directory / "cpu.cfs_quota_us").read_text())
        period_us = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


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
