"""Workers pinned to the tested versions (constraints.txt), the same Beam everywhere, the Docker image's pip line
resolving in a clean venv, and which runners' workers do not share the launcher's environment."""

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import tomllib
from conftest import SAMPLE_WINDOW_FLAGS
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from project import DATAFLOW_FLAGS, REPO, project_copy

from rsdt_beam import deploy
from rsdt_beam.cli.commands import RUN
from rsdt_beam.cli.run import execute
from rsdt_beam.errors import UserError

WITHOUT_IMAGE = [flag for flag in DATAFLOW_FLAGS if flag != "--sdk_container_image" and "rsdt-beam:test" not in flag]


def pinned_in(name: str) -> dict[str, str]:
    """requirements.txt or requirements-test.txt: canonical name -> pinned version."""
    with open(os.path.join(REPO, name)) as f:
        requirements = [Requirement(line) for line in f.read().splitlines() if line.strip() and line[0] != "#"]
    return {canonicalize_name(r.name): str(r.specifier).removeprefix("==") for r in requirements}


def test_constraints_pin_every_requirement_and_extra_at_the_version_requirements_txt_pins():
    tested = deploy.tested_versions()
    for name in ("requirements.txt", "requirements-test.txt"):
        pins = pinned_in(name)
        assert {n: tested.get(n) for n in pins if n not in TEST_TOOLS} == {
            n: v for n, v in pins.items() if n not in TEST_TOOLS
        }
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    declared = [Requirement(text) for text in project["dependencies"]]
    declared += [Requirement(text) for group in project["optional-dependencies"].values() for text in group]
    for requirement in declared:  # every one pinned, at a version pyproject.toml's ranges admit
        assert requirement.specifier.contains(tested[canonicalize_name(requirement.name)]), requirement
    assert [str(r.specifier) for r in declared if r.name == "torch"] == [f"=={tested['torch']}"]
    assert not TEST_TOOLS & set(tested) and "rsdt-beam" not in tested


TEST_TOOLS = {"pytest", "pytest-timeout", "pytest-xdist", "execnet", "ruff", "gcp-storage-emulator", "iniconfig"}


def test_workers_get_every_declared_dependency_at_the_tested_version():
    tested = deploy.tested_versions()
    for extras in ((), ("tensorflow",)):
        pins = [Requirement(pin) for pin in deploy.pinned_requirements(extras)]
        assert {p.name for p in pins} == {r.name for r in deploy.declared_requirements(extras)}
        for pin in pins:
            assert str(pin.specifier) == f"=={tested[canonicalize_name(pin.name)]}"
    assert "apache-beam[gcp]==2.77.0" in deploy.pinned_requirements()


def test_one_beam_version_in_the_image_the_constraints_and_the_requirements():
    with open(os.path.join(REPO, "Dockerfile")) as f:
        (image_beam,) = re.findall(r"^FROM apache/beam_python3\.11_sdk:(\S+)$", f.read(), re.MULTILINE)
    assert image_beam == deploy.tested_versions()["apache-beam"] == pinned_in("requirements.txt")["apache-beam"]


def test_workers_install_under_the_staged_constraints(tmp_path):
    flags = deploy.worker_flags("run", WITHOUT_IMAGE, str(tmp_path))
    requirements = open(flags[flags.index("--requirements_file") + 1]).read().splitlines()
    staged = flags[flags.index("--files_to_stage") + 1]
    # Beam's worker boot runs `pip install -r <staged>/requirements.txt`; the -c path is relative to it.
    assert requirements[0] == "-c constraints.txt" and os.path.basename(staged) == "constraints.txt"
    assert os.path.dirname(staged) == str(tmp_path) and open(staged).read() == open(deploy.CONSTRAINTS_FILE).read()
    assert "apache-beam[gcp]==2.77.0" in requirements


def test_a_launcher_the_constraints_contradict_is_refused(tmp_path, monkeypatch):
    """The workers would fail installing `numpy==<installed>` under another constraint: refused at launch."""
    with open(deploy.CONSTRAINTS_FILE) as f:
        text = re.sub(r"^numpy==\S+$", "numpy==1.0.0", f.read(), flags=re.MULTILINE)
    (tmp_path / "constraints.txt").write_text(text)
    monkeypatch.setattr(deploy, "CONSTRAINTS_FILE", str(tmp_path / "constraints.txt"))
    with pytest.raises(UserError, match=r"installed numpy \S+ is not the tested 1\.0\.0 of .*-c constraints\.txt"):
        deploy.worker_flags("run", WITHOUT_IMAGE, str(tmp_path / "out"))


