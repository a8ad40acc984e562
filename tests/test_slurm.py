"""The README's Slurm snippet: its `SLURMCluster` built as written (taken from the README text, so the two
cannot drift) and the job script it would submit checked; no job is submitted (no Slurm here)."""

import ast
import os
import re
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytest.importorskip("dask_jobqueue")


def readme_slurm_snippet() -> str:
    """The README's Python block that uses SLURMCluster."""
    with open(os.path.join(REPO, "README.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.DOTALL)
    (snippet,) = [block for block in blocks if "SLURMCluster(" in block]
    return snippet


def cluster_part(snippet: str) -> str:
    """The snippet's imports and its `cluster = SLURMCluster(...)` line: what runs without Slurm (scaling
    submits jobs, and the pipeline needs workers)."""
    tree = ast.parse(snippet)
    kept = [
        node
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        or (isinstance(node, ast.Assign) and "SLURMCluster" in ast.unparse(node.value))
    ]
    assert sum(isinstance(node, ast.Assign) for node in kept) == 1
    return ast.unparse(ast.Module(body=kept, type_ignores=[]))


def test_the_readme_slurm_cluster_runs_its_workers_with_the_venvs_python():
    snippet = readme_slurm_snippet()
    namespace: dict = {}
    exec(compile(cluster_part(snippet), "README.md (Slurm snippet)", "exec"), namespace)
    cluster = namespace["cluster"]
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    venv_python = os.path.expanduser("~/rsdt/bin/python")
    assert venv_python != sys.executable  # a script with the launcher's interpreter fails below
    (worker,) = [line for line in script.splitlines() if "distributed.cli.dask_worker" in line]
    assert worker.startswith(f"{venv_python} -m distributed.cli.dask_worker tcp://")
    assert "--nthreads 1" in worker and "--memory-limit 7.45GiB" in worker
    for directive in ("-p qcpu", "-A OPEN-00-00", "-n 1", "--cpus-per-task=1", "--mem=8G", "-t 02:00:00"):
        assert f"#SBATCH {directive}\n" in script
    # The pipeline is pointed at this cluster's scheduler.
    assert '"--dask_client_address", cluster.scheduler_address' in snippet
    assert '"apache_beam.runners.dask.dask_runner.DaskRunner"' in snippet
