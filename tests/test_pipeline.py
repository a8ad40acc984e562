"""Stages 2 and 3 end to end on the DirectRunner: real data, rsdtlib-readable outputs, bad input."""

import csv
import json
import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from conftest import BBOX, SAMPLE_STACK_FLAGS, SAMPLE_WINDOW_FLAGS, reference_stack, write_synthetic_eopatches

from rsdt_beam.acquire.eopatch import write_eopatch
from rsdt_beam.builders import listed_stack_plan
from rsdt_beam.cli.commands import RUN, STACK, WINDOW
from rsdt_beam.cli.run import execute
from rsdt_beam.common.times import parse_time, time_name
from rsdt_beam.errors import UserError
from rsdt_beam.specs import InputsSpec, StackSpec
from rsdt_beam.stack.files import read_tile_stack
from rsdt_beam.stack.rules import StackParams, written_times
from rsdt_beam.stack.transforms import Stack, stack_folder
from rsdt_beam.window.rules import WindowParams, window_spans

pytestmark = pytest.mark.e2e
tf = pytest.importorskip("tensorflow")

DAY = 86400.0
SAMPLE_FLAGS = [*SAMPLE_STACK_FLAGS, "--no_progress"]
WINDOW_FLAGS = SAMPLE_WINDOW_FLAGS


def tfrecords(path, spec):
    """Every record of a GZIP TFRecord file parsed with TensorFlow (as rsdtlib reads them)."""
    dataset = tf.data.TFRecordDataset(path, compression_type="GZIP")
    return [tf.io.parse_single_example(r, spec) for r in dataset]


STACK_SPEC = {
    name: tf.io.FixedLenFeature([], tf.string) for name in ("Timestamp", "SAR_ascending", "SAR_descending", "OPT")
}
WINDOW_SPEC = {
    "Feature": tf.io.FixedLenFeature([], tf.string),
    "window_id": tf.io.FixedLenFeature([], tf.int64),
    "tile": tf.io.FixedLenFeature([2], tf.int64),
    "Timestamps": tf.io.FixedLenFeature([], tf.string),
}


def file_bytes(folder):
    return {
        name: open(os.path.join(folder, name), "rb").read()
        for name in sorted(os.listdir(folder))
        if name.endswith(".tfrecords")
    }


def test_real_sentinel2_sample_stacks_and_windows(tmp_path, sample_eopatches, sample_arrays):
    stack_dir, window_dir = str(tmp_path / "stack"), str(tmp_path / "windows")
    execute(STACK, ["--optical", sample_eopatches, *SAMPLE_FLAGS, "--stack_output", stack_dir])

    times, ndvi, valid = sample_arrays
    written = written_times(times, StackParams(parse_time("2016-01-01"), parse_time("2017-07-01"), 10 * DAY))
    metadata = json.load(open(os.path.join(stack_dir, "metadata.json")))
    assert list(metadata)[:6] == ["tile_size_y", "tile_size_x", "bands_sar", "bands_opt", "deadzone_y", "deadzone_x"]
    assert (metadata["bands_sar"], metadata["bands_opt"], metadata["tiles_written"]) == (0, 1, 9)
    assert metadata["grid"]["crs"] == "EPSG:32633" and len(metadata["timestamps"]) == len(written)
    observations = {"optical": (times, ndvi, valid)}
    for j, i in [(0, 0), (1, 2), (2, 1)]:
        parsed = tfrecords(os.path.join(stack_dir, f"{j}_{i}.tfrecords"), STACK_SPEC)
        assert len(parsed) == len(written)
        stamps = [tf.io.parse_tensor(p["Timestamp"], tf.float64).numpy() for p in parsed]
        np.testing.assert_array_equal(stamps, written)
        opt = np.stack([tf.io.parse_tensor(p["OPT"], tf.float32).numpy() for p in parsed])
        sar = tf.io.parse_tensor(parsed[0]["SAR_ascending"], tf.float32).numpy()
        assert opt.shape == (len(written), 32, 32, 1) and sar.shape == (32, 32, 0)
        window = (j * 28, j * 28 + 32, i * 28, i * 28 + 32)
        np.testing.assert_array_equal(opt, reference_stack(observations, written, window, 0, 1))

    execute(WINDOW, ["--stack_dir", stack_dir, "--window_output", window_dir, *WINDOW_FLAGS, "--no_progress"])
    expected = list(window_spans(written, WindowParams(60 * DAY, 1, 3, 6)))
    stack = read_tile_stack(stack_dir, (1, 1), metadata)
    parsed = tfrecords(os.path.join(window_dir, "1_1.tfrecords"), WINDOW_SPEC)
    assert [int(p["window_id"]) for p in parsed] == [s.window_id for s in expected]
    for record, span in zip(parsed, expected):
        feature = tf.io.parse_tensor(record["Feature"], tf.float32).numpy()
        np.testing.assert_array_equal(feature, stack.frames[span.current[0] : span.current[1]])  # whole window
        assert list(record["tile"].numpy()) == [1, 1]
    rows = list(csv.DictReader(open(os.path.join(window_dir, "windows.csv"))))
    assert len(rows) == 9 * len(expected)
    assert json.load(open(os.path.join(window_dir, "metadata.json")))["windows_written"] == len(rows)


