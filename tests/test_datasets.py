"""Readers of windows on the real bundled sample: numpy (no TensorFlow) and tf.data (training, inference, online)."""

import csv
import hashlib
import os

import numpy as np
import pytest

from rsdt_beam.cli.commands import WINDOW
from rsdt_beam.cli.run import execute
from rsdt_beam.numpy_reader import online_windows, read_windows, training_pairs, window_files
from rsdt_beam.stack.files import list_tiles, read_stack_metadata, read_tile_stack
from rsdt_beam.window.rules import WindowParams, windows

DAY = 86400
# rsdt_beam.pipelines.sample's window parameters (training windows, label = ones [ty, tx]).
PARAMS = WindowParams(60 * DAY, 1, 3, 6)
WINDOW_FLAGS = ["--Delta", "60d", "--omega", "3", "--Omega", "6", "--no_progress"]


@pytest.fixture(scope="module")
def sample(sample_run):
    """The bundled sample through rsdt_beam.pipelines.sample (stacks + per-tile training windows), plus
    sharded training windows and per-tile inference windows from the same stacks."""
    out = sample_run
    stack = os.path.join(out, "stack")
    execute(
        WINDOW,
        [
            "--stack_dir",
            stack,
            "--window_output",
            os.path.join(out, "sharded"),
            "--mode",
            "training",
            "--layout",
            "sharded",
            "--records_per_shard",
            "40",
            *WINDOW_FLAGS,
        ],
    )
    execute(
        WINDOW,
        ["--stack_dir", stack, "--window_output", os.path.join(out, "infer"), "--mode", "inference", *WINDOW_FLAGS],
    )
    return {name: os.path.join(out, name) for name in ("stack", "windows", "sharded", "infer")}


def expected_windows(stack_dir):
    """{(tile, window id): Window} built from the stacks with the window rules."""
    metadata = read_stack_metadata(stack_dir)
    return {
        (tile, w.window_id): w
        for tile in list_tiles(stack_dir)
        for w in windows(read_tile_stack(stack_dir, tile, metadata), PARAMS)
    }


def digest(array):
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def padded(frames, length=6, value=-1.0):
    out = np.full((length, *frames.shape[1:]), value, frames.dtype)
    out[: len(frames)] = frames
    return out


@pytest.mark.e2e
def test_numpy_reader_gives_the_windows_of_the_stacks(sample):
    expected = expected_windows(sample["stack"])
    records = list(read_windows(sample["windows"]))
    assert len(records) == len(expected) == 270
    assert [r.tile for r in records] == sorted(r.tile for r in records)  # per-tile files, row-major
    for record in records:
        window = expected[(record.tile, record.window_id)]
        np.testing.assert_array_equal(record.feature, window.current.frames)
        np.testing.assert_array_equal(record.label, np.ones((32, 32), np.float32))
        np.testing.assert_array_equal(record.timestamps, window.current.timestamps)
        assert (record.window_start, record.window_end) == (
            int(window.current.timestamps[0]),
            int(window.current.timestamps[-1]),
        )
    sharded = list(read_windows(sample["sharded"], tile=(2, 1)))
    assert [r.window_id for r in sharded] == list(range(30))
    assert all(r.tile == (2, 1) for r in sharded)
    assert len(list(training_pairs(sample["sharded"]))) == 270
    assert len(window_files(sample["sharded"])) == 7  # 270 records, 40 per shard
    with pytest.raises(ValueError, match="no Label"):
        next(training_pairs(sample["infer"]))


def test_online_windows_without_tensorflow_apply_the_filter(sample_run):
    late = 1483228800  # 2017-01-01
    stack = os.path.join(sample_run, "stack")
    kept = list(online_windows(stack, (1, 1), PARAMS, lambda cur: cur[0][0] >= late))
    all_windows = list(online_windows(stack, (1, 1), PARAMS))
    assert len(all_windows) == 30
    assert [w.window_id for w in kept] == [w.window_id for w in all_windows if w.current.timestamps[0] >= late]
    assert 0 < len(kept) < 30


@pytest.mark.e2e
def test_training_dataset_static_shapes_shuffled_across_files(sample):
    tf = pytest.importorskip("tensorflow")
    from rsdt_beam.datasets import training_dataset

    expected = {digest(padded(r.feature)): r.tile for r in read_windows(sample["windows"])}
    for source in (sample["windows"], sample["sharded"]):
        dataset = training_dataset(source, batch_size=8, seed=7, cycle_length=3)
        feature_spec, label_spec = dataset.element_spec
        assert feature_spec.shape.as_list() == [None, 6, 32, 32, 1] and feature_spec.dtype == tf.float32
        assert label_spec.shape.as_list() == [None, 32, 32]
        assert int(dataset.cardinality()) == 34  # a whole folder: known length, Keras knows the steps
        features = [f for batch, _labels in dataset for f in batch.numpy()]
        assert len(features) == 270
        assert sorted(digest(f) for f in features) == sorted(expected)
        first_tiles = {expected[digest(f)] for f in features[:16]}
        assert len(first_tiles) > 1, "records of several files are mixed"
    validation = training_dataset(sample["windows"], shuffle_buffer=0)
    passes = [[digest(f) for f, _ in validation.as_numpy_iterator()] for _ in range(2)]
    assert passes[0] == passes[1] and sorted(passes[0]) == sorted(expected)
    with pytest.raises(ValueError, match="inference windows"):
        training_dataset(sample["infer"])


