"""The project as tests build and deploy it: the checkout a build sees, the Dataflow dry run, output trees."""

import os
import shutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The Dataflow runner translating offline: no network, no credentials (see ENVIRONMENT notes).
DATAFLOW_FLAGS = [
    "--runner",
    "DataflowRunner",
    "--project",
    "rsdt-test-project",
    "--region",
    "europe-west1",
    "--temp_location",
    "gs://rsdt-test/tmp",
    "--dry_run=True",
    "--sdk_container_image",
    "europe-docker.pkg.dev/rsdt-test-project/rsdt/rsdt-beam:test",
]
# What a build reads from a checkout; anything else (tests, benchmarks, .git, outputs) stays out.
PROJECT_FILES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "rsdt_beam")


def project_copy(target: str) -> str:
    """The project's sources in `target` (returned), so building an sdist writes nothing into the checkout."""
    os.makedirs(target)
    for name in PROJECT_FILES:
        source = os.path.join(REPO, name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(target, name), ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(source, target)
    return target


def read_tree(root) -> dict[str, bytes]:
    """Every file under `root` by relative path, with its bytes."""
    return {
        os.path.relpath(os.path.join(folder, name), root): open(os.path.join(folder, name), "rb").read()
        for folder, _, names in os.walk(root)
        for name in names
    }