def test_three_modalities_fused_equals_separate_stages_and_multiprocessing(tmp_path):
    start = parse_time("2020-01-01")
    times = {
        "sar_ascending": [start + d * DAY for d in (-3, 1, 7, 13, 19, 25, 31)],
        "sar_descending": [start + d * DAY for d in (2, 8, 14, 20, 26, 33)],
        "optical": [start + d * DAY + 3600 for d in (-5, 1, 4, 9, 14, 19, 24, 29, 34)],
    }
    source = write_synthetic_eopatches(
        str(tmp_path / "obs"), {"sar_ascending": 2, "sar_descending": 2, "optical": 5}, times
    )
    inputs = [
        "--sar_ascending",
        str(tmp_path / "obs/sar_ascending"),
        "--sar_descending",
        str(tmp_path / "obs/sar_descending"),
        "--optical",
        str(tmp_path / "obs/optical"),
        "--starttime",
        "2020-01-01",
        "--endtime",
        "2020-02-01",
        "--delta_step",
        "3d",
        "--tile_size",
        "16",
        "--deadzone",
        "1",
        "--chunk_size",
        "20",
        "--no_progress",
    ]
    windows = ["--Delta", "10d", "--omega", "2", "--Omega", "4", "--mode", "training"]
    execute(STACK, inputs + ["--stack_output", str(tmp_path / "stack")])
    execute(
        WINDOW,
        ["--stack_dir", str(tmp_path / "stack"), "--window_output", str(tmp_path / "w_sep"), *windows, "--no_progress"],
    )
    execute(RUN, inputs + windows + ["--window_output", str(tmp_path / "w_fused")])
    execute(
        RUN,
        inputs
        + windows
        + [
            "--window_output",
            str(tmp_path / "w_mp"),
            "--direct_running_mode",
            "multi_processing",
            "--direct_num_workers",
            "2",
        ],
    )
    separate, fused, multi = (file_bytes(str(tmp_path / d)) for d in ("w_sep", "w_fused", "w_mp"))
    assert len(separate) == 4 and separate == fused == multi  # 2 x 2 tiles, byte-identical

    metadata = json.load(open(tmp_path / "stack" / "metadata.json"))
    assert (metadata["bands_sar"], metadata["bands_opt"]) == (2, 5)
    written = written_times(
        [t for ts in times.values() for t in ts], StackParams(start, parse_time("2020-02-01"), 3 * DAY)
    )
    stack = read_tile_stack(str(tmp_path / "stack"), (1, 0), metadata)
    np.testing.assert_array_equal(stack.times, written)
    np.testing.assert_array_equal(stack.frames, reference_stack(source, written, (14, 30, 0, 16), 2, 5))
    label_spec = dict(WINDOW_SPEC, Label=tf.io.FixedLenFeature([], tf.string))
    first = tfrecords(str(tmp_path / "w_fused" / "1_0.tfrecords"), label_spec)[0]
    assert tf.io.parse_tensor(first["Feature"], tf.float32).shape[1:] == (16, 16, 9)
    np.testing.assert_array_equal(tf.io.parse_tensor(first["Label"], tf.float32).numpy(), np.ones((16, 16)))


