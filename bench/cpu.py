"""CPU time used by a stack's processes and by this one, read from /proc: where a bench's cores went.

The machines these benches run on share a few cores between the node, the broker, Redis and our
processes, so a rate alone does not say whose work bounds it; the CPU milliseconds per block do.
"""

from __future__ import annotations

import os
from pathlib import Path

from workers.devstack import Stack

CpuTimes = dict[str, float]  # process name -> CPU seconds (user + system)

THIS_PROCESS = "bench (this process)"


def cpu_seconds(stack: Stack) -> CpuTimes:
    """CPU time (user + system) of every stack process so far, by process group (a worker's pool
    children are in its group), and of this benchmark process."""
    tick = os.sysconf("SC_CLK_TCK")
    groups = {stack.pid(name): name for name in stack.status() if stack.alive(name)}
    totals: CpuTimes = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone since listed
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        pid, pgrp = int(entry), int(fields[2])
        used = (int(fields[11]) + int(fields[12])) / tick
        if pid == os.getpid():
            totals[THIS_PROCESS] = used
        elif pgrp in groups:
            name = groups[pgrp]
            if name == "worker":
                name = "worker (main)" if pid == pgrp else "worker (pool children)"
            totals[name] = totals.get(name, 0.0) + used
    return totals


def cpu_share(before: CpuTimes, after: CpuTimes, seconds: float) -> dict[str, float]:
    """Cores used by each process over the interval (2.0 = both cores of a 2-core machine), busiest
    first."""
    return {
        name: round((after[name] - before.get(name, 0.0)) / seconds, 3)
        for name in sorted(after, key=lambda n: before.get(n, 0.0) - after[n])
    }


def cpu_per_block(before: CpuTimes, after: CpuTimes, blocks: int) -> dict[str, float]:
    """CPU milliseconds each process spent per block over the interval (idle ones left out)."""
    spent = {name: (after[name] - before.get(name, 0.0)) * 1000 / blocks for name in after}
    return {name: round(ms, 3) for name, ms in sorted(spent.items(), key=lambda kv: -kv[1]) if ms > 0.01}
