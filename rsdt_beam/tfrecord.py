"""TFRecord files without TensorFlow: framing, parallel GZIP writing, reading.

A TFRecord is `uint64 length | masked crc32c(length) | data | masked crc32c(data)`.
GZIP files are written pigz-style: the byte stream is cut into blocks that a
process-wide thread pool deflates in parallel (each block primed with the
previous 32 KiB as dictionary, ended with a sync flush), so compression, the
real cost of writing windows, leaves the Python main thread and uses every
core. The result is one ordinary gzip member, read by TensorFlow's
`TFRecordDataset(..., compression_type="GZIP")`, rsdtlib and `gzip`.

Levels 1-3 deflate with ISA-L's igzip (python-isal) when it is installed:
the same DEFLATE format, 8-15x faster than zlib; at the default level 2 the
files are as large as zlib level 6's on noisy values and 7 % larger on
reflectance-like ones (benchmarks/README.md). Levels 0 and 4-9 use zlib.
"""

from __future__ import annotations

import collections
import concurrent.futures
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import google_crc32c

from rsdt_beam.common.machine import usable_cores
from rsdt_beam.errors import UserError

try:
    from isal import isal_zlib as _isal_zlib
except ImportError:  # zlib alone: same files, slower
    _isal_zlib = None

Buffer = bytes | bytearray | memoryview

# ISA-L level 2: as fast as level 1 (~300 MB/s per core here) and 6 % smaller on reflectance-like
# data; 1.00x (noisy) and 1.07x (smooth) the size of zlib level 6, TensorFlow's default.
DEFAULT_GZIP_LEVEL = 2
_BLOCK_SIZE = 1 << 20
_DICT_SIZE = 32 * 1024
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0, OS unknown

_pool_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _compression_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix="rsdt-gzip")
        return _pool


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(payload: bytes) -> tuple[bytes, bytes]:
    """The TFRecord framing (header, footer) around one record's payload."""
    header = struct.pack("<Q", len(payload))
    return (
        header + struct.pack("<I", _mask(google_crc32c.value(header))),
        struct.pack("<I", _mask(google_crc32c.value(payload))),
    )


def deflate_module(level: int):
    """The zlib-compatible module that deflates at `level`: ISA-L for levels 1-3 when installed."""
    return _isal_zlib if _isal_zlib is not None and 1 <= level <= 3 else zlib


_crc32 = _isal_zlib.crc32 if _isal_zlib is not None else zlib.crc32


def _deflate_block(block: bytes, zdict: bytes, level: int, final: bool) -> bytes:
    module = deflate_module(level)
    if zdict:
        compressor = module.compressobj(level, module.DEFLATED, -15, 8, module.Z_DEFAULT_STRATEGY, zdict)
    else:
        compressor = module.compressobj(level, module.DEFLATED, -15, 8)
    return compressor.compress(block) + compressor.flush(module.Z_FINISH if final else module.Z_SYNC_FLUSH)