def test_transforms_with_test_pipeline(tmp_path):
    start = parse_time("2021-06-01")
    times = {"optical": [start + d * DAY for d in range(0, 20, 2)]}
    source = write_synthetic_eopatches(str(tmp_path / "obs"), {"optical": 3}, times, shape=(24, 24))
    plan, refs, _rejected, _summary = listed_stack_plan(
        InputsSpec(optical=str(tmp_path / "obs/optical"), opt_bands_feature="L1C_data"),
        StackSpec(parse_time("2021-06-01"), parse_time("2021-07-01"), 4 * DAY, (12, 12), (0, 0), 256),
    )
    written = written_times(times["optical"], plan.params)
    with BeamTestPipeline() as pipeline:
        folder = stack_folder(str(tmp_path / "stacks"), plan.metadata, 1)
        stacks = (pipeline | beam.Create(refs) | Stack(plan, folder, 1)).stacks
        summaries = (
            stacks
            | "Load" >> beam.Map(lambda f: f.load())
            | beam.Map(lambda s: (s.tile, len(s), float(s.frames[-1].sum())))
        )
        expected = [
            (
                (j, i),
                len(written),
                float(reference_stack(source, written[-1:], (12 * j, 12 * j + 12, 12 * i, 12 * i + 12), 0, 3).sum()),
            )
            for j in range(2)
            for i in range(2)
        ]
        assert_that(summaries, equal_to(expected))


def test_triple_windows_sharded_inference_records(tmp_path):
    start = parse_time("2020-01-01")
    times = {"sar_ascending": [start + d * DAY for d in range(0, 60, 2)]}
    write_synthetic_eopatches(str(tmp_path / "obs"), {"sar_ascending": 2}, times, shape=(20, 20))
    execute(
        RUN,
        [
            "--sar_ascending",
            str(tmp_path / "obs/sar_ascending"),
            "--starttime",
            "2020-01-01",
            "--endtime",
            "2020-03-01",
            "--delta_step",
            "2d",
            "--tile_size",
            "10",
            "--Delta",
            "8d",
            "--omega",
            "2",
            "--Omega",
            "4",
            "--triple",
            "--window_stride",
            "2",
            "--layout",
            "sharded",
            "--records_per_shard",
            "10",
            "--window_output",
            str(tmp_path / "w"),
            "--no_progress",
        ],
    )
    shards = sorted(n for n in os.listdir(tmp_path / "w") if n.startswith("windows-"))
    assert shards and all(n.endswith(".tfrecords") for n in shards)
    parsed = [r for n in shards for r in tfrecords(str(tmp_path / "w" / n), WINDOW_SPEC)]
    spans = list(window_spans(np.array(times["sar_ascending"]), WindowParams(8 * DAY, 2, 2, 4, triple=True)))
    assert len(parsed) == 4 * len(spans)
    by_key = {(tuple(p["tile"].numpy()), int(p["window_id"])): p for p in parsed}
    for span in spans:
        feature = tf.io.parse_tensor(by_key[((0, 1), span.window_id)]["Feature"], tf.float32)
        assert feature.shape == (span.current[1] - span.current[0], 10, 10, 4)  # the whole current window
    meta = json.load(open(tmp_path / "w" / "metadata.json"))
    assert meta["layout"] == "sharded" and meta["windows_written"] == len(parsed)


def test_tile_selection_and_window_filter(tmp_path, sample_eopatches):
    stack_dir = str(tmp_path / "stack")
    execute(STACK, ["--optical", sample_eopatches, *SAMPLE_FLAGS, "--stack_output", stack_dir])
    execute(
        WINDOW,
        [
            "--stack_dir",
            stack_dir,
            "--window_output",
            str(tmp_path / "train"),
            *WINDOW_FLAGS,
            "--tiles",
            "rsdtlib-train",
            "--mode",
            "training",
            "--no_progress",
        ],
    )
    execute(
        WINDOW,
        [
            "--stack_dir",
            stack_dir,
            "--window_output",
            str(tmp_path / "few"),
            *WINDOW_FLAGS,
            "--tiles",
            "list:0_0,2_2",
            "--window_filter",
            "window_filters:at_least_five_frames",
            "--no_progress",
        ],
    )
    train = sorted(n for n in os.listdir(tmp_path / "train") if n.endswith(".tfrecords"))
    expected = [f"{j}_{i}.tfrecords" for j in range(3) for i in range(3) if (j + i / 2) % 2 == 0]
    assert train == expected
    rows = list(csv.DictReader(open(tmp_path / "few" / "windows.csv")))
    assert {(r["tile_j"], r["tile_i"]) for r in rows} == {("0", "0"), ("2", "2")}
    assert rows and all(int(r["frames"]) >= 5 for r in rows)


