"""Workers pinned to the tested versions, and the Docker image's pip line resolving in a clean venv."""

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from conftest import SAMPLE_WINDOW_FLAGS
from packaging.requirements import Requirement
from project import DATAFLOW_FLAGS, REPO, project_copy

from rsdt_beam import deploy
from rsdt_beam.cli.commands import RUN
from rsdt_beam.cli.run import execute

WITHOUT_IMAGE = [flag for flag in DATAFLOW_FLAGS if flag != "--sdk_container_image" and "rsdt-beam:test" not in flag]


def pinned_in_requirements_txt() -> dict[str, str]:
    """requirements.txt: name -> pinned version."""
    with open(os.path.join(REPO, "requirements.txt")) as f:
        requirements = [Requirement(line) for line in f.read().splitlines() if line.strip() and line[0] != "#"]
    return {r.name.lower(): str(r.specifier).removeprefix("==") for r in requirements}


def test_workers_get_every_declared_dependency_at_the_version_requirements_txt_pins():
    tested = pinned_in_requirements_txt()
    for extras in ((), ("tensorflow",)):
        pins = [Requirement(pin) for pin in deploy.pinned_requirements(extras)]
        assert {p.name for p in pins} == {r.name for r in deploy.declared_requirements(extras)}
        assert {p.name.lower(): str(p.specifier).removeprefix("==") for p in pins} == {
            p.name.lower(): tested[p.name.lower()] for p in pins
        }
    assert "apache-beam[gcp]==2.77.0" in deploy.pinned_requirements()


def test_tensorflow_goes_to_the_workers_of_inference_only(tmp_path):
    def requirements(entry_point: str) -> str:
        flags = deploy.worker_flags(entry_point, WITHOUT_IMAGE, str(tmp_path))
        return open(flags[flags.index("--requirements_file") + 1]).read()

    assert f"tensorflow-cpu=={pinned_in_requirements_txt()['tensorflow-cpu']}\n" in requirements("infer")
    assert "tensorflow" not in requirements("run") and "sentinelhub==" in requirements("fetch")
    assert deploy.worker_flags("infer", ["--runner", "DirectRunner"], str(tmp_path)) == []
    assert deploy.worker_flags("infer", DATAFLOW_FLAGS, str(tmp_path)) == []  # the image holds them
    given = deploy.worker_flags("run", WITHOUT_IMAGE + ["--extra_package=dist/rsdt_beam.whl"], str(tmp_path))
    assert "--setup_file" not in given and "--requirements_file" in given


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
    assert b"requirements.txt" in staged and b"workflow.tar.gz" in staged


def dockerfile_install_lines() -> list[str]:
    """The Dockerfile's RUN lines that install (constraints made, pip install), continuation lines joined."""
    with open(os.path.join(REPO, "Dockerfile")) as f:
        text = f.read().replace("\\\n", " ")
    lines = [line[4:] for line in text.splitlines() if line.startswith("RUN ")]
    return [line for line in lines if "constraints" in line]


@pytest.mark.e2e
def test_the_dockerfile_pip_line_resolves_in_a_clean_venv(tmp_path):
    """The image's install lines run as written, in the build context the Dockerfile copies, by a fresh venv's pip
    (Python 3.11 as the image's), resolving without installing (`--dry-run --ignore-installed` added); with
    EXTRAS=tensorflow, the image that serves inference. (docker itself is not available here.)"""
    lines = dockerfile_install_lines()
    assert len(lines) == 2 and "pip install" in lines[1]
    context = project_copy(str(tmp_path / "context"))
    shutil.copy(os.path.join(REPO, "requirements.txt"), context)  # the build context holds it too
    venv = str(tmp_path / "venv")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    # `pip` of the lines resolves only; its build-isolation pip (setuptools for rsdt_beam) still installs.
    shim = tmp_path / "bin" / "pip"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {venv}/bin/python -m pip "$@" --dry-run --ignore-installed\n')
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
    versions = dict(item.rsplit("-", 1) for item in would_install.split())
    versions = {name.lower().replace("_", "-"): version for name, version in versions.items()}
    tested = pinned_in_requirements_txt()
    assert {name: versions[name] for name in tested if name in versions} == {
        name: tested[name] for name in tested if name in versions
    }
    assert {"apache-beam", "tensorflow-cpu", "rasterio", "rsdt-beam"} <= set(versions)
