"""Stage 2 writing its stacks to local disk and to gs:// (the GCS emulator), old and new code side by side.

    git -C /work/main archive 55a4e1f | tar -x -C /tmp/base_gs     # the code before issue 20's change
    python -m benchmarks.gcs_writes --old /tmp/base_gs --cases 256x6x32,128x48x16

For each case (`AREAxMONTHSxTILE`: px a side, months from 2017-01-01, tile size in px; `noisy` inputs
of benchmarks.bench, 2 day `delta_step`) and each code tree, alternating: `rsdt_beam.pipelines.stack`
writing to a local folder, then to gs:// on one GCS emulator (tests/gcs_emulator.py, started here, in
memory, its own process: not part of the measured tree). Each run is its own process on the
DirectRunner (1 worker, in-process); its peak RSS is that of the largest process of its tree (VmHWM,
benchmarks.bench.run_monitored). The tile size with the default 256 px `--chunk_size` sets how many
tile files the one work item keeps open: 64 for an area of 256 px and 32 px tiles, and also for 128 px
and 16 px tiles (a quarter of the bytes).

Every run's tile files are hashed (sha256, gs:// ones downloaded one by one); all runs of a case must
agree, and no temporary may be left behind.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks import bench

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
RUNNER = ["--runner", "DirectRunner", "--direct_num_workers", "1", "--no_progress"]


def local_digest(folder: Path) -> tuple[str, int, int]:
    """(sha256 over the sorted tile files' names and sha256s, their count, their bytes); temporaries raise."""
    names = sorted(p.name for p in folder.iterdir())
    leftovers = [name for name in names if name.startswith(".") and ".tmp-" in name]
    if leftovers:
        raise RuntimeError(f"{folder}: temporaries left: {leftovers[:3]}")
    files = [folder / name for name in names if name.endswith(".tfrecords")]
    return _combine((p.name, hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size) for p in files)


def gcs_digest(gcs, url: str) -> tuple[str, int, int]:
    prefix = url[len(f"gs://{gcs.bucket}/") :].rstrip("/") + "/"
    blobs = sorted(gcs.client().list_blobs(gcs.bucket, prefix=prefix), key=lambda b: b.name)
    leftovers = [b.name for b in blobs if ".tmp-" in b.name]
    if leftovers:
        raise RuntimeError(f"{url}: temporaries left: {leftovers[:3]}")
    return _combine(
        (b.name[len(prefix) :], hashlib.sha256(b.download_as_bytes()).hexdigest(), b.size)
        for b in blobs
        if b.name.endswith(".tfrecords")
    )


def _combine(entries) -> tuple[str, int, int]:
    digest, count, size = hashlib.sha256(), 0, 0
    for name, sha, nbytes in entries:
        digest.update(f"{name} {sha}\n".encode())
        count, size = count + 1, size + nbytes
    return digest.hexdigest()[:16], count, size


def delete_prefix(gcs, url: str) -> None:
    prefix = url[len(f"gs://{gcs.bucket}/") :].rstrip("/") + "/"
    for blob in list(gcs.client().list_blobs(gcs.bucket, prefix=prefix)):
        blob.delete()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="the old code tree (git archive 55a4e1f, extracted)")
    parser.add_argument("--cases", default="256x6x32,128x48x16", help="AREAxMONTHSxTILE, comma-separated")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tree and destination; medians")
    parser.add_argument("--work_dir", default="/tmp/rsdt_beam_bench")
    args = parser.parse_args(argv)
    from gcs_emulator import gcs_emulator

    trees = {"old": Path(args.old).resolve(), "new": REPO}
    work = Path(args.work_dir)
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory() as scratch, gcs_emulator(scratch) as gcs:
        for case in args.cases.split(","):
            area, months, tile_size = (int(v) for v in case.split("x"))
            inputs = bench.Inputs("noisy", area, area, months, 338, "store")
            stack = bench.Case(inputs, tile_size, "2d", "30d", 1, 10, 16, "training", 1, "in_memory", 2)
            source = bench.generate(inputs, work)
            flags = stack.stack_args(source) + ["--gzip_level", "2"]
            peaks: dict[tuple[str, str], list[int]] = {}
            walls: dict[tuple[str, str], list[float]] = {}
            digests = set()
            size = (0, 0)
            for _ in range(args.repeat):
                for code, tree in trees.items():
                    for where in ("local", "gs"):
                        output = str(work / "gcs_writes" / code) if where == "local" else gcs.url(code, "stack")
                        if where == "local":
                            shutil.rmtree(output, ignore_errors=True)
                        else:
                            delete_prefix(gcs, output)
                        run = bench.run_monitored(
                            [sys.executable, "-m", "rsdt_beam.pipelines.stack", *flags, "--stack_output", output]
                            + RUNNER,
                            tree,
                            f"{code} {where} {case}",
                        )
                        digest, *size = local_digest(Path(output)) if where == "local" else gcs_digest(gcs, output)
                        digests.add(digest)
                        peaks.setdefault((code, where), []).append(run.peak_rss)
                        walls.setdefault((code, where), []).append(run.wall)
                        print(
                            f"  {case} {code} {where}: {run.wall:.1f} s, peak RSS {run.peak_rss / 2**20:.0f} MiB",
                            file=sys.stderr,
                        )
                        if where == "gs":
                            delete_prefix(gcs, output)
            print(
                f"\n## {area} x {area} px, {months} months, {size[0]} tile files of {tile_size} px, "
                f"{size[1] / 1e6:.0f} MB; outputs identical across all runs: {len(digests) == 1} "
                f"({', '.join(sorted(digests))})"
            )
            print("| code | local: peak RSS MiB | gs://: peak RSS MiB | gs:// / local | wall s local, gs:// |")
            print("|---|---|---|---|---|")
            for code in trees:
                local, remote = (statistics.median(peaks[(code, w)]) for w in ("local", "gs"))
                wall = ", ".join(f"{statistics.median(walls[(code, w)]):.1f}" for w in ("local", "gs"))
                print(f"| {code} | {local / 2**20:.0f} | {remote / 2**20:.0f} | {remote / local:.2f} | {wall} |")
    print(f"load at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
