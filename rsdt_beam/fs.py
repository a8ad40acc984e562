"""File access for local paths and `gs://` URIs alike, through Beam's `FileSystems`.

Writes are atomic: data goes to a hidden temporary name beside the target and
is renamed into place only when complete, so a reader never sees a
half-written file under a final name and a retry simply overwrites.
Temporary names carry the writing run's id (`.NAME.tmp-RUNID-RANDOM`), so a
run can tell its own from those a killed attempt left (`rsdt_beam.outputs`
sweeps them). A writer that keeps many files open at once uses
`spooled_write`: a remote file is then written to local disk first and
uploaded when complete, so memory does not grow with the open files.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import shutil
import tempfile
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


def list_children(root: str, start: str = "") -> list[str]:
    """Names of the immediate entries (files and folders) under `root`, sorted; with `start`, only the names
    at or after it (in byte order: on an object store, the listing itself begins there)."""
    if not is_remote(root):
        names = sorted(os.listdir(root)) if os.path.isdir(root) else []
    else:
        prefix = root.rstrip("/") + "/"
        if prefix.startswith("gs://"):
            names = _gcs_children(prefix, start)
        else:  # other object stores: Beam's FileSystems can only list every object under the prefix
            names = sorted(
                {
                    meta.path[len(prefix) :].split("/", 1)[0]
                    for match in FileSystems.match([prefix + "**"])
                    for meta in match.metadata_list
                }
            )
    return [name for name in names if name >= start]


def _gcs_children(prefix: str, start: str) -> list[str]:
    """One listing with delimiter "/" from `start` on: the objects and "folders" right under `prefix`, never the
    objects inside those folders (an EOPatch folder's files), nor any name before `start`, so the cost grows
    with the folders listed, not with their files nor with the history before `start`."""
    from apache_beam.io.gcp.gcsio import GcsIO, parse_gcs_path  # only for gs://

    bucket, path = parse_gcs_path(prefix, object_optional=True)
    client = GcsIO().client
    listing = client.list_blobs(
        client.bucket(bucket), prefix=path, delimiter="/", start_offset=(path + start) if start else None
    )
    names = {blob.name[len(path) :] for blob in listing}  # iterating the pages also fills `prefixes`
    names |= {folder[len(path) :].rstrip("/") for folder in listing.prefixes}
    names.discard("")
    return sorted(names)


def glob(pattern: str) -> list[str]:
    return sorted(meta.path for match in FileSystems.match([pattern]) for meta in match.metadata_list)


def open_read(path: str, decompress: bool = False) -> BinaryIO:
    return FileSystems.open(
        path, compression_type=CompressionTypes.AUTO if decompress else CompressionTypes.UNCOMPRESSED
    )


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def read_json(path: str):
    return json.loads(read_bytes(path))


# `.NAME.tmp-RUNID-RANDOM` (RUNID may be empty: a write outside any run); Beam's file sinks stage under beam-temp-*.
_TEMPORARY = re.compile(r"^\..+\.tmp-(?:(?P<run>[0-9A-Za-z]*)-)?[0-9a-f]{12}$")
_BEAM_TEMPORARY = re.compile(r"(^|/)beam-temp-[^/]+/")


def temporary_name(name: str, run_id: str = "") -> str:
    return f".{name}.tmp-{run_id}-{uuid.uuid4().hex[:12]}"


def temporary_run(relative: str) -> str | None:
    """The run id of a temporary file (a path relative to a folder), "" for one of no known run, None for no
    temporary at all."""
    if _BEAM_TEMPORARY.search(relative):
        return ""
    match = _TEMPORARY.match(posixpath.basename(relative))
    return (match.group("run") or "") if match else None


@contextlib.contextmanager
def atomic_write(path: str, run_id: str = "") -> Iterator[BinaryIO]:
    """A binary file object whose content appears at `path` only if the block succeeds."""
    directory, name = posixpath.split(path) if is_remote(path) else _local_split(path)
    temporary = join(directory, temporary_name(name, run_id))
    handle = FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED)
    try:
        yield handle
        handle.close()
    except BaseException:
        handle.close()
        FileSystems.delete([temporary])
        raise
    FileSystems.rename([temporary], [path])  # replaces an existing file (os.rename / GCS copy)


# Beam's GCS writer (google-cloud-storage's BlobWriter) holds what is written to an open stream in memory
# until it has a whole 16 MiB upload chunk (Beam's fixed size), so every open stream costs up to 16 MiB, plus
# a copy of the chunk while it is sent: Stage 2 keeps a read chunk's tile files open together (64 at the
# default 256 px chunk and 32 px tiles), 64 x 16 MiB and more at 4 years. A spooled stream keeps at most
# _SPOOL_IN_MEMORY in memory (a small file, metadata-sized, never touches the disk), the rest goes to a local
# temporary file (TMPDIR), and files are uploaded one at a time when complete: one 16 MiB chunk buffer per
# writing thread, in requests of 16 MiB. Small explicit chunks for the open streams would instead cost one
# request per chunk (256 KiB at least: 8,000 requests for an item's 2 GB at 4 years) and still 64 buffers.
_SPOOL_IN_MEMORY = 256 * 1024
_COPY_PIECE = 1 << 20


@contextlib.contextmanager
def spooled_write(path: str, run_id: str = "") -> Iterator[BinaryIO]:
    """`atomic_write` for writers that keep many files open at once: a remote file is written to a local
    spool and uploaded (atomically) when the block succeeds; a local file is written in place as by
    `atomic_write`. The spool needs local disk for the file's bytes."""
    if not is_remote(path):
        with atomic_write(path, run_id) as handle:
            yield handle
        return
    with tempfile.SpooledTemporaryFile(_SPOOL_IN_MEMORY) as spool:
        yield spool
        upload(spool, path, run_id)


def upload(source: BinaryIO, path: str, run_id: str = "") -> None:
    """Copies a complete local file object, from its start, to `path` (`atomic_write`), 1 MiB at a time."""
    source.seek(0)
    with atomic_write(path, run_id) as target:
        shutil.copyfileobj(source, target, _COPY_PIECE)


def _local_split(path: str) -> tuple[str, str]:
    return os.path.split(os.path.abspath(path))


def write_bytes(path: str, data: bytes, run_id: str = "") -> None:
    with atomic_write(path, run_id) as f:
        f.write(data)


def write_json(path: str, obj, run_id: str = "") -> None:
    write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode(), run_id)


