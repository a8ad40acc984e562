"""Stitching, GeoTIFF maps and online/offline inference with a tiny Keras model on the real sample."""

import csv
import os

import numpy as np
import pytest
from conftest import SAMPLE_STACK_FLAGS, SAMPLE_WINDOW_FLAGS
from window_filters import mean_model

from rsdt_beam.grid import Grid, TileLayout
from rsdt_beam.maps import core_window, read_geotiff, stitch, write_geotiff

DAY = 86400
WINDOW_FLAGS = [*SAMPLE_WINDOW_FLAGS, "--no_progress"]
UNPADDED = ["--frames", "0"]  # mean_model averages over time: windows keep their lengths
SAMPLE_FLAGS = SAMPLE_STACK_FLAGS


def centre_owner(position, tile_size, stride, count):
    """Index of the tile whose centre part holds `position` along one axis (farthest from its edges), or None."""
    best, best_distance = None, -1
    for k in range(count):
        start = k * stride
        if start <= position < start + tile_size:
            distance = min(position - start, start + tile_size - 1 - position)
            if distance > best_distance:
                best, best_distance = k, distance
    return best


def test_stitch_takes_each_pixel_from_the_tile_whose_centre_holds_it():
    layout = TileLayout(23, 25, 8, 10, 1, 2)  # 3 x 3 tiles, strides 6 and 6, leftovers bottom and right
    predictions = {(j, i): np.full((8, 10), 10 * j + i, np.float32) for j, i in layout.tiles()}
    stitched = stitch(layout, predictions)
    for r in range(layout.height):
        for c in range(layout.width):
            owner_j = centre_owner(r, 8, layout.stride_y, layout.num_tiles_y)
            owner_i = centre_owner(c, 10, layout.stride_x, layout.num_tiles_x)
            if owner_j is None or owner_i is None:
                assert np.isnan(stitched[r, c]), (r, c)
            else:
                assert stitched[r, c] == 10 * owner_j + owner_i, (r, c)
    trimmed = stitch(layout, predictions, trim_edges=True)
    assert np.isnan(trimmed[[0, 19]]).all() and np.isnan(trimmed[:, [0, 1, 20, 21]]).all()
    np.testing.assert_array_equal(trimmed[1:19, 2:20], stitched[1:19, 2:20])

    centre_only = {tile: p[1:-1, 2:-2, None] for tile, p in predictions.items()}  # [6, 6, 1] with channels
    from_centres = stitch(layout, centre_only)
    assert from_centres.shape == (23, 25, 1)
    np.testing.assert_array_equal(from_centres[..., 0], trimmed)
    assert core_window(layout, 1, 1) == (7, 13, 8, 14)

    missing = stitch(layout, {(0, 0): predictions[(0, 0)]})
    assert np.isnan(missing[7:]).all() and (missing[:7, :8] == 0).all()
    with pytest.raises(ValueError, match=r"tile \(0, 1\) has shape \(5, 5\)"):
        stitch(layout, {(0, 1): np.zeros((5, 5))})


def test_geotiff_map_keeps_the_grid(tmp_path):
    grid = Grid("EPSG:32633", (10.0, 0.0, 465180.0, 0.0, -10.0, 5080250.0), 7, 9)
    array = np.arange(63, dtype=np.float32).reshape(7, 9)
    array[0, 0] = np.nan
    path = write_geotiff(str(tmp_path / "m.tif"), array, grid, tags={"RSDT_WINDOW_ID": "3"})
    back, back_grid, tags = read_geotiff(path)
    assert back_grid == grid and tags["RSDT_WINDOW_ID"] == "3"
    np.testing.assert_array_equal(back, array)
    two_bands, _, _ = read_geotiff(write_geotiff(str(tmp_path / "c.tif"), np.stack([array, -array], -1), grid))
    assert two_bands.shape == (7, 9, 2)
    with pytest.raises(ValueError, match="grid is 7 x 9"):
        write_geotiff(str(tmp_path / "bad.tif"), array[1:], grid)