def test_tensorflow_goes_to_the_workers_of_inference_only(tmp_path):
    def requirements(entry_point: str) -> str:
        flags = deploy.worker_flags(entry_point, WITHOUT_IMAGE, str(tmp_path))
        return open(flags[flags.index("--requirements_file") + 1]).read()

    assert f"tensorflow-cpu=={deploy.tested_versions()['tensorflow-cpu']}\n" in requirements("infer")
    assert "tensorflow" not in requirements("run") and "sentinelhub==" in requirements("fetch")
    assert deploy.worker_flags("infer", ["--runner", "DirectRunner"], str(tmp_path)) == []
    assert deploy.worker_flags("infer", DATAFLOW_FLAGS, str(tmp_path)) == []  # the image holds them
    given = deploy.worker_flags("run", WITHOUT_IMAGE + ["--extra_package=dist/rsdt_beam.whl"], str(tmp_path))
    assert "--setup_file" not in given and "--requirements_file" in given


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([], None),
        (["--runner", "DirectRunner", "--direct_running_mode", "multi_processing"], None),
        (["--runner=dataflow"], ("DataflowRunner", True)),
        (["--runner", "DataflowRunner"], ("DataflowRunner", True)),
        (["--runner", "apache_beam.runners.dask.dask_runner.DaskRunner"], None),  # a local cluster, here
        (
            ["--runner", "apache_beam.runners.dask.dask_runner.DaskRunner", "--dask_client_address", "tcp://h:8786"],
            ("DaskRunner at tcp://h:8786", False),
        ),
        (
            ["--runner", "PortableRunner", "--job_endpoint", "h:8099"],
            ("PortableRunner with --environment_type DOCKER", True),
        ),
        (["--runner", "PortableRunner", "--environment_type", "LOOPBACK"], None),
        (
            ["--runner", "PortableRunner", "--environment_type=EXTERNAL", "--environment_config", "h:50000"],
            ("PortableRunner with --environment_type EXTERNAL", False),
        ),
        (["--runner", "FlinkRunner"], None),  # [auto]: LOOPBACK
        (
            ["--runner", "FlinkRunner", "--flink_master", "flink:8081"],
            ("FlinkRunner with --environment_type DOCKER", True),
        ),
        (
            ["--runner", "SparkRunner", "--spark_master_url", "spark://h:7077"],
            ("SparkRunner with --environment_type DOCKER", True),
        ),
        (["--runner", "SparkRunner"], None),  # local[4]: LOOPBACK
        (["--runner", "PrismRunner"], None),
    ],
)
def test_which_runners_workers_do_not_share_the_launchers_environment(flags, expected):
    workers = deploy.remote_workers(flags)
    assert (workers and (workers.runner, workers.certain)) == expected


@pytest.mark.e2e
def test_dataflow_stages_the_pinned_requirements_and_the_package(sample_eopatches, tmp_path):
    """The `run` command adds the worker flags itself (cli.run.execute)."""
    setup_file = os.path.join(project_copy(str(tmp_path / "project")), "setup.py")
    outcome = execute(
        RUN,
        WITHOUT_IMAGE
        + [
            "--setup_file",
            setup_file,
            "--optical",
            sample_eopatches,
            "--opt_bands_feature",
            "NDVI",
            "--opt_mask_feature",
            "IS_VALID",
            "--starttime",
            "2015-09-01",
            "--endtime",
            "2016-05-01",
            "--mode",
            "training",
            *SAMPLE_WINDOW_FLAGS,  # windows on the sample (a run that would write none is refused)
            "--window_output",
            "gs://rsdt-test/windows",
        ],
    )
    (environment,) = outcome.result.job.proto_pipeline.components.environments.values()
    staged = b" ".join(dependency.role_payload for dependency in environment.dependencies)
    assert b"requirements.txt" in staged and b"constraints.txt" in staged and b"workflow.tar.gz" in staged


def dockerfile_install_lines() -> list[str]:
    """The Dockerfile's RUN lines that install (with the constraints), continuation lines joined."""
    with open(os.path.join(REPO, "Dockerfile")) as f:
        text = f.read().replace("\\\n", " ")
    lines = [line[4:] for line in text.splitlines() if line.startswith("RUN ")]
    return [line for line in lines if "constraints" in line]


@pytest.mark.e2e
def test_the_dockerfile_pip_line_builds_the_package_from_its_build_context(tmp_path):
    """The image's install line runs as written (EXTRAS=tensorflow, the image that serves inference), in the build
    context the Dockerfile copies, by a fresh venv's pip (Python 3.11 as the image's): rsdt_beam builds from what
    the Dockerfile copies. It resolves only (`--dry-run --ignore-installed --no-deps` added; docker is not available
    here): the dependencies are the ones `.ci/setup` installs under the same constraints, which pin every one of
    them (the tests above), and resolving them again from the index took over a minute of the suite."""
    lines = dockerfile_install_lines()
    assert len(lines) == 1 and "pip install --no-cache-dir --constraint constraints.txt" in lines[0]
    context = project_copy(str(tmp_path / "context"))
    shutil.copy(deploy.CONSTRAINTS_FILE, context)  # the build context holds it too
    venv = str(tmp_path / "venv")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    # `pip` of the lines resolves only; its build-isolation pip (setuptools for rsdt_beam) still installs.
    shim = tmp_path / "bin" / "pip"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {venv}/bin/python -m pip "$@" --dry-run --ignore-installed --no-deps\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        PATH=os.pathsep.join([str(shim.parent), os.path.join(venv, "bin"), env["PATH"]]),
        EXTRAS="tensorflow",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", " && ".join(lines)],
        cwd=context,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"{shlex.join(lines)}\n{done.stderr[-3000:]}"
    (would_install,) = re.findall(r"^Would install (.*)$", done.stdout, re.MULTILINE)
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert would_install.split() == [f"rsdt_beam-{version}"]
