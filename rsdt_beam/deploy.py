"""What the workers of a remote runner (Dataflow) need besides the pipeline: this package, and its dependencies
at the launcher's versions.

The launcher's environment is the one tested (`requirements.txt` pins it: `.ci/setup`, the README's venv, the
Docker image), and a Beam worker must run the SDK version that submitted the job anyway; so the workers get
exactly the launcher's installed versions of what `pyproject.toml` declares, plus TensorFlow for the entry
points that run a model. Two ways to deliver them:

- `--sdk_container_image`: the Docker image (Dockerfile) holds everything; nothing is added.
- otherwise: a pinned requirements file (`--requirements_file`, installed by each worker at start-up, not
  downloaded by the launcher: `--requirements_cache skip`) and the package from the checkout
  (`--setup_file`), unless `--setup_file` or `--extra_package` is given already.
"""

from __future__ import annotations

import importlib.metadata
import os
import tempfile
from collections.abc import Sequence

from packaging.requirements import Requirement

from rsdt_beam.errors import UserError

PACKAGE = "rsdt_beam"
# Entry points (rsdt_beam.pipelines.<name>) whose workers run a Keras model: the `tensorflow` extra.
EXTRAS_BY_ENTRY_POINT = {"infer": ("tensorflow",)}
REQUIREMENTS_FILE = "worker_requirements.txt"
REMOTE_RUNNERS = ("DataflowRunner",)
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    if _given(beam_flags, "runner") not in REMOTE_RUNNERS or _given(beam_flags, "sdk_container_image"):
        return []
    path = os.path.join(directory or tempfile.mkdtemp(prefix="rsdt_beam_"), REQUIREMENTS_FILE)
    with open(path, "w") as f:
        f.write("\n".join(pinned_requirements(EXTRAS_BY_ENTRY_POINT.get(entry_point, ()))) + "\n")
    flags = ["--requirements_file", path, "--requirements_cache", "skip"]
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
