"""rsdtlib's record schemas, encoded and decoded without TensorFlow.

Every record is a `tf.train.Example`. rsdtlib's features are bytes features
holding `tf.io.serialize_tensor` output (a `TensorProto` with
`tensor_content`); this module writes the same bytes (checked against
TensorFlow in the tests) straight from numpy buffers, so a window's frames go
to the compressor without a copy and without TensorFlow's per-call overhead.

Stack records (Stage 2, one per written time stamp and tile):
  `Timestamp` float64 scalar, `SAR_ascending`/`SAR_descending` float32
  `[tile_y, tile_x, bands_sar]`, `OPT` float32 `[tile_y, tile_x, bands_opt]`;
  added: `tile` int64 `[j, i]`; with `--record_observed` also `Observed` uint8 `[tile_y, tile_x, 3]`.
Window records (Stage 3):
  `Feature` (and `Label` for training); added: `tile` int64 `[j, i]`,
  `window_id`, `window_start`, `window_end` (int64 seconds, as rsdtlib's
  windows list), `Timestamps` float64 `[n]` of the current window's frames; with `--record_observed`
  also `Observed` uint8 `[n, tile_y, tile_x, 3]` of the current window.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np

from rsdt_beam.tfrecord import Buffer

STACK_FEATURES = ("Timestamp", "SAR_ascending", "SAR_descending", "OPT")
# Added only when asked for (`--record_observed`): uint8 `[ty, tx, 3]` per stack record and `[n, ty, tx, 3]`
# per window record, 1 where a valid observation of the modality (SAR ascending, descending, optical)
# arrived since the previous frame, 0 where the value is forward-filled (or never observed).
OBSERVED = "Observed"

_DTYPE_CODES = {
    np.dtype(np.float32): 1,
    np.dtype(np.float64): 2,
    np.dtype(np.int32): 3,
    np.dtype(np.uint8): 4,
    np.dtype(np.int16): 5,
    np.dtype(np.int8): 6,
    np.dtype(np.int64): 9,
    np.dtype(np.bool_): 10,
    np.dtype(np.uint16): 17,
    np.dtype(np.float16): 19,
    np.dtype(np.uint32): 22,
    np.dtype(np.uint64): 23,
}
_CODE_DTYPES = {code: dtype for dtype, code in _DTYPE_CODES.items()}


@functools.lru_cache(maxsize=1 << 16)  # record after record repeats the same shapes and lengths
def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@functools.lru_cache(maxsize=1 << 16)
def _length_delimited(field: int, length: int) -> bytes:
    return _varint(field << 3 | 2) + _varint(length)


def _message(field: int, chunks: Sequence[Buffer]) -> list[Buffer]:
    return [_length_delimited(field, sum(len(c) for c in chunks)), *chunks]


@functools.lru_cache(maxsize=1024)
def _tensor_header(code: int, shape: tuple[int, ...]) -> bytes:
    """TensorProto fields `dtype` and `tensor_shape`."""
    dims = b"".join(
        _length_delimited(2, len(d)) + d for d in (_varint(1 << 3) + _varint(n) if n else b"" for n in shape)
    )
    return _varint(1 << 3) + _varint(code) + _length_delimited(2, len(dims)) + dims


def tensor_proto(array: np.ndarray) -> list[Buffer]:
    """`tf.io.serialize_tensor(array)` as byte chunks; the data is a view, not a copy."""
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    try:
        code = _DTYPE_CODES[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"cannot serialize a tensor of dtype {array.dtype}") from None
    array = np.require(array, np.dtype(dtype).newbyteorder("<"), "C")
    chunks: list[Buffer] = [_tensor_header(code, array.shape)]
    if array.size:
        chunks.extend(_message(4, [memoryview(array).cast("B")]))
    return chunks


def example(features: Mapping[str, Sequence[Buffer] | np.ndarray | list[int]]) -> list[Buffer]:
    """A serialized `tf.train.Example` as byte chunks.

    Values: an ndarray becomes a bytes feature holding its serialized tensor,
    a list of ints an int64 feature, a sequence of byte chunks a bytes feature.
    """
    entries: list[Buffer] = []
    for name, value in features.items():
        if isinstance(value, (np.ndarray, np.generic)):
            feature = _message(1, _message(1, tensor_proto(np.asarray(value))))  # bytes_list.value
        elif isinstance(value, list) and all(isinstance(v, (int, np.integer)) for v in value):
            packed = b"".join(_varint(int(v)) for v in value)
            feature = _message(3, _message(1, [packed]))  # int64_list.value (packed)
        else:
            feature = _message(1, _message(1, list(value)))
        key = name.encode()
        entries.extend(_message(1, [_length_delimited(1, len(key)), key, *_message(2, feature)]))
    return _message(1, entries)


def stack_record(
    timestamp: float,
    sar_ascending: np.ndarray,
    sar_descending: np.ndarray,
    optical: np.ndarray,
    tile: tuple[int, int],
    observed: np.ndarray | None = None,
) -> list[Buffer]:
    features: dict = {
        "Timestamp": np.float64(timestamp),
        "SAR_ascending": np.asarray(sar_ascending, np.float32),
        "SAR_descending": np.asarray(sar_descending, np.float32),
        "OPT": np.asarray(optical, np.float32),
        "tile": [int(tile[0]), int(tile[1])],
    }
    if observed is not None:
        features[OBSERVED] = np.asarray(observed, np.uint8)
    return example(features)


def window_record(
    feature: np.ndarray,
    label: np.ndarray | None,
    tile: tuple[int, int],
    window_id: int,
    timestamps: np.ndarray,
    observed: np.ndarray | None = None,
) -> list[Buffer]:
    features: dict = {"Feature": np.asarray(feature)}
    if label is not None:
        features["Label"] = np.asarray(label)
    features.update(
        {
            "tile": [int(tile[0]), int(tile[1])],
            "window_id": [int(window_id)],
            "window_start": [int(timestamps[0])],
            "window_end": [int(timestamps[-1])],
            "Timestamps": np.asarray(timestamps, np.float64),
        }
    )
    if observed is not None:
        features[OBSERVED] = np.asarray(observed, np.uint8)
    return example(features)


# --- decoding -------------------------------------------------------------


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a protobuf message (varint and length-delimited only)."""
    out, pos = [], 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((field, value))
    return out


