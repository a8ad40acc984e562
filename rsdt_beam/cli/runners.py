"""Runner options rsdt_beam chooses where the user chose none, so a run uses the machines it is given.

- The DirectRunner (the default) runs one worker thread per usable core (`--direct_running_mode multi_threading
  --direct_num_workers <cores>`): Stage 2's read chunks and Stage 3's tiles are spread over them. Reading,
  stacking, encoding and GZIP (ISA-L, on the shared thread pool) release the GIL, so threads use the cores
  without the start-up and the pickling of worker processes (multi_processing measured slower and busier on
  the reference case, benchmarks/README.md). Give either flag to choose otherwise (`--direct_num_workers 1`
  runs one bundle at a time).
- Beam's DaskRunner makes one Dask partition of every `Create` of fewer than 128 elements and keeps that
  partitioning through every later step (its `Reshuffle` does nothing), so without a choice one worker does
  all the work. rsdt_beam gives `--dask_npartitions` as the cluster's worker threads (asked from the
  scheduler; the local cores for a cluster Beam starts itself), unless `--dask_npartitions` or
  `--dask_partition_size` is given.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from rsdt_beam.common.machine import usable_cores

# One partition per thread: two per thread cost 18 % more CPU and wall on the reference case (each partition
# adds tasks to every step and shuffle after it; benchmarks/README.md), while the shuffles still spread the work.
DASK_PARTITIONS_PER_THREAD = 1


def _given(beam_argv: list[str], *flags: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in beam_argv for flag in flags)


def _flag_value(beam_argv: list[str], flag: str) -> str | None:
    for n, arg in enumerate(beam_argv):
        if arg == flag and n + 1 < len(beam_argv):
            return beam_argv[n + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def runner_defaults(beam_argv: list[str]) -> list[str]:
    """The flags to add to `beam_argv` (Beam's options of a command line) for the runner it names."""
    runner = str(PipelineOptions(beam_argv).view_as(StandardOptions).runner or "DirectRunner")
    if runner in ("DirectRunner", "apache_beam.runners.direct.direct_runner.DirectRunner"):
        if _given(beam_argv, "--direct_num_workers", "--direct_running_mode"):
            return []
        cores = usable_cores()  # on one core, threads only add the gRPC hops of multi_threading: in_memory
        return ["--direct_num_workers", str(cores), "--direct_running_mode", "multi_threading"] if cores > 1 else []
    if "DaskRunner" in runner and not _given(beam_argv, "--dask_npartitions", "--dask_partition_size"):
        return ["--dask_npartitions", str(DASK_PARTITIONS_PER_THREAD * dask_threads(beam_argv))]
    return []


def dask_threads(beam_argv: list[str]) -> int:
    """The worker threads of the Dask cluster the flags name (the local cores if they name none)."""
    address = _flag_value(beam_argv, "--dask_client_address")
    scheduler_file = _flag_value(beam_argv, "--dask_scheduler_file")
    if not address and not scheduler_file:
        return usable_cores()
    from distributed import Client

    with Client(address=address, scheduler_file=scheduler_file, timeout=30) as client:
        return max(1, sum(client.nthreads().values()))
