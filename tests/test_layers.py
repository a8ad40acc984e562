"""The layers: pure modules load neither Beam nor TensorFlow; nothing below the CLI sees PipelineOptions;
no library module imports the command-line layer or the entry points above it; no command loads torch
or TensorFlow before it needs them."""

import ast
import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "rsdt_beam")
PURE = [
    "rsdt_beam",
    "rsdt_beam.grid",
    "rsdt_beam.records",
    "rsdt_beam.tfrecord",
    "rsdt_beam.specs",
    "rsdt_beam.errors",
    "rsdt_beam.common.modalities",
    "rsdt_beam.common.times",
    "rsdt_beam.common.names",
    "rsdt_beam.common.observations",
    "rsdt_beam.stack.rules",
    "rsdt_beam.window.rules",
    "rsdt_beam.schedule.rules",
]
COMMANDS = sorted(
    name.removesuffix(".py")
    for name in os.listdir(os.path.join(PACKAGE, "pipelines"))
    if name.endswith(".py") and name != "__init__.py"
)
BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("apache_beam", "tensorflow", "keras"):
            raise ImportError(f"{name} is blocked: pure modules must not import it")
sys.meta_path.insert(0, Block())
"""


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_neither_beam_nor_tensorflow(module):
    code = BLOCKER + f"import {module}\n"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO)
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_blocker_blocks():  # the check above can fail
    code = BLOCKER + "import rsdt_beam.stack.transforms\n"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO)
    )
    assert result.returncode != 0 and "apache_beam is blocked" in result.stderr


def _library_modules():
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").removesuffix(".__init__")
                if not module.startswith(("rsdt_beam.cli", "rsdt_beam.pipelines")):
                    yield module, path


def _imports(path: str) -> set[str]:
    with open(path) as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_library_modules_import_nothing_above_them_and_never_see_pipeline_options():
    for module, path in _library_modules():
        imported = _imports(path)
        above = [m for m in imported if m.startswith(("rsdt_beam.cli", "rsdt_beam.pipelines"))]
        assert not above, f"{module} imports {above}"
        with open(path) as f:
            text = f.read()
        assert "PipelineOptions" not in text and "view_as(" not in text, module


def test_imports_are_at_module_level():
    """No function-level imports of rsdt_beam modules (they hide import cycles)."""
    for module, path in _library_modules():
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("rsdt_beam"):
                        raise AssertionError(f"{module}.{node.name} imports {inner.module} inside a function")


LOADED_HEAVY = """
import sys
print("loaded:", sorted(m for m in ("torch", "tensorflow") if m in sys.modules))
"""


def _heavy_modules_loaded(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code + LOADED_HEAVY],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()[-1]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_loads_neither_torch_nor_tensorflow(command):
    code = f"""
from rsdt_beam.pipelines.{command} import main
try:
    main(["--help"])
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
"""
    assert _heavy_modules_loaded(code) == "loaded: []"


@pytest.mark.parametrize(
    "module",
    # The workers of every pipeline import these; inference and the readers load Keras/TensorFlow when they run.
    ["rsdt_beam.builders", "rsdt_beam.cli.commands", "rsdt_beam.inference", "rsdt_beam.datasets", "rsdt_beam.training"],
)
def test_library_and_cli_modules_load_neither_torch_nor_tensorflow(module):
    assert _heavy_modules_loaded(f"import {module}\n") == "loaded: []"


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_the_heavy_check_detects_torch():  # the checks above can fail: Beam's ML inference module loads torch
    assert "torch" in _heavy_modules_loaded("import apache_beam.ml.inference.base\n")