def parse_tensor(data: bytes) -> np.ndarray:
    """Inverse of `tf.io.serialize_tensor` for tensors stored with `tensor_content`."""
    dtype, shape, content = None, [], b""
    for field, value in _fields(data):
        if field == 1:
            dtype = _CODE_DTYPES.get(value)
            if dtype is None:
                raise ValueError(f"unsupported tensor dtype code {value}")
        elif field == 2:
            shape = [dict(_fields(dim)).get(1, 0) for f, dim in _fields(value) if f == 2]
        elif field == 4:
            content = value
    if dtype is None:
        raise ValueError("not a serialized tensor: no dtype")
    array = np.frombuffer(content, dtype=dtype.newbyteorder("<")) if content else np.zeros(0, dtype)
    return array.reshape(shape)


def parse_example(data: bytes) -> dict[str, bytes | list[int]]:
    """Feature name -> bytes (first bytes value) or list of int64, of a serialized Example."""
    out: dict[str, bytes | list[int]] = {}
    for field, features in _fields(data):
        if field != 1:
            continue
        for entry_field, entry in _fields(features):
            if entry_field != 1:
                continue
            parts = dict(_fields(entry))
            name = parts[1].decode()
            for kind, values in _fields(parts.get(2, b"")):
                if kind == 1:  # bytes_list
                    out[name] = next((v for f, v in _fields(values) if f == 1), b"")
                elif kind == 3:  # int64_list, packed or not
                    ints: list[int] = []
                    for _f, v in _fields(values):
                        if isinstance(v, int):
                            ints.append(v)
                        else:
                            pos = 0
                            while pos < len(v):
                                n, pos = _read_varint(v, pos)
                                ints.append(n)
                    out[name] = [n - (1 << 64) if n >= 1 << 63 else n for n in ints]
    return out


def parse_stack_record(data: bytes) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(timestamp, SAR ascending, SAR descending, optical, observed or None) of a Stage 2 record."""
    features = parse_example(data)
    missing = [name for name in STACK_FEATURES if name not in features]
    if missing:
        raise ValueError(f"not a stack record: missing features {missing}")
    timestamp = float(parse_tensor(features["Timestamp"]))
    observed = parse_tensor(features[OBSERVED]).astype(bool) if OBSERVED in features else None
    return (timestamp, *(parse_tensor(features[name]) for name in STACK_FEATURES[1:]), observed)
