"""Runner readiness: Dataflow translation offline, the portable runner protocol, DoFns that pickle.

* DataflowRunner with `--dry_run=True` translates the fused pipeline (no network, no credentials) and
  stages the package built from `setup.py` for the workers.
* PortableRunner (the protocol of Flink and Spark) runs the fused pipeline against Beam's Python job
  service on 127.0.0.1 with LOOPBACK workers and with EXTERNAL worker processes (a worker pool); the
  outputs equal a DirectRunner run's byte for byte (sharded too: the shards are planned, not Beam's).
* Every DoFn of the pipeline, pickled as a runner ships it, loads in a fresh interpreter
  (nothing depends on `--save_main_session` or on objects of `__main__`).
* The Flex Template's parameters and the image.
"""

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time

import apache_beam as beam
import pytest
from apache_beam.internal import pickler
from apache_beam.pipeline import PipelineVisitor
from project import DATAFLOW_FLAGS, REPO, project_copy, read_tree

from rsdt_beam.cli.commands import RUN, SCHEDULED, scheduled_command
from rsdt_beam.cli.run import execute

pytestmark = pytest.mark.e2e

FUSED_FLAGS = [
    "--opt_bands_feature",
    "NDVI",
    "--opt_mask_feature",
    "IS_VALID",
    "--starttime",
    "2015-09-01",
    "--endtime",
    "2016-05-01",
    "--delta_step",
    "10d",
    "--tile_size",
    "32",
    "--deadzone",
    "2",
    "--Delta",
    "60d",
    "--omega",
    "3",
    "--Omega",
    "6",
    "--mode",
    "training",
    "--no_progress",
]


def fused_flags(observations: str, out: str) -> list[str]:
    return [
        "--optical",
        observations,
        "--stack_output",
        os.path.join(out, "stack"),
        "--window_output",
        os.path.join(out, "windows"),
        *FUSED_FLAGS,
    ]


def test_dataflow_dry_run_translates_the_fused_pipeline(sample_eopatches, tmp_path):
    setup_file = os.path.join(project_copy(str(tmp_path / "project")), "setup.py")
    outcome = execute(
        RUN, DATAFLOW_FLAGS + ["--setup_file", setup_file] + fused_flags(sample_eopatches, "gs://rsdt-test/out")
    )
    proto = outcome.result.job.proto_pipeline

    transforms = proto.components.transforms
    top_level = (
        {transforms[t].unique_name for t in transforms[proto.root_transform_ids[0]].subtransforms}
        if len(proto.root_transform_ids) == 1
        else {transforms[t].unique_name for t in proto.root_transform_ids}
    )
    assert {
        "Observations",
        "Stage 2",
        "Finish stacks",
        "One work item per tile",
        "Write windows",
        "Rejected observations",
    } <= top_level
    urns = [t.spec.urn for t in transforms.values()]
    assert "beam:transform:group_by_key:v1" in urns
    # Stage 2 groups observation references per read chunk; the chunk's worker streams it through time
    # into its tiles' files; then each tile is a work item of its own for the windows.
    names = {t.unique_name for t in transforms.values()}
    assert {"Stage 2/Stack tiles/Group per chunk", "Stage 2/Stack tiles/Read, fold and write frames"} <= names

    (environment,) = proto.components.environments.values()
    assert environment.urn == "beam:env:docker:v1"
    assert b"rsdt-beam:test" in environment.payload
    staged = [dependency.role_payload for dependency in environment.dependencies]
    assert any(b"workflow.tar.gz" in payload for payload in staged), "setup.py sdist is not staged"


class _DoFns(PipelineVisitor):
    def __init__(self):
        self.fns = []

    def visit_transform(self, node):
        if isinstance(node.transform, beam.ParDo):
            self.fns.append((node.full_label, node.transform.fn))


