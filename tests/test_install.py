"""The package as users and workers meet it: built (sdist, then a wheel from the sdist), installed into a fresh
venv, run from a directory that holds no checkout, by the launcher and by portable-runner worker processes.

The fresh venv reuses the shared venv's third-party packages through a .pth file (installing them again
would download 2.5 GB); rsdt_beam itself comes only from the wheel (`--no-deps`) and nothing sets PYTHONPATH,
so a module or data file missing from the package fails here.
"""

import glob
import os
import socket
import subprocess
import sys
import sysconfig
import time

import pytest
import tomllib
from project import REPO, project_copy, read_tree

pytestmark = pytest.mark.e2e

SAMPLE_MODULE = "rsdt_beam.pipelines.sample"


def pip(*args: str, cwd: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    """sdist of a clean copy of the project, then the wheel built from that sdist (so the sdist is complete)."""
    root = tmp_path_factory.mktemp("build")
    source = project_copy(str(root / "project"))
    built = subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(root / "sdist")],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (sdist,) = glob.glob(str(root / "sdist" / "rsdt_beam-*.tar.gz"))
    pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(root / "wheel"), sdist, cwd=str(root))
    (built_wheel,) = glob.glob(str(root / "wheel" / "rsdt_beam-*.whl"))
    return built_wheel


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> str:
    """A fresh venv holding the built wheel, with the shared venv's third-party packages behind it."""
    root = str(tmp_path_factory.mktemp("venv"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root], check=True, timeout=120)
    python = os.path.join(root, "bin", "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with open(os.path.join(site, "shared_venv.pth"), "w") as f:
        f.write(sysconfig.get_path("purelib") + "\n")
    pip("--python", python, "install", "--no-deps", "--no-index", wheel, cwd=root)
    return root


def clean_env(venv: str) -> dict[str, str]:
    """The venv's bin first on PATH (worker processes start `python` from there), no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env["PATH"]
    return env


def run_installed(venv: str, args: list[str], cwd: str, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [os.path.join(venv, "bin", "python"), *args],
        cwd=cwd,
        env=clean_env(venv),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_the_wheel_holds_every_subpackage_and_the_sample(venv, tmp_path):
    check = (
        "import importlib, os, pkgutil, rsdt_beam, rsdt_beam.sample_data as s\n"
        "names = [m.name for m in pkgutil.walk_packages(rsdt_beam.__path__, 'rsdt_beam.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(os.path.dirname(rsdt_beam.__file__))\n"
        "print(sorted(os.listdir(s.EOLEARN_TEST_EOPATCH)))\n"
        "print(' '.join(sorted(names)))\n"
    )
    package_dir, data, modules = run_installed(venv, ["-c", check], cwd=str(tmp_path)).stdout.splitlines()
    assert package_dir.startswith(venv), package_dir  # the installed copy, not the checkout
    assert data == str(sorted(os.listdir(os.path.join(REPO, "rsdt_beam", "sample_data", "eolearn_TestEOPatch"))))
    in_checkout = {
        os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").removesuffix(".__init__")
        for path in glob.glob(os.path.join(REPO, "rsdt_beam", "**", "*.py"), recursive=True)
    }
    assert in_checkout - {"rsdt_beam"} <= set(modules.split())


def test_console_scripts_are_the_commands(venv, tmp_path):
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert {target.split(":")[0].rsplit(".", 1)[1] for target in scripts.values()} == {
        name[:-3] for name in os.listdir(os.path.join(REPO, "rsdt_beam", "pipelines")) if name[0] != "_"
    }
    for script in ("rsdt-beam-run", "rsdt-beam-fetch"):
        done = subprocess.run(
            [os.path.join(venv, "bin", script), "--help"],
            cwd=str(tmp_path),
            env=clean_env(venv),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0 and "--window_output" in done.stdout, done.stderr[-2000:]


def test_the_sample_job_runs_from_the_installed_package_outside_the_checkout(venv, sample_run, tmp_path):
    run_installed(venv, ["-m", SAMPLE_MODULE, "--output", "out", "--no_progress"], cwd=str(tmp_path))
    for part in ("stack", "windows"):
        produced = read_tree(tmp_path / "out" / part)
        assert len(produced) > 5 and produced == read_tree(os.path.join(sample_run, part))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(args: list[str], port: int, env: dict[str, str], cwd: str) -> subprocess.Popen:
    process = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, f"{args} exited"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        assert time.monotonic() < deadline, f"{args} did not start"
        time.sleep(0.1)


def test_portable_runner_workers_whose_only_code_is_the_wheel(venv, sample_run, tmp_path):
    """A job service and an EXTERNAL worker pool, both started from the venv outside the checkout."""
    env, python = clean_env(venv), os.path.join(venv, "bin", "python")
    job_port, pool_port = free_port(), free_port()
    processes = [
        serve(
            [python, "-m", "apache_beam.runners.portability.local_job_service_main", "--port", str(job_port)],
            job_port,
            env,
            str(tmp_path),
        ),
        serve(
            [python, "-m", "apache_beam.runners.worker.worker_pool_main", "--service_port", str(pool_port)],
            pool_port,
            env,
            str(tmp_path),
        ),
    ]
    try:
        run_installed(
            venv,
            [
                "-m",
                SAMPLE_MODULE,
                "--output",
                "out",
                "--no_progress",
                "--runner",
                "PortableRunner",
                "--job_endpoint",
                f"localhost:{job_port}",
                "--environment_type",
                "EXTERNAL",
                "--environment_config",
                f"localhost:{pool_port}",
            ],
            cwd=str(tmp_path),
        )
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)
    for part in ("stack", "windows"):
        assert read_tree(tmp_path / "out" / part) == read_tree(os.path.join(sample_run, part))
