"""Training without window files: windows built online from the sample's stacks (tf.data and PyTorch),
sampling shared with Stage 3's --sample, and the numpy reader against the tf.data reader."""

import hashlib
import os
import re

import numpy as np
import pytest
from conftest import SAMPLE_STACK_FLAGS

from rsdt_beam.cli.commands import WINDOW
from rsdt_beam.cli.run import execute
from rsdt_beam.normalization import Normalization, model_normalization, save_normalization
from rsdt_beam.numpy_reader import batches, inference_elements, online_windows, training_elements
from rsdt_beam.training import StackTrainingWindows, host_length, window_share
from rsdt_beam.window.rules import WindowParams, windows
from rsdt_beam.window.sampling import Sample, parse_sample

DAY = 86400
PARAMS = WindowParams(60 * DAY, 1, 3, 6)  # pipelines.sample's windows (label = ones [ty, tx])
WINDOW_FLAGS = ["--Delta", "60d", "--omega", "3", "--Omega", "6", "--no_progress", "--mode", "training"]


def digest(*arrays):
    return hashlib.sha1(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()


def late_windows(cur):
    """A window filter: windows starting in 2017."""
    return cur[0][0] >= 1483228800


def changing_label(window, label_args):
    """A label function whose label shape changes at window 4 (a user's bug)."""
    cur = window[0]
    return cur[3], np.ones((32, 32) if window.window_id < 4 else (16, 16), np.float32)


def mean_weight(feature, label):
    """A weight function: keeps windows with a high mean value more often."""
    return float(np.clip(feature.mean() + 0.5, 0.0, 1.0))


@pytest.fixture(scope="module")
def stacks(sample_run):
    return os.path.join(sample_run, "stack")


@pytest.fixture(scope="module")
def sampled(sample_run, stacks):
    """Stage 3 with --sample every:4 and --sample fraction:0.3:5 (per-tile training windows)."""
    out = {}
    for name, spec in (("every", "every:4"), ("fraction", "fraction:0.3:5")):
        out[name] = os.path.join(sample_run, "training_test", name)
        execute(WINDOW, ["--stack_dir", stacks, "--window_output", out[name], "--sample", spec, *WINDOW_FLAGS])
    return out


def test_sample_specs_and_decisions():
    assert parse_sample(None).keeps_everything and parse_sample("all").keeps_everything
    every = parse_sample("every:10")
    assert [k for k in range(35) if every.keeps_id((0, 0), k)] == [0, 10, 20, 30]
    fraction = parse_sample("fraction:0.25:7")
    kept = [fraction.keeps_id((1, 2), k) for k in range(4000)]
    assert 0.22 < np.mean(kept) < 0.28
    assert kept == [parse_sample("fraction:0.25:7").keeps_id((1, 2), k) for k in range(4000)]  # a function of ids
    assert kept != [parse_sample("fraction:0.25:8").keeps_id((1, 2), k) for k in range(4000)]
    weighted = parse_sample("weight:tests.test_training:mean_weight:3")
    assert weighted.needs_pairs and weighted.weight.__name__ == "mean_weight" and weighted.seed == 3
    assert weighted.keeps_pair((0, 0), 1, np.ones(3), None)  # probability 1
    assert not weighted.keeps_pair((0, 0), 1, -np.ones(3), None)  # probability 0
    for bad in ("every:0", "fraction:1.5:1", "half", "every:x"):
        with pytest.raises(ValueError, match="--sample|every|fraction"):
            parse_sample(bad)
    with pytest.raises(ValueError, match="no fraction"):
        Sample(fraction=0.5, weight=mean_weight)


def test_window_shares_equal_per_host_padded_and_whole_batches_per_worker():
    counts = [((j, i), 10 + 7 * j + i) for j in range(3) for i in range(4)]
    total = sum(n for _, n in counts)  # 348
    windows = [(tile, k) for tile, n in counts for k in range(n)]

    def share(*args):
        return [(tile, k) for tile, first, stop in window_share(counts, *args) for k in range(first, stop)]

    for hosts in (1, 2, 5, 7):
        length = host_length(total, hosts)
        parts = [share(host, hosts) for host in range(hosts)]
        assert [len(p) for p in parts] == [length] * hosts  # equal: no rank waits on another
        flat = [w for p in parts for w in p]
        # DistributedSampler's padding: every window, then windows repeated from the start.
        assert flat == (windows * 2)[: length * hosts]
        for host, part in enumerate(parts):
            workers = [share(host, hosts, worker, 3, 8) for worker in range(3)]
            assert [w for p in workers for w in p] == part
            busy = [p for p in workers if p]
            assert all(len(p) % 8 == 0 for p in busy[:-1])  # only the host's last batch can be short
            assert sum(-(-len(p) // 8) for p in workers) == -(-length // 8)  # len(DataLoader) holds
            assert sum(len(p) // 8 for p in workers) == length // 8  # ... also with drop_last
    assert host_length(348, 7) == 50 and share(6, 7)[-2:] == windows[:2]
    with pytest.raises(ValueError, match="out of range"):
        window_share(counts, 2, 2)


def test_online_windows_known_length_sharded_exactly_once(stacks):
    windows = StackTrainingWindows(stacks, PARAMS)
    assert len(windows) == 270
    assert StackTrainingWindows(stacks, PARAMS, tiles=[(0, 0), (2, 2)]).tiles == [(0, 0), (2, 2)]
    in_order = [digest(*e) for e in windows.elements(shuffle=False)]
    seen = []
    for host in range(4):
        part = [digest(*e) for worker in range(2) for e in windows.elements(host, 4, worker, 2, epoch=1, seed=4)]
        assert len(part) == windows.shard_length(host, 4) == 68  # 270 windows: 4 x 68, padded by 2
        seen += part
    assert sorted(seen) == sorted(in_order + in_order[:2])
    epoch0 = [digest(*e) for e in windows.elements(seed=4, epoch=0)]
    assert epoch0 == [digest(*e) for e in windows.elements(seed=4, epoch=0)]  # seeded: reproducible
    assert epoch0 != [digest(*e) for e in windows.elements(seed=4, epoch=1)]  # a new order each epoch
    tiles_of = {digest(*e): tile for tile in windows.tiles for _, e in windows.tile_elements(tile)}
    mixed = [tiles_of[digest(*e)] for e in windows.elements(seed=4, epoch=0, cycle_tiles=3)]
    assert len(set(mixed[:20])) > 1, "consecutive windows come from several tiles"
    # A filter or weight function needs the windows' contents: the length comes from one pass.
    filtered = StackTrainingWindows(stacks, PARAMS, win_filter=late_windows, tiles="list:0_0,2_2")
    expected = sum(late_windows(*w) for tile in ((0, 0), (2, 2)) for w in online_windows(stacks, tile, PARAMS))
    assert len(filtered) == len(list(filtered.elements())) == expected > 0


@pytest.mark.e2e
def test_online_training_dataset_equals_written_windows_window_by_window(sample_run, stacks, sampled):
    pytest.importorskip("tensorflow")
    from rsdt_beam.datasets import training_dataset
    from rsdt_beam.training import training_dataset_from_stacks

    for source, spec in (
        (os.path.join(sample_run, "windows"), None),
        (sampled["every"], "every:4"),
        (sampled["fraction"], "fraction:0.3:5"),
    ):
        written = list(training_dataset(source, shuffle_buffer=0, cycle_length=1).as_numpy_iterator())
        online = training_dataset_from_stacks(stacks, PARAMS, sample=spec, shuffle=False)
        assert int(online.cardinality()) == len(written) > 0
        elements = list(online.as_numpy_iterator())
        assert len(elements) == len(written)
        for (feature, label), (want_feature, want_label) in zip(elements, written):
            np.testing.assert_array_equal(feature, want_feature)
            np.testing.assert_array_equal(label, want_label)

    shuffled = training_dataset_from_stacks(stacks, PARAMS, batch_size=16, seed=2, readers=2, masks=True)
    assert int(shuffled.cardinality()) == 17  # 270 windows, known length: Keras sees the steps per epoch
    features, masks = [], []
    for inputs, _labels in shuffled.as_numpy_iterator():
        features += list(inputs["Feature"])
        masks += list(inputs["frame_mask"])
    written = {digest(f) for f, _ in training_elements(os.path.join(sample_run, "windows"), shuffle_buffer=0)}
    assert len(features) == 270 and {digest(f) for f in features} == written
    for feature, mask in zip(features, masks):
        assert mask.sum() >= 3 and (feature[~mask] == -1.0).all()


@pytest.mark.e2e
def test_torch_dataloader_with_two_workers_reads_each_window_once(sample_run, stacks):
    torch = pytest.importorskip("torch")
    from rsdt_beam.torch_data import StackWindowsDataset

    written = {digest(f, l) for f, l in training_elements(os.path.join(sample_run, "windows"), shuffle_buffer=0)}
    dataset = StackWindowsDataset(stacks, PARAMS, seed=1, cycle_tiles=2, batch_size=8)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=2, persistent_workers=True)
    assert len(dataset) == 270 and len(loader) == 34
    orders = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        seen = []
        for feature, label in loader:
            assert isinstance(feature, torch.Tensor) and feature.shape[1:] == (6, 32, 32, 1)
            seen += [digest(f, l) for f, l in zip(feature.numpy(), label.numpy())]
        assert len(seen) == 270 and set(seen) == written
        orders.append(seen)
    assert orders[0] != orders[1] != orders[2], "set_epoch reaches persistent workers: a new order each epoch"
    dataset.set_epoch(1)
    assert [digest(f, l) for b in loader for f, l in zip(b[0].numpy(), b[1].numpy())] == orders[1]
    # drop_last: each worker's share is whole batches, so len(loader) is the batches it yields.
    dropping = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=2, drop_last=True)
    assert len(dropping) == 33 == sum(1 for _ in dropping)
    # DDP: equal shares per rank (135 + 135 of 270; rsdtlib-train's 90 windows on 4 ranks: 4 x 23, padded).
    hosts = [StackWindowsDataset(stacks, PARAMS, num_replicas=4, rank=rank, tiles="rsdtlib-train") for rank in range(4)]
    parts = [[digest(f, l) for f, l in torch.utils.data.DataLoader(h, batch_size=None, num_workers=2)] for h in hosts]
    assert [len(p) for p in parts] == [len(h) for h in hosts] == [23] * 4
    trained = StackTrainingWindows(stacks, PARAMS, tiles="rsdtlib-train")
    in_order = [digest(*e) for e in trained.elements(shuffle=False)]
    assert sorted(sum(parts, [])) == sorted(in_order + in_order[:2])
    with pytest.raises(ValueError, match="selects none of its stack files"):  # as tf.data (below) and numpy
        StackWindowsDataset(stacks, PARAMS, tiles="list:7_7")


@pytest.mark.e2e
def test_numpy_reader_gives_the_arrays_of_the_tf_reader(sample_run):
    pytest.importorskip("tensorflow")
    from rsdt_beam.datasets import inference_dataset, training_dataset

    source = os.path.join(sample_run, "windows")
    for normalize in (False, True):
        tf_batches = list(
            training_dataset(
                source, batch_size=32, shuffle_buffer=0, cycle_length=1, masks=True, normalize=normalize
            ).as_numpy_iterator()
        )
        np_batches = list(
            batches(training_elements(source, shuffle_buffer=0, cycle_length=1, masks=True, normalize=normalize), 32)
        )
        assert len(np_batches) == len(tf_batches) == 9
        for (np_inputs, np_labels), (tf_inputs, tf_labels) in zip(np_batches, tf_batches):
            np.testing.assert_allclose(np_inputs["Feature"], tf_inputs["Feature"], rtol=1e-6)
            np.testing.assert_array_equal(np_inputs["frame_mask"], tf_inputs["frame_mask"])
            np.testing.assert_array_equal(np_labels, tf_labels)
        if not normalize:
            np.testing.assert_array_equal(np_batches[3][0]["Feature"], tf_batches[3][0]["Feature"])
    # Seeded shuffling: the same seed gives the same order, another seed another; always every window once.
    orders = [[digest(f) for f, _ in training_elements(source, seed=seed, shuffle_buffer=64)] for seed in (1, 1, 2)]
    assert orders[0] == orders[1] != orders[2] and sorted(orders[0]) == sorted(orders[2])
    assert len(set(orders[0])) == 270
    # Inference windows: the same dicts, batched, Timestamps included.
    np_infer = next(batches(inference_elements(source, tile=(1, 1)), 8))
    tf_infer = next(inference_dataset(source, tile=(1, 1)).batch(8).as_numpy_iterator())
    assert sorted(np_infer) == sorted(tf_infer)
    for key in tf_infer:
        np.testing.assert_array_equal(np_infer[key], tf_infer[key])


def test_band_moments_merge_in_any_order_equals_one_pass():
    from rsdt_beam.common.modalities import BandCounts
    from rsdt_beam.stack.stats import BandMoments, normalization

    rng = np.random.default_rng(3)
    parts = [rng.normal(5.0, 2.0, (n, 4, 4, 5)).astype(np.float32) for n in (3, 1, 7, 2)]
    merged = BandMoments.empty(5)
    for part in reversed(parts):
        merged = BandMoments.of(part).merge(merged)
    whole = np.concatenate(parts).reshape(-1, 5).astype(np.float64)
    stats = merged.to_json(BandCounts(1, 3))
    assert list(stats) == ["sar_ascending", "sar_descending", "optical"]
    np.testing.assert_allclose(stats["optical"]["mean"], whole.mean(0)[2:])
    np.testing.assert_allclose(stats["sar_descending"]["std"], whole.std(0)[1:2])
    assert stats["optical"]["min"] == whole.min(0)[2:].tolist() and stats["sar_ascending"]["count"] == len(whole)
    mean, std = normalization({"band_stats": stats}, 5)
    np.testing.assert_allclose(std, whole.std(0), rtol=1e-6)
    with pytest.raises(ValueError, match="no band_stats"):
        normalization({}, 5)


def test_metadata_model_card_and_normalising_readers(sample_run, stacks):
    from rsdt_beam import fs
    from rsdt_beam.stack.files import list_tiles, read_stack_metadata, read_tile_stack

    stack_metadata = read_stack_metadata(stacks)
    assert (stack_metadata["deadzone_y"], stack_metadata["deadzone_x"]) == (2, 2)

    def interiors(tiles):  # each pixel once: the tiles' frames without the 2 px margins they share
        stacked = [read_tile_stack(stacks, t, stack_metadata).frames[:, 2:30, 2:30] for t in tiles]
        return np.concatenate(stacked).astype(np.float64)

    frames = interiors(list_tiles(stacks))
    stats = stack_metadata["band_stats"]["optical"]
    assert stats["count"] == 9 * 28 * 28 * len(stack_metadata["timestamps"])
    np.testing.assert_allclose(stats["mean"], [frames.mean()], rtol=1e-9)
    np.testing.assert_allclose(stats["std"], [frames.std()], rtol=1e-9)
    assert (stats["min"], stats["max"]) == ([float(frames.min())], [float(frames.max())])
    # The training tiles' statistics, merged from the per-tile moments without reading a pixel.
    train = StackTrainingWindows(stacks, PARAMS, tiles="rsdtlib-train", normalize=True)
    train_frames = interiors(train.tiles)
    np.testing.assert_allclose(train.scale[0], [train_frames.mean()], rtol=1e-6)
    np.testing.assert_allclose(train.scale[1], [train_frames.std()], rtol=1e-6)
    assert abs(train.scale[0][0] - stats["mean"][0]) > 1e-4  # not every tile's
    assert stack_metadata["bands"] == {"optical": {"names": ["NDVI[0]"], "units": "as stored in the EOPatches"}}
    assert stack_metadata["preprocessing"]["optical"]["eopatch_data_feature"] == "NDVI"
    window_metadata = fs.read_json(os.path.join(sample_run, "windows", "metadata.json"))
    for key in ("band_stats", "bands", "preprocessing"):
        assert window_metadata[key] == stack_metadata[key]
    assert window_metadata["label_fn"] == "rsdt_beam.window.selection:rsdtlib_example_label"

    mean, std = stats["mean"][0], stats["std"][0]
    raw = next(training_elements(os.path.join(sample_run, "windows"), shuffle_buffer=0, masks=True))
    scaled = next(training_elements(os.path.join(sample_run, "windows"), shuffle_buffer=0, masks=True, normalize=True))
    real = raw[0]["frame_mask"]
    np.testing.assert_allclose(scaled[0]["Feature"][real], (raw[0]["Feature"][real] - mean) / std, rtol=1e-5)
    assert (scaled[0]["Feature"][~real] == -1.0).all()
    online = next(StackTrainingWindows(stacks, PARAMS, normalize=True, masks=True).elements(shuffle=False))
    np.testing.assert_array_equal(online[0]["Feature"], scaled[0]["Feature"])
    # Validation tiles scaled with the training tiles' statistics, given as a Normalization.
    as_train = Normalization(tuple(map(float, train.scale[0])), tuple(map(float, train.scale[1])), "train")
    val = next(StackTrainingWindows(stacks, PARAMS, normalize=as_train, masks=True).elements(shuffle=False))
    np.testing.assert_allclose(val[0]["Feature"][real], as_train.apply(raw[0]["Feature"][real]), rtol=1e-6)


def test_normalisation_recorded_beside_the_model(sample_run, stacks, tmp_path):
    from rsdt_beam.cli.commands import INFER
    from rsdt_beam.errors import UserError

    model = str(tmp_path / "model.keras")
    assert model_normalization(model) is None  # nothing recorded: infer cannot know
    windows_dir = os.path.join(sample_run, "windows")
    path = save_normalization(model, windows_dir)
    assert path == model + ".normalization.json"
    recorded = model_normalization(model)
    assert recorded == Normalization.of_folder(windows_dir) and recorded.source == windows_dir
    feature = np.full((2, 4, 4, 1), 0.5, np.float32)
    applied = recorded.apply(feature)
    assert applied.dtype == np.float32
    np.testing.assert_allclose(applied, (feature - recorded.mean[0]) / recorded.std[0], rtol=1e-6)
    save_normalization(model, None)
    assert model_normalization(model) is None  # trained on raw features
    # infer refuses a model whose recorded bands are not the windows' (at launch, before any work).
    save_normalization(model, Normalization((0.1, 0.2), (1.0, 2.0), "elsewhere"))
    with pytest.raises(UserError, match="1 bands but the normalisation from elsewhere covers 2"):
        execute(INFER, ["--model", model, "--windows", windows_dir, "--map_output", str(tmp_path / "maps")])
    with open(model + ".normalization.json", "w") as f:
        f.write("{not json")
    with pytest.raises(UserError, match="normalization.json: not a normalisation record"):
        model_normalization(model)


def test_wrong_folder_kind_and_empty_selection_are_clear_errors(sample_run, stacks):
    from rsdt_beam.errors import UserError

    with pytest.raises(UserError, match="is a windows folder .* not a stack folder"):
        StackTrainingWindows(os.path.join(sample_run, "windows"), PARAMS)
    with pytest.raises(UserError, match="is a stack folder .* not a windows folder"):
        next(training_elements(stacks))
    with pytest.raises(ValueError, match="selects none of its stack files"):
        StackTrainingWindows(stacks, PARAMS, tiles="list:7_7")
    with pytest.raises(ValueError, match="0 training windows in the 9 selected tiles"):
        StackTrainingWindows(stacks, WindowParams(DAY, 1, 5, 6)).window_counts()


@pytest.mark.e2e
def test_observed_masks_recorded_on_request_and_served_by_every_reader(sample_run, sample_arrays, stacks, tmp_path):
    pytest.importorskip("tensorflow")
    from rsdt_beam import fs
    from rsdt_beam.cli.commands import RUN
    from rsdt_beam.datasets import training_dataset
    from rsdt_beam.errors import UserError
    from rsdt_beam.records import OBSERVED, parse_example
    from rsdt_beam.stack.files import read_stack_metadata, read_tile_stack
    from rsdt_beam.tfrecord import read_records

    out = tmp_path / "observed"
    execute(
        RUN,
        [
            "--optical",
            os.path.join(sample_run, "obs", "optical"),
            *SAMPLE_STACK_FLAGS,
            *WINDOW_FLAGS,
            "--stack_output",
            str(out / "stack"),
            "--window_output",
            str(out / "windows"),
            "--record_observed",
        ],
    )
    with open(os.path.join(stacks, "0_0.tfrecords"), "rb") as raw:  # the default run records no mask
        assert OBSERVED not in parse_example(next(read_records(raw)))
    metadata = read_stack_metadata(str(out / "stack"))
    assert metadata["observed_recorded"] is True and "observed_recorded" not in read_stack_metadata(stacks)
    stack = read_tile_stack(str(out / "stack"), (0, 0), metadata)
    np.testing.assert_array_equal(stack.frames, read_tile_stack(stacks, (0, 0), metadata).frames)
    times, ndvi, valid = sample_arrays
    assert not stack.observed[..., :2].any()  # no SAR in the sample
    previous = -np.inf
    for k, time in enumerate(stack.times):  # optical: a valid observation in (previous frame, this frame]
        arrived = valid[(times > previous) & (times <= time), :32, :32]
        np.testing.assert_array_equal(stack.observed[k, ..., 2], arrived.any(axis=0))
        if k:  # where nothing arrived, the value is the previous frame's (forward fill)
            unseen = ~stack.observed[k, ..., 2]
            np.testing.assert_array_equal(stack.frames[k][unseen], stack.frames[k - 1][unseen])
        previous = time
    assert 0 < stack.observed[..., 2].mean() < 1

    window_dir = str(out / "windows")
    assert fs.read_json(os.path.join(window_dir, "metadata.json"))["observed_recorded"] is True
    written = list(training_dataset(window_dir, shuffle_buffer=0, cycle_length=1, observed=True).as_numpy_iterator())
    numpy = list(training_elements(window_dir, shuffle_buffer=0, cycle_length=1, observed=True))
    online = list(StackTrainingWindows(str(out / "stack"), PARAMS, observed=True).elements(shuffle=False))
    assert len(written) == len(numpy) == len(online) == 270
    spans = {w.window_id: w.current for w in windows(stack, PARAMS)}
    for k, ((a, _), (b, _), (c, _)) in enumerate(zip(written, numpy, online)):
        for key in ("Feature", "frame_mask", "observed_mask"):
            np.testing.assert_array_equal(a[key], b[key])
            np.testing.assert_array_equal(a[key], c[key])
        if k < 30:  # tile (0, 0), in time order
            count = len(spans[k].timestamps)
            np.testing.assert_array_equal(a["observed_mask"][:count], spans[k].observed)
            assert not a["observed_mask"][count:].any()
    # Inference windows, per tile and sharded: the tf.data and numpy readers give the same observed masks.
    from rsdt_beam.datasets import inference_dataset

    for layout in (["--layout", "per_tile"], ["--layout", "sharded", "--records_per_shard", "50"]):
        infer_dir = str(out / f"infer_{layout[1]}")
        execute(
            WINDOW,
            [
                "--stack_dir",
                str(out / "stack"),
                "--window_output",
                infer_dir,
                "--record_observed",
                *WINDOW_FLAGS,
                "--mode",
                "inference",
                *layout,
            ],
        )
        tf_elements = list(inference_dataset(infer_dir, tile=(0, 0), observed=True).as_numpy_iterator())
        np_elements = list(inference_elements(infer_dir, tile=(0, 0), observed=True))
        assert len(tf_elements) == len(np_elements) == 30
        for a, b in zip(tf_elements, np_elements):
            count = len(spans[int(a["window_id"])].timestamps)
            np.testing.assert_array_equal(a["observed_mask"], b["observed_mask"])
            np.testing.assert_array_equal(a["observed_mask"][:count], spans[int(a["window_id"])].observed)
    with pytest.raises(UserError, match="--record_observed"):
        execute(
            WINDOW, ["--stack_dir", stacks, "--window_output", str(out / "bad"), "--record_observed", *WINDOW_FLAGS]
        )
    with pytest.raises(ValueError, match="--record_observed"):
        next(StackTrainingWindows(stacks, PARAMS, observed=True).elements())


@pytest.mark.e2e
def test_label_shapes_checked_as_windows_are_made(stacks, tmp_path):
    from rsdt_beam.errors import UserError

    message = (
        r"window 4 of tile \(0, 0\) \(\d{4}-\d\d-\d\dT[\d:]+Z \.\. [\dT:Z-]+\) has a label of shape \(16, 16\), "
        r"window 0 of tile \(0, 0\) \(.*\) one of shape \(32, 32\)"
    )
    with pytest.raises(UserError, match=message):
        list(StackTrainingWindows(stacks, PARAMS, gen_label=changing_label).elements(shuffle=False))
    flags = ["--label_fn", "tests.test_training:changing_label", "--tiles", "list:0_0"]
    with pytest.raises(Exception, match=message):  # Stage 3 stops at the first such window
        execute(WINDOW, ["--stack_dir", stacks, "--window_output", str(tmp_path / "w"), *flags, *WINDOW_FLAGS])


def test_label_shapes_of_tiles_checked_where_their_summaries_meet():
    from rsdt_beam.errors import UserError
    from rsdt_beam.window.sampling import WindowLabel, check_label_shapes

    def label(tile, window_id, shape):
        return WindowLabel(tile, window_id, 1.5e9 + window_id * DAY, 1.5e9 + (window_id + 5) * DAY, shape)

    same = [label((1, 0), 3, (1, 32, 32)), label((0, 1), 0, (1, 32, 32)), label((0, 0), 2, (1, 32, 32))]
    assert check_label_shapes(same) == label((0, 0), 2, (1, 32, 32))  # row-major: the first tile's
    assert check_label_shapes([]) is None
    differing = [*same, label((2, 2), 0, (2, 32, 32)), label((0, 2), 1, (2, 32, 32))]
    expected = (
        "label function: window 1 of tile (0, 2) (2017-07-15T02:40:00Z .. 2017-07-20T02:40:00Z) has a label of "
        "shape (2, 32, 32), window 2 of tile (0, 0) (2017-07-16T02:40:00Z .. 2017-07-21T02:40:00Z) one of shape "
        "(1, 32, 32); every window's label must have the same shape"
    )
    with pytest.raises(UserError) as caught:
        check_label_shapes(reversed(differing))
    assert str(caught.value) == expected


def test_online_windows_check_label_shapes_across_tiles(stacks):
    from rsdt_beam.errors import UserError
    from tests.window_filters import label_per_tile

    online = StackTrainingWindows(stacks, PARAMS, gen_label=label_per_tile, tiles="list:0_0,0_1")
    message = r"window 0 of tile \(0, 1\) \(.*\) has a label of shape \(2, 32, 32\), window 0 of tile \(0, 0\)"
    with pytest.raises(UserError, match=message):
        list(online.elements(shuffle=False))


@pytest.mark.e2e
@pytest.mark.parametrize("layout", ["per_tile", "sharded"])
def test_label_shapes_checked_across_tiles_when_windows_are_written(sample_run, stacks, tmp_path, layout):
    """Each tile's labels agree, tile (0, 1)'s not with tile (0, 0)'s: the run fails naming (0, 1)'s first
    window, with no metadata.json; a folder whose labels agree records their shape."""
    from rsdt_beam.common.names import METADATA_FILE
    from rsdt_beam.errors import UserError
    from rsdt_beam.numpy_reader import window_metadata

    assert window_metadata(os.path.join(sample_run, "windows"))["label_shape"] == [32, 32]
    output = tmp_path / "w"
    flags = ["--label_fn", "tests.window_filters:label_per_tile", "--tiles", "list:0_0,0_1", "--layout", layout]
    message = (
        r"^label function: window 0 of tile \(0, 1\) \(2016-01-07T10:12:43Z \.\. 2016-02-06T10:02:03Z\) has a label "
        r"of shape \(2, 32, 32\), "
        r"window 0 of tile \(0, 0\) \(.*\) one of shape \(1, 32, 32\); every window's label must have the same "
        rf"shape; no metadata.json written in {re.escape(str(output))}( \[while running '[^']*'\])?$"
    )
    with pytest.raises(UserError, match=message):
        execute(WINDOW, ["--stack_dir", stacks, "--window_output", str(output), *flags, *WINDOW_FLAGS])
    assert not (output / METADATA_FILE).exists()


@pytest.mark.e2e
def test_online_training_without_padding(stacks):
    tf = pytest.importorskip("tensorflow")
    from rsdt_beam.training import training_dataset_from_stacks

    dataset = training_dataset_from_stacks(stacks, PARAMS, frames=0, masks=True, shuffle=False, tiles="list:0_0")
    assert dataset.element_spec[0]["Feature"].shape.as_list() == [None, 32, 32, 1]
    elements = list(dataset.as_numpy_iterator())
    assert len(elements) == 30 and {len(inputs["Feature"]) for inputs, _ in elements} >= {3, 6}
    assert all(inputs["frame_mask"].all() for inputs, _ in elements)
    batched = dataset.padded_batch(4, padding_values=({"Feature": -1.0, "frame_mask": False}, 0.0))
    assert next(iter(batched))[0]["Feature"].shape[0] == 4 and tf.is_tensor(next(iter(batched))[1])
    with pytest.raises(ValueError, match="selects none of its stack files"):
        training_dataset_from_stacks(stacks, PARAMS, tiles="list:7_7")
