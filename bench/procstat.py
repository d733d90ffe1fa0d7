"""What the benchmark's processes cost, read from /proc: CPU seconds (utime + stime) and resident memory per
process, the children of a process (gunicorn's workers), and the whole machine's busy CPU (other load).

CPU time per request is the benchmark's steadiest figure on a shared machine: req/s and latency move with whatever
else runs on the cores, while the CPU a worker spends on each request barely does.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, all its threads, in seconds (0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis are fixed.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # fields 14 and 15 of proc(5)


def self_cpu_seconds() -> float:
    """CPU seconds of this process (the load generator, when it runs here)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # without guest time, which is already counted in user
    return (total - idle) / TICKS, total / TICKS


class CpuMeter:
    """CPU seconds spent by some processes (and this one) between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, list[int]]):
        self.pids = pids
        self.spent: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        sample = {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.pids.items()}
        sample["loadgen"] = self_cpu_seconds()
        busy, total = machine_busy_seconds()
        sample["machine_busy"], sample["machine_total"] = busy, total
        return sample

    def start(self) -> CpuMeter:
        self._before = self._sample()
        return self

    def stop(self) -> dict[str, float]:
        after = self._sample()
        self.spent = {name: after[name] - self._before[name] for name in after}
        return self.spent