# --- bad input ------------------------------------------------------------


def _good_inputs(root, count=6):
    start = parse_time("2020-01-01")
    times = {"optical": [start + d * DAY for d in range(count)]}
    write_synthetic_eopatches(root, {"optical": 3}, times, shape=(20, 20))
    return start, times["optical"]


def stack_flags(root, out):
    return [
        "--optical",
        root,
        "--starttime",
        "2020-01-01",
        "--endtime",
        "2020-02-01",
        "--delta_step",
        "1d",
        "--tile_size",
        "10",
        "--stack_output",
        out,
        "--no_progress",
    ]


def test_bad_observations_are_set_aside_with_reasons(tmp_path):
    root = str(tmp_path / "obs" / "optical")
    start, times = _good_inputs(str(tmp_path / "obs"))
    rng = np.random.default_rng(5)
    # one with 2 bands instead of 3, one on another grid, one missing its data, one unreadable, one bad name
    write_eopatch(
        os.path.join(root, time_name(start + 10 * DAY)),
        rng.random((20, 20, 2)),
        np.ones((20, 20)),
        BBOX,
        start + 10 * DAY,
        "L1C_data",
        "dataMask",
    )
    shifted = json.loads(json.dumps(BBOX))
    shifted["coordinates"][0] = [[x + 100, y] for x, y in shifted["coordinates"][0]]
    write_eopatch(
        os.path.join(root, time_name(start + 11 * DAY)),
        rng.random((20, 20, 3)),
        np.ones((20, 20)),
        shifted,
        start + 11 * DAY,
        "L1C_data",
        "dataMask",
    )
    os.makedirs(os.path.join(root, time_name(start + 12 * DAY), "mask"))
    broken = os.path.join(root, time_name(start + 13 * DAY))
    write_eopatch(broken, rng.random((20, 20, 3)), np.ones((20, 20)), BBOX, start + 13 * DAY, "L1C_data", "dataMask")
    with open(os.path.join(broken, "data", "L1C_data.npy"), "wb") as f:
        f.write(b"not a numpy file")
    os.makedirs(os.path.join(root, "2020-01-20"))
    out = str(tmp_path / "stack")
    result = execute(STACK, stack_flags(root, out))
    rejected = json.load(open(os.path.join(out, "rejected.json")))
    reasons = {os.path.basename(r["observation"]): r["reason"] for r in rejected}
    assert "has 2 bands but optical observations of this run have 3" in reasons[time_name(start + 10 * DAY)]
    assert "differs from the run's grid" in reasons[time_name(start + 11 * DAY)]
    assert "missing data/L1C_data.npy" in reasons[time_name(start + 12 * DAY)]
    assert "unreadable data/L1C_data" in reasons[time_name(start + 13 * DAY)]
    assert "not a %Y%m%dT%H%M%S time stamp" in reasons["2020-01-20"]
    metadata = json.load(open(os.path.join(out, "metadata.json")))
    assert len(metadata["timestamps"]) == len(times)  # the rest went through
    assert result.counters["observations_rejected"] == 4


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--tile_size", "64"], "larger than the area"),
        (["--deadzone", "5"], "deadzone_y=5 is too large"),
        (["--delta_step", "0"], "delta_step must be positive"),
    ],
)
def test_invalid_stack_parameters_fail_before_anything_is_written(tmp_path, extra, message):
    _good_inputs(str(tmp_path / "obs"))
    out = str(tmp_path / "stack")
    with pytest.raises(ValueError, match=message):
        execute(STACK, stack_flags(str(tmp_path / "obs/optical"), out) + extra)
    assert not os.path.exists(out)


def test_invalid_window_parameters_and_empty_input(tmp_path):
    _good_inputs(str(tmp_path / "obs"))
    flags = stack_flags(str(tmp_path / "obs/optical"), str(tmp_path / "stack"))
    with pytest.raises(ValueError, match="omega must be in"):
        execute(RUN, flags + ["--omega", "9", "--Omega", "4", "--window_output", str(tmp_path / "w")])
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="no observations before endtime .* in .*empty"):
        execute(STACK, stack_flags(str(tmp_path / "empty"), str(tmp_path / "stack")))
    with pytest.raises(UserError, match="does not exist"):
        execute(STACK, stack_flags(str(tmp_path / "missing"), str(tmp_path / "stack")))
    with pytest.raises(UserError, match="no complete Stage 2 output"):
        execute(WINDOW, ["--stack_dir", str(tmp_path / "empty"), "--window_output", str(tmp_path / "w")])


