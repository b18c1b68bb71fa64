"""How busy the machine is right before a benchmark, so that its figures can say whether they were taken idle.

The 1-minute load average lags by about a minute: right after a previous benchmark it still reads ~2 on an
idle 2-core machine. Sampling /proc/stat over a few seconds instead gives the CPU time other processes use now.
"""
from __future__ import annotations

import os
import time
from typing import Optional, Tuple


def _cpu_times() -> Optional[Tuple[int, int]]:
    """(busy, total) jiffies of all CPUs since boot, or None where /proc/stat does not exist."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(seconds: float = 3.0) -> Optional[float]:
    """Cores' worth of CPU used by the whole machine over the next ``seconds`` (None where unknown)."""
    before = _cpu_times()
    time.sleep(seconds)
    after = _cpu_times()
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


def load_line(seconds: float = 3.0) -> str:
    """A one-line statement of the machine's current load, flagged when others use more than a quarter core."""
    busy = busy_cores(seconds)
    if busy is None:
        load = os.getloadavg()
        return f"load average {load[0]:.1f} (CPU use of other processes unknown on this OS)"
    flag = "  (MEASURED UNDER LOAD: other processes are using the CPU)" if busy > 0.25 else " (idle)"
    return f"{busy:.2f} of {os.cpu_count()} cores busy over {seconds:g} s before the run{flag}"
