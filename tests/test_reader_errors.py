"""A truncated, garbage or wrong-kind file through every reader of windows and stacks (numpy, tf.data, PyTorch,
the commands): one line naming the file and what is wrong (issue 18, point 3)."""

import os
import re
import shutil

import pytest

from rsdt_beam.numpy_reader import read_window_file, training_elements
from rsdt_beam.tfrecord import CorruptRecordError
from rsdt_beam.window.rules import WindowParams

PARAMS = WindowParams(60 * 86400, 1, 3, 6)  # rsdt_beam.pipelines.sample's windows
WINDOW_FLAGS = ["--Delta", "60d", "--omega", "3", "--Omega", "6"]
WHAT = {"truncated": "truncated record at the end", "garbage": "not a GZIP file"}


def spoil(folder):
    """Tile 0_1's file cut in half, tile 1_0's replaced by garbage; {kind: path}."""
    truncated, garbage = os.path.join(folder, "0_1.tfrecords"), os.path.join(folder, "1_0.tfrecords")
    with open(truncated, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    with open(garbage, "wb") as f:
        f.write(bytes(range(256)) * 20)
    return {"truncated": truncated, "garbage": garbage}


@pytest.fixture(scope="module")
def bad(sample_run, tmp_path_factory):
    """The sample's windows and stacks, each with a truncated and a garbage tile file."""
    root = tmp_path_factory.mktemp("bad_files")
    out = {}
    for kind in ("windows", "stack"):
        shutil.copytree(os.path.join(sample_run, kind), root / kind)
        out[kind] = (str(root / kind), spoil(root / kind))
    return out


def one_line(message: str) -> str:
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_numpy_reader_names_the_file(bad, kind):
    folder, paths = bad["windows"]
    with pytest.raises(CorruptRecordError) as caught:
        list(read_window_file(paths[kind]))
    assert one_line(str(caught.value)).startswith(f"{paths[kind]}: {WHAT[kind]}")
    with pytest.raises(CorruptRecordError, match=re.escape(f"{folder}/")):  # the torch-side training reader
        list(training_elements(folder, shuffle_buffer=0))


def tf_failure(dataset) -> str:
    """The one line a tf.data reader's error carries (TensorFlow raises its own types, with its node names)."""
    tf = pytest.importorskip("tensorflow")
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        for _ in dataset:
            pass
    found = re.search(r"assertion failed: \[(.*?)\]\n", str(caught.value))
    assert found, str(caught.value)
    return found.group(1)


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_tf_data_readers_name_the_file(sample_run, bad, kind):
    pytest.importorskip("tensorflow")
    from rsdt_beam.datasets import inference_dataset, training_dataset

    folder, paths = bad["windows"]
    good = os.path.join(sample_run, "windows", "0_0.tfrecords")
    expected = f"{paths[kind]}: {WHAT[kind]}"
    training = training_dataset([good, paths[kind]], batch_size=8, shuffle_buffer=0)
    assert tf_failure(training).startswith(expected)
    # The file's own line, as the numpy reader gives it
    with pytest.raises(CorruptRecordError) as caught:
        list(read_window_file(paths[kind]))
    assert tf_failure(training) == str(caught.value)
    tile = (0, 1) if kind == "truncated" else (1, 0)
    assert tf_failure(inference_dataset(folder, tile=tile)).startswith(expected)
    assert tf_failure(training_dataset(folder, batch_size=8, seed=1)).startswith(f"{folder}/")


def test_tf_data_readers_over_generators_name_the_file(sample_run, bad, tmp_path):
    """The readers that go through Python (shards, online windows) fail in the same form."""
    pytest.importorskip("tensorflow")
    from rsdt_beam.datasets import inference_dataset, online_dataset

    windows, window_paths = bad["windows"]
    shards = [str(tmp_path / f"windows-0000{k}-of-00002.tfrecords") for k in range(2)]
    shutil.copy(os.path.join(sample_run, "windows", "0_0.tfrecords"), shards[0])
    shutil.copy(window_paths["truncated"], shards[1])
    assert tf_failure(inference_dataset(shards, frames=6)).startswith(f"{shards[1]}: truncated record at the end")
    stacks, stack_paths = bad["stack"]
    assert tf_failure(online_dataset(stacks, (1, 0), PARAMS)).startswith(f"{stack_paths['garbage']}: not a GZIP file")


def test_tf_data_readers_name_a_file_of_another_kind(sample_run):
    pytest.importorskip("tensorflow")
    from rsdt_beam.datasets import inference_dataset, training_dataset

    files = [os.path.join(sample_run, "windows", "0_0.tfrecords"), os.path.join(sample_run, "stack", "0_1.tfrecords")]
    expected = f"{files[1]}: not a training window record (one of Feature, Label is missing)"
    assert tf_failure(training_dataset(files, shuffle_buffer=0)) == expected
    assert tf_failure(inference_dataset(files)).startswith(f"{files[1]}: not an inference window record")
    with pytest.raises(CorruptRecordError, match=re.escape(f"{files[1]} record 0: not a window record (no Feature")):
        list(read_window_file(files[1]))


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_torch_and_online_readers_name_the_stack_file(bad, kind):
    pytest.importorskip("torch")
    from rsdt_beam.torch_data import StackWindowsDataset
    from rsdt_beam.training import StackTrainingWindows

    folder, paths = bad["stack"]
    tile = "0_1" if kind == "truncated" else "1_0"
    expected = f"^{re.escape(paths[kind])}: {WHAT[kind]}"
    with pytest.raises(CorruptRecordError, match=expected):
        StackWindowsDataset(folder, PARAMS, tiles=f"list:{tile}")
    with pytest.raises(CorruptRecordError, match=expected):
        next(StackTrainingWindows(folder, PARAMS, tiles=f"list:{tile}").elements())


def test_commands_print_one_line_naming_the_file(bad, capsys, tmp_path):
    from rsdt_beam.pipelines import inspect, windows_list

    windows, window_paths = bad["windows"]
    stacks, stack_paths = bad["stack"]
    cases = [
        (windows_list.main, ["--stack_dir", stacks, "--tile", "0_1", *WINDOW_FLAGS], stack_paths["truncated"]),
        (windows_list.main, ["--stack_dir", stacks, "--tile", "1_0", *WINDOW_FLAGS], stack_paths["garbage"]),
        (inspect.main, [stacks, "--tile", "1_0"], stack_paths["truncated"]),  # all tiles' times: 0_1 first
        (inspect.main, [windows, "--tile", "0_1", "--png", str(tmp_path / "png")], window_paths["truncated"]),
    ]
    for main, argv, path in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and path in err[0], err


@pytest.mark.e2e
def test_infer_over_bad_window_files_is_one_line(bad, capsys, tmp_path):
    pytest.importorskip("tensorflow")
    from rsdt_beam.pipelines import infer
    from tests.window_filters import mean_model

    windows, paths = bad["windows"]
    model = str(tmp_path / "mean.keras")
    mean_model().save(model)
    argv = ["--windows", windows, "--model", model, "--map_output", str(tmp_path / "maps"), "--frames", "0"]
    assert infer.main([*argv, "--no_progress"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(rf"rsdt_beam infer: ({paths['truncated']}|{paths['garbage']}): ", last), last
