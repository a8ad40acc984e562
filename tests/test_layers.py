"""The layers: pure modules load neither Beam nor TensorFlow; nothing below the CLI sees PipelineOptions;
no library module imports the command-line layer or the entry points above it; no command loads torch
or TensorFlow before it needs them."""

import ast
import json
import os
import subprocess
import sys

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
    "rsdt_beam.common.machine",
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


def _first_failing_import(modules: list[str], blocked: tuple[str, ...]) -> str:
    """Imports `modules` one after another in one fresh interpreter that refuses `blocked`: the stderr of the
    first import that fails, or "" (one interpreter for all: a module imported by an earlier one was checked then)."""
    code = f"""
import importlib, importlib.abc, sys, traceback
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is blocked: pure modules must not import it")
sys.meta_path.insert(0, Block())
for module in {modules!r}:
    try:
        importlib.import_module(module)
    except ImportError:
        sys.exit(module + ": " + traceback.format_exc()[-2000:])
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO)
    )
    return result.stderr if result.returncode else ""


def test_pure_modules_import_neither_beam_nor_tensorflow():
    assert _first_failing_import(PURE, ("apache_beam", "tensorflow", "keras")) == ""


def test_the_blocker_blocks():  # the check above can fail
    failed = _first_failing_import(["rsdt_beam.grid", "rsdt_beam.stack.transforms"], ("apache_beam",))
    assert failed.startswith("rsdt_beam.stack.transforms: ") and "apache_beam is blocked" in failed


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


def _heavy_modules_loaded(steps: dict[str, str], heavy: tuple[str, ...] = ("torch", "tensorflow")) -> dict:
    """Runs the steps' code one after another in one fresh interpreter: step name -> the `heavy` modules loaded
    once it has run (loaded modules stay loaded, so the first step that shows one is the one that loaded it)."""
    code = "import json, sys\nloaded = {}\n"
    for name, step in steps.items():
        code += f"exec({step!r})\nloaded[{name!r}] = sorted(m for m in {heavy!r} if m in sys.modules)\n"
    result = subprocess.run(
        [sys.executable, "-c", code + "print(json.dumps(loaded))"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


HELP = """
from rsdt_beam.pipelines.{command} import main
try:
    main(["--help"])
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
"""


def test_no_help_and_no_module_workers_import_loads_torch_or_tensorflow():
    # The workers of every pipeline import these modules; inference and the readers load Keras/TensorFlow when
    # they run. One interpreter for all: the first step after which one is loaded is the one that loaded it.
    modules = ["rsdt_beam.builders", "rsdt_beam.cli.commands", "rsdt_beam.inference", "rsdt_beam.datasets"]
    modules.append("rsdt_beam.training")
    steps = {module: f"import {module}" for module in modules}
    steps.update({f"{command} --help": HELP.format(command=command) for command in COMMANDS})
    assert _heavy_modules_loaded(steps) == {step: [] for step in steps}


def test_the_heavy_check_detects_a_loaded_module():  # the checks above can fail
    loaded = _heavy_modules_loaded({"json": "import json", "tomllib": "import tomllib"}, heavy=("tomllib",))
    assert loaded == {"json": [], "tomllib": ["tomllib"]}
