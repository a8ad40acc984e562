"""A dask.distributed cluster on 127.0.0.1 for tests and benchmarks: `dask scheduler` and N `dask worker`
processes talking TCP, as on an HPC allocation (where dask-jobqueue's SLURMCluster starts the same processes).

    with dask_cluster(workdir, workers=2) as cluster:
        run(build, flags + cluster.flags)         # Beam's DaskRunner against it
        cluster.stats()                           # tasks run and bytes sent between workers, per worker

The scheduler and the workers import the project from the checkout (PYTHONPATH): the scheduler unpickles
the task graph, the workers run it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASK = os.path.join(os.path.dirname(sys.executable), "dask")
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


@dataclasses.dataclass
class DaskCluster:
    address: str
    pids: list[int] = dataclasses.field(default_factory=list)  # the scheduler's and the workers' (nannies)

    @property
    def flags(self) -> list[str]:
        """Beam flags that run a pipeline on this cluster."""
        return ["--runner", DASK_RUNNER, "--dask_client_address", self.address]

    def stats(self) -> dict[str, tuple[int, int]]:
        """Per worker: (tasks executed, bytes sent to other workers), since the worker started."""
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            return client.run(
                lambda dask_worker: (dask_worker.state.executed_count, dask_worker.transfer_outgoing_bytes_total)
            )


def _wait_for(condition, process: subprocess.Popen, what: str, log: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            with open(log) as f:
                raise RuntimeError(f"{what} did not start:\n{f.read()[-3000:]}")
        time.sleep(0.2)


@contextlib.contextmanager
def dask_cluster(workdir: str, workers: int = 2, env: dict[str, str] | None = None) -> Iterator[DaskCluster]:
    """A scheduler and `workers` single-threaded worker processes; `env` adds to the workers' environment."""
    os.makedirs(workdir, exist_ok=True)
    scheduler_file = os.path.join(workdir, "scheduler.json")
    base = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    processes: list[subprocess.Popen] = []
    try:
        log = os.path.join(workdir, "scheduler.log")
        with open(log, "w") as out:
            processes.append(
                subprocess.Popen(
                    [
                        DASK,
                        "scheduler",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        "0",
                        "--dashboard-address",
                        ":0",
                        "--scheduler-file",
                        scheduler_file,
                    ],
                    cwd=workdir,
                    env=base,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        _wait_for(lambda: os.path.exists(scheduler_file), processes[0], "dask scheduler", log)
        with open(scheduler_file) as f:
            address = json.load(f)["address"]
        for n in range(workers):
            log = os.path.join(workdir, f"worker{n}.log")
            with open(log, "w") as out:
                processes.append(
                    subprocess.Popen(
                        [
                            DASK,
                            "worker",
                            address,
                            "--nthreads",
                            "1",
                            "--dashboard-address",
                            ":0",
                            "--name",
                            f"w{n}",
                            "--local-directory",
                            os.path.join(workdir, f"worker{n}"),
                        ],
                        cwd=workdir,
                        env=dict(base, **(env or {})),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        cluster = DaskCluster(address, [process.pid for process in processes])
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(workers, timeout=60)
        yield cluster
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