# 21 x 21 tiles of 16 px (deadzone 1, stride 14) on 300 x 300 px: tile groups of 18 x 18 tiles (252 px) and 3 x 3
# tiles (43 px with the outer deadzone), a 4 px leftover, internal GeoTIFF blocks of 256 px that cut the groups.
GROUPED = TileLayout(300, 300, 16, 16, 1, 1)
GROUPED_GRID = Grid("EPSG:32633", (10.0, 0.0, 465180.0, 0.0, -10.0, 5080250.0), 300, 300)
MISSING = {(j, i) for j in range(18, 21) for i in range(18, 21)} | {(0, 0), (5, 17), (17, 18)}  # a whole group too


def grouped_predictions(centre: bool, channels: int, window_ids=(0, 1)):
    """(WindowKey, prediction) of every tile but MISSING, per window id; the tile or its centre, [y, x] or [y, x, c]."""
    from rsdt_beam.inference import WindowKey

    rng = np.random.default_rng(7)
    shape = (14, 14) if centre else (16, 16)
    shape += (channels,) if channels else ()
    return [
        (WindowKey(tile, window_id, DAY * (10 + window_id), DAY * (40 + window_id)), rng.random(shape, np.float32))
        for window_id in window_ids
        for tile in GROUPED.tiles()
        if tile not in MISSING
    ]


def test_blocks_of_parts_list_each_part_in_every_block_it_overlaps():
    from rsdt_beam.maps import blocks_of_parts, group_window

    groups = GROUPED.chunks(256)
    windows = [group_window(group, trim_edges=False) for group in groups]
    assert len(groups) == 4 and windows[0] == (0, 253, 0, 253) and windows[-1] == (253, 296, 253, 296)
    trimmed = [group_window(group, trim_edges=True) for group in groups]
    assert trimmed[0] == (1, 253, 1, 253) and trimmed[-1] == (253, 295, 253, 295)
    for group, window in zip(groups, trimmed):  # a group's window is the union of its tiles' core windows
        cores = [core_window(GROUPED, j, i, True) for (j, i), _ in group.tiles()]
        assert sum(core.height * core.width for core in cores) == window.height * window.width
        assert all(core.intersection(window) == core for core in cores)
    blocks = blocks_of_parts(300, 300, (256, 256), windows)
    assert [block for block, _ in blocks] == [
        (0, 256, 0, 256),
        (0, 256, 256, 300),
        (256, 300, 0, 256),
        (256, 300, 256, 300),
    ]
    for block, overlapping in blocks:
        assert overlapping == [window for window in windows if window.intersection(block)]
    assert blocks_of_parts(100, 300, (256, 300), windows[:1])[0] == ((0, 100, 0, 300), [windows[0]])


def stage_parts(output, folder, elements, refs_file):
    """Runs StageMapParts alone; its elements are pickled to `refs_file`."""
    import pickle

    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that

    from rsdt_beam.inference import StagedPart, StageMapParts

    def only_references(staged):
        for key, part in staged:
            assert isinstance(part, StagedPart) and not any(isinstance(field, np.ndarray) for field in part), part
            assert len(key) == 3 and 1 <= part.tiles <= 18 * 18, (key, part)

    with TestPipeline() as pipeline:
        staged = pipeline | beam.Create(elements, reshuffle=False) | StageMapParts(output, folder)
        assert_that(staged, only_references)
        staged | beam.combiners.ToList() | beam.Map(lambda refs: refs_file.write_bytes(pickle.dumps(refs)))
    return pickle.loads(refs_file.read_bytes())


