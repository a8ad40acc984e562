"""The cores this process may run on: what the thread pools and the runners' defaults are sized by."""

import os


def usable_cores() -> int:
    """The CPUs the process is allowed to use (`taskset`, cgroup cpusets, a Slurm allocation), not all the
    machine's: a job given 2 of 64 cores sized for 64 would only add switching."""
    if hasattr(os, "sched_getaffinity"):  # Linux; elsewhere every core is usable
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