def delete_if_exists(path: str) -> bool:
    if exists(path):
        FileSystems.delete([path])
        return True
    return False


def delete_tree(path: str) -> None:
    """Removes a folder and everything under it (on an object store: every object under the prefix)."""
    if is_remote(path):  # a trailing "/" makes Beam's GCS filesystem delete the whole prefix
        if folder_exists(path):
            FileSystems.delete([path.rstrip("/") + "/"])
    elif os.path.isdir(path):
        FileSystems.delete([path])


def makedirs(path: str) -> None:
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def list_files(root: str) -> list[str]:
    """Every file under `root` (recursively), as paths relative to it, sorted."""
    if not is_remote(root):
        out = []
        for folder, _, names in os.walk(root):
            out += [os.path.relpath(os.path.join(folder, n), root).replace(os.sep, "/") for n in names]
        return sorted(out)
    prefix = root.rstrip("/") + "/"
    return sorted(
        meta.path[len(prefix) :] for match in FileSystems.match([prefix + "**"]) for meta in match.metadata_list
    )


def delete_files(root: str, relative: list[str]) -> None:
    """Deletes files under `root` given relative to it (missing ones are no error)."""
    paths = [join(root, name) for name in relative]
    for start in range(0, len(paths), 1000):
        batch = [path for path in paths[start : start + 1000] if is_remote(path) or os.path.lexists(path)]
        if batch:
            FileSystems.delete(batch)


def remove_empty_folders(root: str) -> None:
    """Removes empty sub-folders of a local `root` (object stores have no folders)."""
    if is_remote(root) or not os.path.isdir(root):
        return
    for folder, _, _ in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        if folder != root:
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def delete_tree_contents(root: str) -> None:
    """Deletes everything under `root`, keeping `root` itself (a local folder) or nothing (a prefix)."""
    if not is_remote(root):
        for name in list_children(root):
            path = os.path.join(root, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        return
    delete_files(root, list_files(root))