class ParallelGzipStream:
    """A write-only gzip stream whose deflate work runs on a shared thread pool."""

    def __init__(self, raw: BinaryIO, level: int = DEFAULT_GZIP_LEVEL):
        if not 0 <= level <= 9:
            raise ValueError(f"gzip level must be 0..9, got {level}")
        self._raw = raw
        self._level = level
        self._small: list[Buffer] = []  # parts smaller than a block, joined into one block when enough
        self._small_size = 0
        self._previous_tail = b""
        self._crc = 0
        self._size = 0
        self._pending: collections.deque[concurrent.futures.Future] = collections.deque()
        self._max_pending = 2 * usable_cores()
        self.compressed_bytes = 0
        self._write_raw(_GZIP_HEADER)

    def _write_raw(self, data: bytes) -> None:
        self._raw.write(data)
        self.compressed_bytes += len(data)

    def write(self, data: Buffer) -> None:
        """Adds `data`; `bytes` are deflated in place later, mutable buffers are copied first."""
        if not isinstance(data, bytes):
            data = bytes(data)
        self._crc = _crc32(data, self._crc)
        self._size += len(data)
        if len(data) < _BLOCK_SIZE:
            self._small.append(data)
            self._small_size += len(data)
            if self._small_size >= _BLOCK_SIZE:
                self._submit_small()
            return
        # A large part (a window's frames) is deflated as zero-copy slices of itself.
        self._submit_small()
        view = memoryview(data)
        for start in range(0, len(data), _BLOCK_SIZE):
            self._submit(view[start : start + _BLOCK_SIZE], final=False)

    def _submit_small(self) -> None:
        if self._small:
            self._submit(b"".join(self._small), final=False)
            self._small, self._small_size = [], 0

    def _submit(self, block: Buffer, final: bool) -> None:
        zdict = self._previous_tail
        if len(block) >= _DICT_SIZE:
            self._previous_tail = bytes(block[-_DICT_SIZE:])
        else:
            self._previous_tail = (self._previous_tail + bytes(block))[-_DICT_SIZE:]
        self._pending.append(_compression_pool().submit(_deflate_block, block, zdict, self._level, final))
        # Blocks already deflated go out now: many streams open at once (Stage 2 writes a whole read
        # chunk's tiles together) must not each keep their finished blocks.
        limit = 0 if final else self._max_pending
        while self._pending and (self._pending[0].done() or len(self._pending) > limit):
            self._write_raw(self._pending.popleft().result())

    def close(self) -> None:
        self._submit(b"".join(self._small), final=True)
        self._small, self._small_size = [], 0
        self._write_raw(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))

    def abort(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()


class TFRecordWriter:
    """Writes TFRecords to a binary file object, GZIP-compressed unless `gzip_level` is None."""

    def __init__(self, raw: BinaryIO, gzip_level: int | None = DEFAULT_GZIP_LEVEL):
        self._raw = raw
        self._stream = ParallelGzipStream(raw, gzip_level) if gzip_level is not None else raw
        self.records = 0
        self.raw_bytes = 0

    def write(self, chunks: Sequence[Buffer]) -> None:
        """Writes one record given as byte chunks (e.g. memoryviews of numpy arrays)."""
        payload = b"".join(chunks)  # immutable, so the stream can deflate it without copying again
        header, footer = frame_record(payload)
        self._stream.write(header)
        self._stream.write(payload)
        self._stream.write(footer)
        self.raw_bytes += len(header) + len(payload) + len(footer)
        self.records += 1

    def close(self) -> None:
        if isinstance(self._stream, ParallelGzipStream):
            self._stream.close()

    @property
    def file_bytes(self) -> int:
        """Bytes that reached the file so far (all of them after `close()`)."""
        if isinstance(self._stream, ParallelGzipStream):
            return self._stream.compressed_bytes
        return self.raw_bytes

    def abort(self) -> None:
        if isinstance(self._stream, ParallelGzipStream):
            self._stream.abort()


class CorruptRecordError(UserError):
    """A file that is no (complete) GZIP TFRecord file: its message names the file."""


# Reading back (Stage 3 streams every stack file it windows): ISA-L inflates about 4x faster than zlib.
_inflate = _isal_zlib if _isal_zlib is not None else zlib


def _decompressed_chunks(raw: BinaryIO, gzip: bool, name: str) -> Iterator[bytes]:
    decompressor = _inflate.decompressobj(31) if gzip else None
    offset = 0
    member_started = False  # a gzip member begun and not ended: the file was cut inside it
    while True:
        chunk = raw.read(1 << 20)
        if not chunk:
            break
        offset += len(chunk)
        if decompressor is None:
            yield chunk
            continue
        member_started = True
        while chunk:
            try:
                out = decompressor.decompress(chunk)
            except Exception as error:  # zlib.error, or ISA-L's IsalError (not a zlib.error)
                raise CorruptRecordError(f"{name}: not a GZIP file, or corrupt before byte {offset}: {error}") from None
            if out:
                yield out
            if decompressor.eof:  # concatenated gzip members
                chunk = decompressor.unused_data
                decompressor = _inflate.decompressobj(31)
                member_started = bool(chunk)
            else:
                chunk = b""
    if member_started:
        raise CorruptRecordError(f"{name}: truncated record at the end (the GZIP stream stops at byte {offset})")


def read_records(raw: BinaryIO, gzip: bool = True, name: str = "<stream>") -> Iterator[bytes]:
    """Yields the payload of each TFRecord, checking both checksums."""
    buffer = bytearray()
    position = 0
    for chunk in _decompressed_chunks(raw, gzip, name):
        buffer += chunk
        while True:
            if len(buffer) - position < 12:
                break
            (length,) = struct.unpack_from("<Q", buffer, position)
            end = position + 12 + length + 4
            if len(buffer) < end:
                break
            (length_crc,) = struct.unpack_from("<I", buffer, position + 8)
            if _mask(google_crc32c.value(bytes(buffer[position : position + 8]))) != length_crc:
                raise CorruptRecordError(f"{name}: corrupt record length at byte {position}")
            data = bytes(buffer[position + 12 : position + 12 + length])
            (data_crc,) = struct.unpack_from("<I", buffer, end - 4)
            if _mask(google_crc32c.value(data)) != data_crc:
                raise CorruptRecordError(f"{name}: corrupt record data at byte {position}")
            yield data
            position = end
        del buffer[:position]
        position = 0
    if buffer:
        raise CorruptRecordError(f"{name}: truncated record at the end ({len(buffer)} stray bytes)")


_GZIP_TRAILER_SIZE = 4  # the last 4 bytes of a gzip member: its uncompressed size, mod 2**32


def check_read_whole(raw: BinaryIO, bytes_read: int, name: str) -> None:
    """Raises CorruptRecordError (naming the file and what is wrong) unless a reader that took
    `bytes_read` uncompressed bytes of the GZIP TFRecord file `raw` (seekable) read all of it.

    Only the gzip trailer's size is read when it matches; otherwise (a truncated or garbage file, or
    several gzip members) the whole file is read here, to say why.
    """
    size = raw.seek(0, 2)
    if size >= len(_GZIP_HEADER) + _GZIP_TRAILER_SIZE:
        raw.seek(size - _GZIP_TRAILER_SIZE)
        (isize,) = struct.unpack("<I", raw.read(_GZIP_TRAILER_SIZE))
        if isize == bytes_read & 0xFFFFFFFF:
            return
    raw.seek(0)
    for _ in read_records(raw, gzip=True, name=name):
        pass