@pytest.mark.e2e
def test_inference_dataset_in_time_order_with_tile_and_times(sample):
    pytest.importorskip("tensorflow")
    from rsdt_beam.datasets import inference_dataset

    expected = expected_windows(sample["stack"])
    elements = list(inference_dataset(sample["infer"], tile=(2, 1)).as_numpy_iterator())
    assert [int(e["window_id"]) for e in elements] == list(range(30))
    starts = [int(e["window_start"]) for e in elements]
    assert starts == sorted(starts)
    for element in elements:  # padded to Omega=6 by default, with the frame mask
        window = expected[((2, 1), int(element["window_id"]))]
        count = len(window.current.timestamps)
        assert tuple(element["tile"]) == (2, 1)
        np.testing.assert_array_equal(element["Feature"], padded(window.current.frames))
        np.testing.assert_array_equal(
            element["Timestamps"], padded(window.current.timestamps, value=0.0).astype(np.float64)
        )
        np.testing.assert_array_equal(element["frame_mask"], np.arange(6) < count)
        assert int(element["window_end"]) == int(window.current.timestamps[-1])
    assert any(not e["frame_mask"].all() for e in elements), "some windows are shorter than Omega"
    unpadded = list(inference_dataset(sample["infer"], tile=(2, 1), frames=0).as_numpy_iterator())
    for element in unpadded:
        window = expected[((2, 1), int(element["window_id"]))]
        np.testing.assert_array_equal(element["Feature"], window.current.frames)
        np.testing.assert_array_equal(element["Timestamps"], window.current.timestamps)
        assert element["frame_mask"].all()
    padded_ds = inference_dataset(sample["infer"], frames=8)
    assert padded_ds.element_spec["Feature"].shape.as_list() == [8, 32, 32, 1]
    everything = list(padded_ds.as_numpy_iterator())
    assert [(tuple(e["tile"]), int(e["window_id"])) for e in everything] == sorted(expected)
    for element in everything[:40]:
        window = expected[(tuple(element["tile"]), int(element["window_id"]))]
        np.testing.assert_array_equal(element["Feature"], padded(window.current.frames, 8))
    # The batching the docs show: every field batches, Timestamps included, for per-tile files and shards.
    for source in (sample["infer"], sample["sharded"]):
        batch = next(iter(inference_dataset(source, tile=(0, 2)).batch(4)))
        assert batch["Feature"].shape == (4, 6, 32, 32, 1) and batch["Timestamps"].shape == (4, 6)
        assert batch["frame_mask"].shape == (4, 6)
    from_shards = list(inference_dataset(sample["sharded"], tile=(0, 2)).as_numpy_iterator())
    assert [int(e["window_id"]) for e in from_shards] == list(range(30))


@pytest.mark.e2e
def test_online_dataset_is_rsdtlib_get_infer_dataset(sample):
    tf = pytest.importorskip("tensorflow")
    from rsdt_beam.datasets import OnlineWindows, online_dataset

    online = OnlineWindows(sample["stack"], PARAMS)
    assert online.get_num_tiles() == (3, 3)
    assert online.get_infer_dataset((7, 7)) is None
    with open(os.path.join(sample["windows"], "windows.csv")) as f:
        listed = [
            (int(r["window_id"]), int(r["start_epoch"]), int(r["end_epoch"]), int(r["frames"]))
            for r in csv.DictReader(f)
            if (r["tile_j"], r["tile_i"]) == ("0", "0")
        ]
    assert online.windows_list((0, 0)) == listed

    # rsdtlib's documented filter and its interactive inference example (concat, padded_batch -1.0).
    later_than = lambda window: tf.math.greater(tf.cast(window[0][0], tf.int64), 1483228800)  # noqa: E731
    dataset = online.get_infer_dataset((1, 2), win_filter=later_than)
    final = dataset.map(lambda x: tf.concat([x[1], x[2], x[3]], axis=-1)).padded_batch(
        4, padded_shapes=[6, 32, 32, 1], padding_values=-1.0
    )
    got = np.concatenate([batch.numpy() for batch in final])
    want = [
        w
        for (tile, _), w in sorted(expected_windows(sample["stack"]).items())
        if tile == (1, 2) and w.current.timestamps[0] > 1483228800
    ]
    assert len(got) == len(want) > 0
    for array, window in zip(got, want):
        np.testing.assert_array_equal(array, padded(window.current.frames))

    triple = WindowParams(60 * DAY, 1, 2, 6, triple=True)
    elements = list(online_dataset(sample["stack"], (0, 0), triple).as_numpy_iterator())
    metadata = read_stack_metadata(sample["stack"])
    rules = list(windows(read_tile_stack(sample["stack"], (0, 0), metadata), triple))
    assert len(elements) == len(rules) > 0
    for element, window in zip(elements, rules):
        assert len(element) == 3
        for part, expected_part in zip(element, window):  # padded to Omega, with the frame mask
            count = len(expected_part.timestamps)
            np.testing.assert_array_equal(part[0][:count], expected_part.timestamps)
            np.testing.assert_array_equal(part[3], padded(expected_part.optical))
            np.testing.assert_array_equal(part[4], np.arange(6) < count)
    raw = next(iter(online_dataset(sample["stack"], (0, 0), triple, frames=0)))  # rsdtlib's unpadded parts
    np.testing.assert_array_equal(raw[0][0], rules[0].parts[0].timestamps)

    # The module docstring's example: the current part's optical frames, batched.
    batch = next(iter(online.get_infer_dataset((0, 0)).map(lambda cur: cur[3]).batch(8)))
    assert batch.shape == (8, 6, 32, 32, 1)
