"""What the workers of a remote runner (Dataflow) need besides the pipeline: this package, its dependencies
at the tested versions, and which runners' workers do not share the launcher's environment.

`constraints.txt` (the checkout's root) pins the tested environment, transitive dependencies included:
`.ci/setup`, the README's venv and the Docker image install with it, and a Beam worker must run the SDK
version that submitted the job anyway; so the workers get the launcher's installed versions of what
`pyproject.toml` declares (plus TensorFlow for the entry points that run a model), constrained by that
file. Two ways to deliver them:

- `--sdk_container_image`: the Docker image (Dockerfile) holds everything; nothing is added.
- otherwise: a pinned requirements file (`--requirements_file`, installed by each worker at start-up, not
  downloaded by the launcher: `--requirements_cache skip`) whose `-c constraints.txt` line names the
  constraints file staged beside it (`--files_to_stage`: Beam's worker boot installs the requirements
  file from the folder it stages every file to), and the package from the checkout (`--setup_file`),
  unless `--setup_file` or `--extra_package` is given already.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import re
import shutil
import tempfile
from collections.abc import Sequence

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from rsdt_beam.errors import UserError

PACKAGE = "rsdt_beam"
# Entry points (rsdt_beam.pipelines.<name>) whose workers run a Keras model: the `tensorflow` extra.
EXTRAS_BY_ENTRY_POINT = {"infer": ("tensorflow",)}
REQUIREMENTS_FILE = "worker_requirements.txt"
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSTRAINTS_FILE = os.path.join(CHECKOUT, "constraints.txt")
_PORTABLE_RUNNERS = ("portablerunner", "flinkrunner", "sparkrunner", "prismrunner")


@dataclasses.dataclass(frozen=True)
class RemoteWorkers:
    """Workers that may not share the launcher's environment variables and files.

    `runner` names them with the flags that make them remote; `certain` when they never share them
    (Dataflow's VMs, Docker containers), else they may (a Dask cluster or a worker pool the user started,
    often on the launcher's machine or a shared file system, with the environment the user gave them).
    """

    runner: str
    certain: bool


def _runner(flags: Sequence[str]) -> str:
    """`--runner` as Beam resolves it: the class name, lower case, `runner` appended (DirectRunner if none)."""
    name = (_given(flags, "runner") or "DirectRunner").rsplit(".", 1)[-1].lower()
    return name if name.endswith("runner") else name + "runner"


def _loopback_by_default(runner: str, flags: Sequence[str]) -> bool:
    """Whether a portable runner given no --environment_type runs its workers here (LOOPBACK), as Beam's
    `<Runner>.default_environment` decides; PortableRunner's default is DOCKER."""
    if runner == "flinkrunner":
        return (_given(flags, "flink_master") or "[auto]") in ("[local]", "[auto]")
    if runner == "sparkrunner":
        return re.fullmatch(r"local(\[.+\])?", _given(flags, "spark_master_url") or "local[4]") is not None
    return runner == "prismrunner"


def remote_workers(beam_flags: Sequence[str]) -> RemoteWorkers | None:
    """The workers of the runner `beam_flags` choose, if they are not this process or its children."""
    runner = _runner(beam_flags)
    if runner == "dataflowrunner":
        return RemoteWorkers("DataflowRunner", certain=True)
    if runner == "daskrunner":
        address = _given(beam_flags, "dask_client_address")  # without it: a local cluster started here
        return RemoteWorkers(f"DaskRunner at {address}", certain=False) if address else None
    if runner not in _PORTABLE_RUNNERS:
        return None
    environment = (_given(beam_flags, "environment_type") or "").upper()
    if environment == "LOOPBACK" or (not environment and _loopback_by_default(runner, beam_flags)):
        return None
    environment = environment or "DOCKER"
    given = _given(beam_flags, "runner")
    return RemoteWorkers(f"{given} with --environment_type {environment}", certain=environment == "DOCKER")


def declared_requirements(extras: Sequence[str] = ()) -> list[Requirement]:
    """The package's dependencies and those of `extras`, as declared (installed metadata, else pyproject.toml)."""
    try:
        texts = importlib.metadata.requires(PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:  # run from a checkout through PYTHONPATH
        import tomllib  # Python 3.11+; an installed package (any Python) has its metadata instead

        with open(os.path.join(CHECKOUT, "pyproject.toml"), "rb") as f:
            project = tomllib.load(f)["project"]
        texts = list(project["dependencies"]) + [
            f'{text}; extra == "{extra}"' for extra, group in project["optional-dependencies"].items() for text in group
        ]
    wanted = []
    for requirement in map(Requirement, texts):
        if requirement.marker is None or any(requirement.marker.evaluate({"extra": extra}) for extra in ("", *extras)):
            requirement.marker = None
            wanted.append(requirement)
    return wanted


def pinned_requirements(extras: Sequence[str] = ()) -> list[str]:
    """`name[extras]==version` of every declared dependency (and of `extras`'), at the installed version."""
    pins = []
    for requirement in declared_requirements(extras):
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            raise UserError(
                f"{requirement.name} ({requirement}) is not installed here; the workers get the "
                f"launcher's versions: install rsdt_beam{'[' + ','.join(extras) + ']' if extras else ''}"
            ) from None
        if not requirement.specifier.contains(version, prereleases=True):
            raise UserError(f"installed {requirement.name} {version} does not satisfy {requirement}")
        extra = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        pins.append(f"{requirement.name}{extra}=={version}")
    return sorted(pins, key=str.lower)


def tested_versions() -> dict[str, str]:
    """constraints.txt: canonical package name -> pinned version."""
    with open(CONSTRAINTS_FILE) as f:
        pins = [Requirement(line) for line in f.read().splitlines() if line.strip() and not line.startswith("#")]
    return {canonicalize_name(pin.name): str(pin.specifier).removeprefix("==") for pin in pins}


def _given(flags: Sequence[str], name: str) -> str | None:
    """The value of `--name` in Beam-style `flags` (`--name value` or `--name=value`), else None."""
    for n, flag in enumerate(flags):
        if flag == f"--{name}":
            return flags[n + 1] if n + 1 < len(flags) else ""
        if flag.startswith(f"--{name}="):
            return flag.split("=", 1)[1]
    return None


def worker_flags(entry_point: str, beam_flags: Sequence[str], directory: str | None = None) -> list[str]:
    """Beam flags to add so a remote runner's workers get this package and the launcher's pinned dependencies.

    `entry_point` is the pipeline's name (`sample`, `run`, `infer`, ...), `beam_flags` the flags the user gave,
    `directory` where the requirements file is written (default: a new temporary folder). Empty for local
    runners and when `--sdk_container_image` gives the image.
    """
    if _runner(beam_flags) != "dataflowrunner" or _given(beam_flags, "sdk_container_image"):
        return []
    if not os.path.exists(CONSTRAINTS_FILE):
        raise UserError(
            "rsdt_beam is installed without its sources, so the tested versions (constraints.txt of a "
            "checkout) cannot be staged for its workers: launch from a checkout or give "
            "--sdk_container_image (see the Dockerfile)"
        )
    pins = pinned_requirements(EXTRAS_BY_ENTRY_POINT.get(entry_point, ()))
    tested = tested_versions()
    for pin in map(Requirement, pins):  # a pin the constraints contradict would fail on every worker
        version, wanted = str(pin.specifier).removeprefix("=="), tested.get(canonicalize_name(pin.name))
        if wanted is not None and not SpecifierSet(f"=={wanted}").contains(version):
            raise UserError(
                f"installed {pin.name} {version} is not the tested {wanted} of {CONSTRAINTS_FILE}, which the "
                f"workers install: install rsdt_beam with `-c constraints.txt`"
            )
    directory = directory or tempfile.mkdtemp(prefix="rsdt_beam_")
    path = os.path.join(directory, REQUIREMENTS_FILE)
    constraints = shutil.copy(CONSTRAINTS_FILE, os.path.join(directory, "constraints.txt"))
    with open(path, "w") as f:
        # Relative to this file, where Beam's worker boot finds it: every staged file lands in one folder.
        f.write("\n".join(["-c constraints.txt", *pins]) + "\n")
    flags = ["--requirements_file", path, "--requirements_cache", "skip", "--files_to_stage", constraints]
    if _given(beam_flags, "setup_file") is None and _given(beam_flags, "extra_package") is None:
        setup_file = os.path.join(CHECKOUT, "setup.py")
        if not os.path.exists(setup_file):
            raise UserError(
                "rsdt_beam is installed without its sources, so its workers' package cannot be built "
                "here: give --extra_package dist/rsdt_beam-<version>.whl (`pip wheel --no-deps .` "
                "in a checkout) or --sdk_container_image (see the Dockerfile)"
            )
        flags += ["--setup_file", setup_file]
    return flags
