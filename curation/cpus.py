"""How many CPUs this process may run on."""

from __future__ import annotations

import os


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (which containers and taskset restrict; the
    machine's count where the platform has no mask)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1
