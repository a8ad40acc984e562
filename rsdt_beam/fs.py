"""File access for local paths and `gs://` URIs alike, through Beam's `FileSystems`.

Writes are atomic: data goes to a hidden temporary name beside the target and
is renamed into place only when complete, so a reader never sees a
half-written file under a final name and a retry simply overwrites.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from typing import BinaryIO

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts) if parts else base


def is_remote(path: str) -> bool:
    return "://" in path


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def folder_exists(path: str) -> bool:
    """A local directory, or a remote prefix with an object under it (object stores have no folders)."""
    if not is_remote(path):
        return os.path.isdir(path)
    return bool(FileSystems.match([path.rstrip("/") + "/**"], limits=[1])[0].metadata_list)


def basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


def list_children(root: str) -> list[str]:
    """Names of the immediate entries (files and folders) under `root`, sorted."""
    if not is_remote(root):
        return sorted(os.listdir(root)) if os.path.isdir(root) else []
    prefix = root.rstrip("/") + "/"
    names = set()
    for match in FileSystems.match([prefix + "**"]):
        for meta in match.metadata_list:
            names.add(meta.path[len(prefix):].split("/", 1)[0])
    return sorted(names)


def glob(pattern: str) -> list[str]:
    return sorted(meta.path for match in FileSystems.match([pattern]) for meta in match.metadata_list)


def open_read(path: str, decompress: bool = False) -> BinaryIO:
    return FileSystems.open(path, compression_type=CompressionTypes.AUTO if decompress
                            else CompressionTypes.UNCOMPRESSED)


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def read_json(path: str):
    return json.loads(read_bytes(path))


@contextlib.contextmanager
def atomic_write(path: str) -> Iterator[BinaryIO]:
    """A binary file object whose content appears at `path` only if the block succeeds."""
    directory, name = posixpath.split(path) if is_remote(path) else _local_split(path)
    temporary = join(directory, f".{name}.tmp-{uuid.uuid4().hex[:12]}")
    handle = FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED)
    try:
        yield handle
        handle.close()
    except BaseException:
        handle.close()
        FileSystems.delete([temporary])
        raise
    FileSystems.rename([temporary], [path])  # replaces an existing file (os.rename / GCS copy)


def _local_split(path: str) -> tuple[str, str]:
    return os.path.split(os.path.abspath(path))


def write_bytes(path: str, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def write_json(path: str, obj) -> None:
    write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def delete_if_exists(path: str) -> bool:
    if exists(path):
        FileSystems.delete([path])
        return True
    return False


def makedirs(path: str) -> None:
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)
