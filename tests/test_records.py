"""TF-free record encoding: byte-identical to TensorFlow, readable by tf.data, checked when read."""

import gzip
import io
import os

import numpy as np
import pytest

from rsdt_beam import records, tfrecord

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        np.float64(1483262000.5),
        np.zeros((4, 4, 0), np.float32),
        np.random.default_rng(0).random((3, 5)),
        np.array([1, -2, 3], np.int64),
        np.ones((2, 2), np.uint16),
    ],
)
def test_tensor_bytes_equal_tf_serialize_tensor(array):
    ours = b"".join(records.tensor_proto(np.asarray(array)))
    assert ours == tf.io.serialize_tensor(array).numpy()
    np.testing.assert_array_equal(records.parse_tensor(ours), array)


def test_stack_record_parses_with_rsdtlib_feature_spec():
    rng = np.random.default_rng(1)
    asc, dsc, opt = (rng.random((4, 5, b), dtype=np.float32) for b in (2, 2, 13))
    payload = b"".join(records.stack_record(1483262000.0, asc, dsc, opt, (3, 4)))
    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in records.STACK_FEATURES}
    spec["tile"] = tf.io.FixedLenFeature([2], tf.int64)
    parsed = tf.io.parse_single_example(payload, spec)
    assert tf.io.parse_tensor(parsed["Timestamp"], tf.float64).numpy() == 1483262000.0
    np.testing.assert_array_equal(tf.io.parse_tensor(parsed["OPT"], tf.float32).numpy(), opt)
    assert list(parsed["tile"].numpy()) == [3, 4]
    timestamp, *arrays, observed = records.parse_stack_record(payload)
    assert timestamp == 1483262000.0 and observed is None
    for ours, original in zip(arrays, (asc, dsc, opt)):
        np.testing.assert_array_equal(ours, original)
    seen = rng.random((4, 5, 3)) < 0.5  # --record_observed: one more feature, the others unchanged
    with_mask = b"".join(records.stack_record(1483262000.0, asc, dsc, opt, (3, 4), seen))
    parsed = tf.io.parse_single_example(with_mask, dict(spec, Observed=tf.io.FixedLenFeature([], tf.string)))
    np.testing.assert_array_equal(tf.io.parse_tensor(parsed["Observed"], tf.uint8).numpy(), seen.astype(np.uint8))
    np.testing.assert_array_equal(tf.io.parse_tensor(parsed["OPT"], tf.float32).numpy(), opt)
    np.testing.assert_array_equal(records.parse_stack_record(with_mask)[4], seen)


@pytest.mark.parametrize("level", [None, 0, 1, 6, 9])
def test_tfrecord_files_read_back_with_tf_data(tmp_path, level):
    rng = np.random.default_rng(2)
    windows = [rng.random((n, 8, 8, 17), dtype=np.float32) for n in (10, 16, 3)] * 20  # > 1 MiB blocks
    path = str(tmp_path / "w.tfrecords")
    with open(path, "wb") as raw:
        writer = tfrecord.TFRecordWriter(raw, level)
        for k, feature in enumerate(windows):
            writer.write(
                records.window_record(
                    feature, np.ones((8, 8), np.float32), (0, k), k, np.arange(len(feature), dtype=float)
                )
            )
        writer.close()
    dataset = tf.data.TFRecordDataset(path, compression_type="GZIP" if level is not None else "")
    spec = {
        "Feature": tf.io.FixedLenFeature([], tf.string),
        "Label": tf.io.FixedLenFeature([], tf.string),
        "window_id": tf.io.FixedLenFeature([], tf.int64),
        "window_end": tf.io.FixedLenFeature([], tf.int64),
    }
    count = 0
    for k, serialized in enumerate(dataset):
        parsed = tf.io.parse_single_example(serialized, spec)
        np.testing.assert_array_equal(tf.io.parse_tensor(parsed["Feature"], tf.float32).numpy(), windows[k])
        assert parsed["window_id"].numpy() == k
        assert parsed["window_end"].numpy() == len(windows[k]) - 1
        count += 1
    assert count == len(windows)
    with open(path, "rb") as raw:
        assert sum(1 for _ in tfrecord.read_records(raw, gzip=level is not None)) == len(windows)
    if level is not None:
        with gzip.open(path) as f:  # one ordinary gzip stream
            assert len(f.read()) == writer.raw_bytes


def test_corrupt_and_truncated_files_are_reported_with_the_name():
    buffer = io.BytesIO()
    writer = tfrecord.TFRecordWriter(buffer, None)
    writer.write([b"hello world"])
    writer.write([b"second"])
    data = bytearray(buffer.getvalue())
    data[14] ^= 0xFF
    with pytest.raises(tfrecord.CorruptRecordError, match="x.tfrecords: corrupt record data"):
        list(tfrecord.read_records(io.BytesIO(bytes(data)), gzip=False, name="x.tfrecords"))
    with pytest.raises(tfrecord.CorruptRecordError, match="truncated"):
        list(tfrecord.read_records(io.BytesIO(buffer.getvalue()[:-3]), gzip=False, name="x.tfrecords"))


def test_a_gzip_stream_cut_at_a_record_boundary_is_truncated_and_whole_files_are_told_by_their_trailer():
    import zlib

    framed = []
    for payload in (b"first record", b"second record"):
        header, footer = tfrecord.frame_record(payload)
        framed.append(header + payload + footer)
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    cut = compressor.compress(framed[0]) + compressor.flush(zlib.Z_SYNC_FLUSH)  # decompresses to record 1 exactly
    whole = cut + compressor.compress(framed[1]) + compressor.flush()
    assert list(tfrecord.read_records(io.BytesIO(whole), name="w.tfrecords")) == [b"first record", b"second record"]
    with pytest.raises(tfrecord.CorruptRecordError, match=r"^c.tfrecords: truncated record at the end"):
        list(tfrecord.read_records(io.BytesIO(cut), name="c.tfrecords"))

    raw_size = sum(map(len, framed))
    tfrecord.check_read_whole(io.BytesIO(whole), raw_size, "w.tfrecords")  # the trailer's size: read no further
    tfrecord.check_read_whole(io.BytesIO(whole + whole), 2 * raw_size, "two members")  # read again: whole
    with pytest.raises(tfrecord.CorruptRecordError, match=r"^c.tfrecords: truncated"):
        tfrecord.check_read_whole(io.BytesIO(cut), len(framed[0]), "c.tfrecords")
    with pytest.raises(tfrecord.CorruptRecordError, match=r"^g.tfrecords: not a GZIP file"):
        tfrecord.check_read_whole(io.BytesIO(bytes(range(256))), 0, "g.tfrecords")


def test_writer_counts_the_bytes_that_reach_the_file():
    for level in (None, 2, 6):
        raw = io.BytesIO()
        writer = tfrecord.TFRecordWriter(raw, level)
        for k in range(50):
            writer.write([np.full((64, 64), k, np.float32).tobytes()])
        writer.close()
        assert writer.file_bytes == len(raw.getvalue())
        assert (writer.file_bytes < writer.raw_bytes) == (level is not None)