def test_every_dofn_pickles_and_loads_in_a_fresh_interpreter(sample_eopatches, tmp_path):
    args, _beam_flags = RUN.parser().parse_known_args(
        fused_flags(sample_eopatches, str(tmp_path / "out")) + ["--layout", "sharded"]
    )
    pipeline = beam.Pipeline()
    RUN.launch(args).build(pipeline)
    visitor = _DoFns()
    pipeline.visit(visitor)
    assert len(visitor.fns) > 10
    for n, (_label, fn) in enumerate(visitor.fns):
        (tmp_path / f"{n}.pickle").write_bytes(pickler.dumps(fn))
    check = (
        "import sys, glob\nfrom apache_beam.internal import pickler\n"
        "for path in sorted(glob.glob(sys.argv[1] + '/*.pickle')):\n"
        "    fn = pickler.loads(open(path, 'rb').read())\n"
        "    assert hasattr(fn, 'process'), path\n"
        "print('loaded', len(glob.glob(sys.argv[1] + '/*.pickle')))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", check, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split() == ["loaded", str(len(visitor.fns))]


@pytest.fixture
def job_service(tmp_path):
    """Beam's Python job service (what Flink's and Spark's job servers speak) on a free port."""
    port_file = tmp_path / "job_service.port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "apache_beam.runners.portability.local_job_service_main",
            "--port",
            "0",
            "--port_file",
            str(port_file),
            "--staging_dir",
            str(tmp_path / "staging"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(process, lambda: port_file.exists() and port_file.read_text().strip(), "job service")
        yield f"localhost:{port_file.read_text().strip()}"
    finally:
        process.terminate()
        process.wait(timeout=20)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(process, ready, what: str, seconds: float = 60) -> None:
    """Until `ready()`, while `process` runs, for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while not ready():
        assert process.poll() is None, f"{what} exited"
        assert time.monotonic() < deadline, f"{what} did not start"
        time.sleep(0.1)


@pytest.fixture
def worker_pool(tmp_path):
    """Beam's Python SDK worker pool (EXTERNAL environment): workers in their own processes, as on a cluster."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = dict(
        os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"], PYTHONPATH=REPO
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", "--service_port", str(port)],
        env=environment,
        cwd=str(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(process, lambda: _listening(port), "worker pool")
        yield f"localhost:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_portable_runner_with_loopback_workers_equals_direct_runner(sample_eopatches, job_service, tmp_path):
    direct, portable = str(tmp_path / "direct"), str(tmp_path / "portable")
    execute(RUN, fused_flags(sample_eopatches, direct))
    execute(
        RUN,
        fused_flags(sample_eopatches, portable)
        + ["--runner", "PortableRunner", "--job_endpoint", job_service, "--environment_type", "LOOPBACK"],
    )
    for part in ("stack", "windows"):
        produced = read_tree(os.path.join(portable, part))
        assert "metadata.json" in produced and len(produced) > 5
        assert produced == read_tree(os.path.join(direct, part))


def test_portable_runner_with_external_worker_processes(sample_eopatches, job_service, worker_pool, tmp_path):
    direct, portable = str(tmp_path / "direct"), str(tmp_path / "external")
    execute(RUN, fused_flags(sample_eopatches, direct) + ["--layout", "sharded"])
    execute(
        RUN,
        fused_flags(sample_eopatches, portable)
        + ["--layout", "sharded"]
        + [
            "--runner",
            "PortableRunner",
            "--job_endpoint",
            job_service,
            "--environment_type",
            "EXTERNAL",
            "--environment_config",
            worker_pool,
        ],
    )
    produced, expected = (read_tree(os.path.join(root, "windows")) for root in (portable, direct))
    assert any(name.startswith("windows-") for name in produced) and produced == expected  # same shards


def test_dataflow_dry_run_translates_a_scheduled_run_and_writes_nothing(sample_eopatches, tmp_path):
    root = tmp_path / "scheduled"
    outcome = execute(
        scheduled_command(0),
        DATAFLOW_FLAGS
        + [
            "--optical",
            sample_eopatches,
            "--output_root",
            str(root),
            "--end",
            "2016-04-01",
            "--lookback",
            "120d",
            "--write_stacks",
            *FUSED_FLAGS[:4],
            *FUSED_FLAGS[8:],
        ],
    )  # the run sets start/end
    proto = outcome.result.job.proto_pipeline
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {
        "Stage 2/Time stamps to stack at",
        "Stage 2/Stack tiles/Read, fold and write frames",
        "Write state",
        "Write stacks",
        "Write windows",
        "Write manifest.json",
    } <= names
    assert outcome.dry_run and not root.exists()  # no manifest, no output


def test_flex_template_parameters_are_flags_that_validate_the_scheduled_launch():
    with open(os.path.join(REPO, "flex_template", "metadata.json")) as f:
        parameters = {p["name"]: p for p in json.load(f)["parameters"]}
    with open(os.path.join(REPO, "schedules", "flex_template_launch.json")) as f:
        body = json.load(f)["launchParameter"]["parameters"]
    assert {name for name, p in parameters.items() if not p["isOptional"]} <= set(body)

    def valid(name: str, value: str) -> bool:
        return all(re.match(pattern, value) for pattern in parameters[name].get("regexes", []))

    assert all(valid(name, value) for name, value in body.items())
    for name, bad in [
        ("output_root", "/data/rsdt"),
        ("observations", "s3://b/store"),
        ("end", "tomorow"),
        ("lookback", "30 days"),
        ("tile_size", "32px"),
        ("mode", "train"),
        ("gzip_level", "10"),
    ]:
        assert not valid(name, bad), (name, bad)
    args, beam_flags = SCHEDULED.parser().parse_known_args([f"--{name}={value}" for name, value in body.items()])
    assert (args.end, args.lookback, beam_flags) == ("today", "30d", [])


def test_the_image_matches_the_sdk_that_submits_jobs():
    with open(os.path.join(REPO, "Dockerfile")) as f:
        dockerfile = f.read()
    assert f"apache/beam_python{sys.version_info.major}.{sys.version_info.minor}_sdk:{beam.__version__}" in dockerfile
    entry = re.search(r"FLEX_TEMPLATE_PYTHON_PY_FILE=(\S+)", dockerfile).group(1)
    source = re.search(rf"COPY (\S+) {entry}\n", dockerfile).group(1)
    with open(os.path.join(REPO, source)) as f:
        module = re.search(r"^from (\S+) import main$", f.read(), re.MULTILINE).group(1)
    assert importlib.util.find_spec(module) is not None, module
