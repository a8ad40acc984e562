"""A Google Cloud Storage emulator on 127.0.0.1 for tests: `gcp-storage-emulator`, in memory.

    with gcs_emulator(tmp_path) as gcs:
        path = gcs.url("run", "windows")         # gs://<bucket>/run/windows
        gcs.upload_tree(local_dir, path)
        gcs.download_tree(path)                   # {relative name: bytes}, via google-cloud-storage

While it runs, this process (and every process it starts) talks to it:
`STORAGE_EMULATOR_HOST` points Beam's GCS filesystem and google-cloud-storage
at it, and a credentials file with a pre-set, non-expiring token
(`GOOGLE_APPLICATION_CREDENTIALS`, `GOOGLE_CLOUD_PROJECT`) spares the ~20 s
credential search Beam otherwise makes in every process. The environment is
restored on exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

EMULATOR = os.path.join(os.path.dirname(sys.executable), "gcp-storage-emulator")
PROJECT = "rsdt-test-project"
_CREDENTIALS = {
    "type": "authorized_user",
    "client_id": "fake",
    "client_secret": "fake",
    "refresh_token": "fake",
    "token": "fake-token",
    "expiry": "2099-01-01T00:00:00Z",
    "quota_project_id": PROJECT,
}
_STARTUP_SECONDS = 30


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclasses.dataclass
class GcsEmulator:
    """A running emulator: its endpoint and one bucket."""

    endpoint: str
    bucket: str

    def url(self, *parts: str) -> str:
        return "/".join([f"gs://{self.bucket}", *parts])

    def client(self):
        from google.cloud import storage

        return storage.Client(project=PROJECT)

    def upload_tree(self, local_dir: str, url: str) -> int:
        """Copies every file under `local_dir` to `url` with google-cloud-storage; returns how many."""
        bucket = self.client().bucket(self.bucket)
        prefix = url[len(f"gs://{self.bucket}/") :].rstrip("/")
        count = 0
        for folder, _, names in os.walk(local_dir):
            for name in names:
                local = os.path.join(folder, name)
                relative = os.path.relpath(local, local_dir).replace(os.sep, "/")
                bucket.blob(f"{prefix}/{relative}").upload_from_filename(local)
                count += 1
        return count

    def download_tree(self, url: str) -> dict[str, bytes]:
        """Every object under `url` as {name relative to url: content}, with google-cloud-storage."""
        prefix = url[len(f"gs://{self.bucket}/") :].rstrip("/") + "/"
        return {
            blob.name[len(prefix) :]: blob.download_as_bytes()
            for blob in self.client().list_blobs(self.bucket, prefix=prefix)
        }


def _wait_until_up(endpoint: str, process: subprocess.Popen, log_path: str) -> None:
    deadline = time.monotonic() + _STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with open(log_path) as log:
                raise RuntimeError(f"gcp-storage-emulator exited with {process.returncode}: {log.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"gcp-storage-emulator did not answer on {endpoint} within {_STARTUP_SECONDS} s")


@contextlib.contextmanager
def gcs_emulator(workdir: str, bucket: str = "rsdt-test") -> Iterator[GcsEmulator]:
    """Starts the emulator on a free port, points this process's environment at it, creates `bucket`."""
    workdir = str(workdir)
    os.makedirs(workdir, exist_ok=True)
    credentials_path = os.path.join(workdir, "gcs-emulator-credentials.json")
    with open(credentials_path, "w") as f:
        json.dump(_CREDENTIALS, f)
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = os.path.join(workdir, "gcs-emulator.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [EMULATOR, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    environment = {
        "STORAGE_EMULATOR_HOST": endpoint,
        "GOOGLE_APPLICATION_CREDENTIALS": credentials_path,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
    }
    saved = {key: os.environ.get(key) for key in environment}
    try:
        _wait_until_up(endpoint, process, log_path)
        os.environ.update(environment)
        emulator = GcsEmulator(endpoint, bucket)
        emulator.client().create_bucket(bucket)
        yield emulator
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
