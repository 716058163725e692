"""CPU seconds each process of a system used while it was measured (user + system time)."""

from __future__ import annotations

from collections.abc import Mapping

import psutil


def cpu_times(processes: Mapping[str, int]) -> dict[str, float]:
    """Each named process's CPU seconds so far (threads included); gone processes are left out."""
    out: dict[str, float] = {}
    for name, pid in processes.items():
        try:
            times = psutil.Process(pid).cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out[name] = times.user + times.system
    return out


def used(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds spent between two :func:`cpu_times` readings, per process."""
    return {name: round(after[name] - before[name], 2) for name in after if name in before}