def test_failed_run_leaves_no_output_looking_complete(tmp_path, sample_eopatches):
    stack_dir, window_dir = str(tmp_path / "stack"), str(tmp_path / "w")
    execute(STACK, ["--optical", sample_eopatches, *SAMPLE_FLAGS, "--stack_output", stack_dir])
    execute(WINDOW, ["--stack_dir", stack_dir, "--window_output", window_dir, *WINDOW_FLAGS, "--no_progress"])
    assert os.path.exists(os.path.join(window_dir, "metadata.json"))
    with pytest.raises(Exception, match="label function failed on purpose"):
        execute(
            WINDOW,
            [
                "--stack_dir",
                stack_dir,
                "--window_output",
                window_dir,
                *WINDOW_FLAGS,
                "--mode",
                "training",
                "--label_fn",
                "window_filters:failing_label",
                "--no_progress",
                "--overwrite",
            ],
        )
    assert not os.path.exists(os.path.join(window_dir, "metadata.json"))
    hidden = [n for n in os.listdir(window_dir) if n.startswith(".")]
    assert hidden in ([], [".windows_csv_parts"])  # no temporary record files; rows parts go with the next run
    execute(
        WINDOW, ["--stack_dir", stack_dir, "--window_output", window_dir, *WINDOW_FLAGS, "--no_progress", "--overwrite"]
    )
    assert os.path.exists(os.path.join(window_dir, "metadata.json"))
    assert not [n for n in os.listdir(window_dir) if n.startswith(".")]


def test_real_13_band_scenes_with_the_cloud_mask(tmp_path):
    """The 5 dates of real 13-band S2 L1C reflectance, valid = not CLM, through both stages."""
    from conftest import SAMPLE_DIR

    scenes = np.load(os.path.join(SAMPLE_DIR, "REFERENCE_SCENES.npy"))
    index = json.load(open(os.path.join(SAMPLE_DIR, "reference_scenes_index.json")))
    clm = np.load(os.path.join(SAMPLE_DIR, "mask", "CLM.npy"))[..., 0]
    bbox = json.load(open(os.path.join(SAMPLE_DIR, "bbox.geojson")))
    times = np.array([parse_time(s) for s in index["timestamps"]])
    valid = clm[index["timestamps_index"]] == 0
    root = str(tmp_path / "S2")
    for k, time in enumerate(times):
        write_eopatch(os.path.join(root, time_name(time)), scenes[k], valid[k], bbox, time, "L1C_data", "dataMask")
    execute(
        RUN,
        [
            "--optical",
            root,
            "--starttime",
            "2015-07-01",
            "--endtime",
            "2015-10-01",
            "--delta_step",
            "2d",
            "--tile_size",
            "50",
            "--stack_output",
            str(tmp_path / "stack"),
            "--Delta",
            "30d",
            "--omega",
            "2",
            "--Omega",
            "3",
            "--window_output",
            str(tmp_path / "w"),
            "--no_progress",
        ],
    )
    metadata = json.load(open(tmp_path / "stack" / "metadata.json"))
    assert (metadata["bands_opt"], metadata["num_tiles_y"], metadata["num_tiles_x"]) == (13, 2, 2)
    stack = read_tile_stack(str(tmp_path / "stack"), (1, 1), metadata)
    np.testing.assert_array_equal(stack.times, np.sort(times))
    reference = reference_stack({"optical": (times, scenes, valid)}, np.sort(times), (50, 100, 50, 100), 0, 13)
    np.testing.assert_array_equal(stack.frames, reference)
    # the two cloudy dates leave the first (clear) date's reflectance in place; before it: zeros
    assert stack.frames[1].any() and np.array_equal(stack.frames[1], stack.frames[0])
    windows = tfrecords(str(tmp_path / "w" / "1_1.tfrecords"), WINDOW_SPEC)
    first = tf.io.parse_tensor(windows[0]["Feature"], tf.float32).numpy()
    np.testing.assert_array_equal(first, reference[:2])  # 07-11 and 07-31 within 30 days
