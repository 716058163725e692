"""CPU seconds each process of a system used while it was measured (user + system time)."""

from __future__ import annotations

from collections.abc import Mapping

import psutil


def cpu_times(processes: Mapping[str, int]) -> dict[str, float]:
    """Each named process's CPU seconds so far, its threads and child processes included (a
    PostgreSQL server works in one child per connection); gone processes are left out."""
    out: dict[str, float] = {}
    for name, pid in processes.items():
        try:
            proc = psutil.Process(pid)
            times = proc.cpu_times()
            total = times.user + times.system + times.children_user + times.children_system
            for child in proc.children(recursive=True):
                try:
                    child_times = child.cpu_times()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue  # ended meanwhile: its parent counts it once it is reaped
                total += child_times.user + child_times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out[name] = total
    return out


def machine_cpu_seconds() -> tuple[float, float]:
    """CPU seconds of the whole machine so far: (busy, stolen). Busy is neither idle, waiting on
    I/O nor stolen; stolen is what the hypervisor gave a shared VM's other tenants."""
    times = psutil.cpu_times()
    steal = getattr(times, "steal", 0.0)
    idle = times.idle + getattr(times, "iowait", 0.0)
    guest = getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)  # inside user, nice
    return sum(times) - idle - steal - guest, steal


def used(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds spent between two :func:`cpu_times` readings, per process."""
    return {name: round(after[name] - before[name], 2) for name in after if name in before}