@pytest.mark.e2e
def test_staged_parts_hold_one_tile_group_each(tmp_path):
    from rsdt_beam.inference import MapOutput

    output = MapOutput(str(tmp_path / "maps"), GROUPED_GRID, GROUPED)
    folder = output.folder()
    refs = stage_parts(output, folder, grouped_predictions(centre=False, channels=0), tmp_path / "refs.pkl")
    # Per window time: 3 parts (the 4th group has no tile), each a group's tiles stitched, from its own file.
    assert sorted(key for key, _ in refs) == [(0, 10 * DAY, 40 * DAY)] * 3 + [(1, 11 * DAY, 41 * DAY)] * 3
    assert sorted(part.tiles for _, part in refs) == sorted([18 * 18 - 2, 18 * 3 - 1, 3 * 18] * 2)
    for _, part in refs:
        assert np.load(part.path).shape == (part.window.height, part.window.width)
        assert f"/.parts/{folder.run_id}/" in part.path


@pytest.mark.e2e
@pytest.mark.parametrize(
    "trim_edges, centre, channels", [(False, False, 0), (False, True, 3), (True, True, 0), (True, False, 2)]
)
def test_maps_written_from_tile_groups_equal_one_stitch_over_all_tiles(tmp_path, trim_edges, centre, channels):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline

    from rsdt_beam.inference import MapOutput, WriteMaps

    map_dir = tmp_path / "maps"
    leftover = map_dir / ".parts" / "killedrun" / "19700111T000000_19700210T000000" / "0_0.npy"
    leftover.parent.mkdir(parents=True)
    np.save(leftover, np.zeros(3))  # staged by a killed earlier run
    output = MapOutput(str(map_dir), GROUPED_GRID, GROUPED, trim_edges)
    elements = grouped_predictions(centre, channels)
    with TestPipeline() as pipeline:
        pipeline | beam.Create(elements, reshuffle=False) | WriteMaps(output)
    with open(map_dir / "maps.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(row["window_id"], row["tiles"]) for row in rows] == [("0", "429"), ("1", "429")]
    for row in rows:
        tiles = {key.tile: prediction for key, prediction in elements if key.window_id == int(row["window_id"])}
        want = stitch(GROUPED, tiles, trim_edges)
        array, grid, tags = read_geotiff(str(map_dir / row["file"]))
        assert grid == GROUPED_GRID and tags["RSDT_TILES"] == "429" and tags["RSDT_WINDOW_START"] == row["start"]
        np.testing.assert_array_equal(array, want)
        assert np.isnan(array[253:, 253:]).all() and np.isnan(array[296:]).all() and np.isnan(array[:, 296:]).all()
        assert np.isnan(array[:15, :15]).all() and not np.isnan(array[15:29, 15:29]).any()  # tile (0, 0) missing
    assert sorted(os.listdir(map_dir)) == sorted(
        ["maps.csv", "metadata.json", "rsdt_run.json", *(r["file"] for r in rows)]
    )


@pytest.mark.e2e
def test_a_retried_map_writer_leaves_the_map_an_earlier_attempt_wrote(tmp_path):
    from rsdt_beam.inference import MapOutput, write_map
    from rsdt_beam.maps import MapKey

    output = MapOutput(str(tmp_path / "maps"), GROUPED_GRID, GROUPED)
    folder = output.folder()
    elements = grouped_predictions(centre=False, channels=2, window_ids=(0,))
    refs = stage_parts(output, folder, elements, tmp_path / "refs.pkl")
    parts = [part for _, part in refs]
    key = MapKey(0, 10 * DAY, 40 * DAY)
    path, tiles = write_map(output, folder, key, parts + parts[:1])  # a part staged twice counts once
    assert tiles == 429 and not any(os.path.exists(part.path) for part in parts)
    written = open(path, "rb").read()
    assert write_map(output, folder, key, parts) == (path, 429)  # the parts were taken: the map stays
    assert open(path, "rb").read() == written
    os.remove(path)
    with pytest.raises(RuntimeError, match="staged parts are missing and the map was not written"):
        write_map(output, folder, key, parts)


def test_handler_batches_windows_of_different_lengths_and_pads():
    pytest.importorskip("tensorflow")
    from rsdt_beam.inference import KerasWindowModelHandler
    from rsdt_beam.normalization import Normalization

    rng = np.random.default_rng(0)
    batch = [rng.random((n, 32, 32, 2), np.float32) for n in (3, 5, 3, 6)]
    model = mean_model()
    results = KerasWindowModelHandler(create_model_fn=mean_model).run_inference(batch, model)
    for example, result in zip(batch, results):
        np.testing.assert_allclose(result, example.mean(axis=(0, 3)), rtol=1e-5, atol=1e-6)
    padded = KerasWindowModelHandler(create_model_fn=mean_model, frames=6, pad_value=-1.0).run_inference(batch, model)
    for example, result in zip(batch, padded):
        want = (example.sum(axis=(0, 3)) - 2 * (6 - len(example))) / 12
        np.testing.assert_allclose(result, want, rtol=1e-5, atol=1e-6)
    # A work item's windows in batches of 3: each prediction keeps its key, in order.
    keyed = list(KerasWindowModelHandler(create_model_fn=mean_model, batch_size=3).predict(enumerate(batch), model))
    assert [key for key, _ in keyed] == [0, 1, 2, 3]
    for (_, result), want in zip(keyed, results):
        np.testing.assert_array_equal(result, want)
    # The normalisation recorded beside a model is applied before padding: pad frames stay pad_value.
    normalization = Normalization(mean=(1.0, 3.0), std=(2.0, 4.0))
    normalized = KerasWindowModelHandler(
        create_model_fn=mean_model, frames=6, pad_value=-1.0, normalization=normalization
    ).run_inference(batch, model)
    for example, result in zip(batch, normalized):
        scaled = (example - np.array([1.0, 3.0], np.float32)) / np.array([2.0, 4.0], np.float32)
        want = (scaled.sum(axis=(0, 3)) - 2 * (6 - len(example))) / 12
        np.testing.assert_allclose(result, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="more than frames=4"):
        KerasWindowModelHandler(create_model_fn=mean_model, frames=4).run_inference(batch, model)
    with pytest.raises(ValueError, match="give a model"):
        KerasWindowModelHandler()


def expected_maps(stack_dir):
    """{window id: [H, W] map} computed directly: per pixel the window mean of the tile whose centre holds it."""
    from rsdt_beam.stack.files import read_stack_metadata, read_tile_stack
    from rsdt_beam.window.rules import WindowParams, window_spans

    metadata = read_stack_metadata(stack_dir)
    grid = Grid.from_json(metadata["grid"])
    params = WindowParams(60 * DAY, 1, 3, 6)
    stacks = {(j, i): read_tile_stack(stack_dir, (j, i), metadata) for j in range(3) for i in range(3)}
    spans = list(window_spans(stacks[(0, 0)].times, params))
    maps = {}
    for span in spans:
        means = {
            tile: stack.frames[span.current[0] : span.current[1]].mean(axis=(0, 3)) for tile, stack in stacks.items()
        }
        out = np.full((grid.height, grid.width), np.nan, np.float32)
        for r in range(grid.height):
            j = centre_owner(r, 32, 28, 3)
            for c in range(grid.width):
                i = centre_owner(c, 32, 28, 3)
                if j is not None and i is not None:
                    out[r, c] = means[(j, i)][r - 28 * j, c - 28 * i]
        maps[span.window_id] = out
    return grid, maps


def check_maps(map_dir, grid, maps):
    with open(os.path.join(map_dir, "maps.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["window_id"]) for r in rows] == sorted(maps)
    for row in rows:
        array, map_grid, tags = read_geotiff(os.path.join(map_dir, row["file"]))
        assert map_grid == grid and map_grid.matches(grid)
        assert tags["RSDT_WINDOW_START"] == row["start"] and row["tiles"] == "9"
        np.testing.assert_allclose(array, maps[int(row["window_id"])], rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.e2e
def test_online_inference_transform_writes_maps_pixel_for_pixel(sample_run, tmp_path):
    pytest.importorskip("tensorflow")
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that

    from rsdt_beam.inference import InferMaps, KerasWindowModelHandler, MapOutput
    from rsdt_beam.window.rules import WindowParams
    from rsdt_beam.window.selection import tile_selector
    from rsdt_beam.window.transforms import ReadTileStacks

    stack_dir = os.path.join(sample_run, "stack")
    map_dir = str(tmp_path / "maps")
    read = ReadTileStacks(stack_dir, tile_selector("all"))
    output = MapOutput.from_metadata(map_dir, read.metadata)
    handler = KerasWindowModelHandler(create_model_fn=mean_model, batch_size=8)

    def thirty_tifs(paths):
        assert len(paths) == 30 and all(p.endswith(".tif") for p in paths)

    with TestPipeline() as pipeline:
        paths = pipeline | read | InferMaps(WindowParams(60 * DAY, 1, 3, 6), handler, output)
        assert_that(paths, thirty_tifs)
    grid, maps = expected_maps(stack_dir)
    check_maps(map_dir, grid, maps)


@pytest.mark.e2e
def test_infer_command_offline_and_from_observations(sample_run, tmp_path):
    pytest.importorskip("tensorflow")
    from rsdt_beam.cli.commands import INFER, WINDOW
    from rsdt_beam.cli.run import execute

    stack_dir = os.path.join(sample_run, "stack")
    model_file = str(tmp_path / "mean.keras")
    mean_model().save(model_file)
    infer_windows = str(tmp_path / "infer_windows")
    execute(WINDOW, ["--stack_dir", stack_dir, "--window_output", infer_windows, "--mode", "inference", *WINDOW_FLAGS])
    grid, maps = expected_maps(stack_dir)

    offline = str(tmp_path / "offline")
    execute(
        INFER,
        [
            "--windows",
            infer_windows,
            "--model",
            model_file,
            "--map_output",
            offline,
            "--batch_size",
            "4",
            "--no_progress",
            *UNPADDED,
        ],
    )
    check_maps(offline, grid, maps)

    from_observations = str(tmp_path / "from_obs")
    execute(
        INFER,
        [
            "--optical",
            os.path.join(sample_run, "obs", "optical"),
            *SAMPLE_FLAGS,
            *WINDOW_FLAGS,
            *UNPADDED,
            "--model",
            model_file,
            "--map_output",
            from_observations,
            "--tiles",
            "expr:j != 1",
        ],
    )
    with open(os.path.join(from_observations, "maps.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30 and {r["tiles"] for r in rows} == {"6"}
    array, _, _ = read_geotiff(os.path.join(from_observations, rows[0]["file"]))
    want = maps[0].copy()
    want[30:58] = np.nan  # the middle tile row (its centre part) was not selected
    np.testing.assert_allclose(array, want, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert os.path.exists(os.path.join(from_observations, "rejected.json"))

    with pytest.raises(ValueError, match="--model"):
        execute(INFER, ["--windows", infer_windows, "--map_output", offline])


@pytest.mark.e2e
def test_online_inference_from_gs_stacks_and_model_to_gs_maps(sample_run, tmp_path):
    """Stacks, model file and maps on gs:// (a local GCS emulator); the maps equal the expected ones."""
    pytest.importorskip("tensorflow")
    from rsdt_beam.cli.commands import INFER
    from rsdt_beam.cli.run import execute
    from tests.gcs_emulator import gcs_emulator

    stack_dir = os.path.join(sample_run, "stack")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    mean_model().save(str(model_dir / "mean.keras"))
    grid, maps = expected_maps(stack_dir)
    with gcs_emulator(tmp_path / "gcs") as gcs:
        gcs.upload_tree(stack_dir, gcs.url("stack"))
        gcs.upload_tree(str(model_dir), gcs.url("model"))
        execute(
            INFER,
            [
                "--stack_dir",
                gcs.url("stack"),
                "--model",
                gcs.url("model", "mean.keras"),
                "--map_output",
                gcs.url("maps"),
                *WINDOW_FLAGS,
                *UNPADDED,
            ],
        )
        local = tmp_path / "downloaded"
        local.mkdir()
        for name, content in gcs.download_tree(gcs.url("maps")).items():
            (local / name).write_bytes(content)
    check_maps(str(local), grid, maps)


def fixed_frames_model(frames=6, output=(32, 32)):
    """A model with a fixed time axis, as one trained on `training_dataset` (padded to Omega) has."""
    import keras

    inputs = keras.Input((frames, 32, 32, 1))
    x = keras.layers.Reshape((frames, 32 * 32))(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)  # [1024]: the mean over time
    if output != (32, 32):
        x = keras.layers.Dense(output[0] * output[1])(x)
    x = keras.layers.Reshape(output)(x)
    return keras.Model(inputs, x)


@pytest.mark.e2e
def test_model_trained_on_training_dataset_runs_in_infer_without_flags_and_wrong_models_fail_fast(sample_run, tmp_path):
    pytest.importorskip("tensorflow")
    from rsdt_beam.cli.commands import INFER
    from rsdt_beam.cli.run import execute
    from rsdt_beam.datasets import training_dataset
    from rsdt_beam.errors import UserError

    stack_dir = os.path.join(sample_run, "stack")
    model = fixed_frames_model()
    model.compile(optimizer="sgd", loss="mse")
    model.fit(training_dataset(os.path.join(sample_run, "windows"), batch_size=32, seed=1), epochs=1, verbose=0)
    model_file = str(tmp_path / "fixed.keras")
    model.save(model_file)
    maps_dir = str(tmp_path / "maps")
    execute(INFER, ["--stack_dir", stack_dir, "--model", model_file, "--map_output", maps_dir, *WINDOW_FLAGS])
    grid, maps = expected_maps(stack_dir)
    with open(os.path.join(maps_dir, "maps.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30
    # Padded like the training windows: the mean over Omega=6 frames, -1.0 for the missing ones.
    from rsdt_beam.stack.files import read_stack_metadata, read_tile_stack
    from rsdt_beam.window.rules import WindowParams, window_spans

    stack = read_tile_stack(stack_dir, (0, 0), read_stack_metadata(stack_dir))
    span = next(window_spans(stack.times, WindowParams(60 * DAY, 1, 3, 6)))
    count = span.current[1] - span.current[0]
    want = (stack.frames[span.current[0] : span.current[1], ..., 0].sum(axis=0) - (6 - count)) / 6
    array, _, _ = read_geotiff(os.path.join(maps_dir, rows[0]["file"]))
    np.testing.assert_allclose(array[2:30, 2:30], want[2:30, 2:30], rtol=1e-5, atol=1e-6)

    wrong_output = str(tmp_path / "wrong_output.keras")
    fixed_frames_model(output=(5, 2)).save(wrong_output)
    with pytest.raises(Exception, match=r"expected \[batch, 32, 32\].*--tile_size") as raised:
        execute(
            INFER,
            ["--stack_dir", stack_dir, "--model", wrong_output, "--map_output", str(tmp_path / "w"), *WINDOW_FLAGS],
        )
    wrong_frames = str(tmp_path / "wrong_frames.keras")
    fixed_frames_model(frames=8).save(wrong_frames)
    with pytest.raises(Exception, match=r"first batch of windows \(\d+, 6, 32, 32, 1\).*--frames 6") as raised:
        execute(
            INFER,
            ["--stack_dir", stack_dir, "--model", wrong_frames, "--map_output", str(tmp_path / "f"), *WINDOW_FLAGS],
        )
    assert isinstance(raised.value, UserError), type(raised.value)
