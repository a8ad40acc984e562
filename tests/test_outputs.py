"""Output folders on local disk: the run marker, refusals, --overwrite and the sweep of temporaries."""

import os

import pytest

from rsdt_beam import fs
from rsdt_beam.common.names import METADATA_FILE, RUN_FILE
from rsdt_beam.errors import UserError
from rsdt_beam.outputs import OutputFolder, claim_outputs, sweep


def folder(path, run_id="run1", **parameters) -> OutputFolder:
    return OutputFolder(
        str(path),
        "stacks",
        "--stack_output",
        dict({"tile_size_y": 32}, **parameters),
        run_id,
        seed_files=("grid.json",),
    )


def test_temporary_names_carry_the_run_id():
    name = fs.temporary_name("0_1.tfrecords", "abc123")
    assert name.startswith(".0_1.tfrecords.tmp-abc123-") and fs.temporary_run(name) == "abc123"
    assert fs.temporary_run("sub/.x.csv.tmp-0123456789ab") == ""  # an older name: no run known
    assert fs.temporary_run("beam-temp-windows-1f2e/part") == ""  # Beam's file sink staging
    assert fs.temporary_run("0_1.tfrecords") is None and fs.temporary_run(".fetch_chunks/optical/a.npz") is None


def test_claim_writes_the_marker_first_and_removes_the_completion_marker(tmp_path):
    out = tmp_path / "stack"
    out.mkdir()
    (out / "grid.json").write_text("{}")  # a seed file may be there before any run
    claim_outputs([folder(out)], overwrite=False)
    assert fs.read_json(str(out / RUN_FILE)) == {"kind": "stacks", "parameters": {"tile_size_y": 32}}
    (out / "0_0.tfrecords").write_bytes(b"x")
    (out / METADATA_FILE).write_text("{}")
    claim_outputs([folder(out, "run2")], overwrite=False)  # same parameters: resumed, files kept
    assert sorted(os.listdir(out)) == ["0_0.tfrecords", "grid.json", RUN_FILE]


def test_other_parameters_or_an_unmarked_folder_are_refused_and_nothing_is_touched(tmp_path):
    out, other = tmp_path / "stack", tmp_path / "windows"
    claim_outputs([folder(out)], overwrite=False)
    (out / "0_0.tfrecords").write_bytes(b"x")
    other.mkdir()
    (other / "0_0.tfrecords").write_bytes(b"y")  # written by another tool: no marker
    with pytest.raises(UserError) as refused:
        claim_outputs([folder(out, tile_size_y=48, bands_opt=13), folder(other)], overwrite=False)
    message = str(refused.value)
    assert (
        f"--stack_output {out} was written with other parameters: bands_opt (not set) there, 13 now; "
        "tile_size_y 32 there, 48 now" in message
    )
    assert f"--stack_output {other} holds files but no {RUN_FILE}" in message and "--overwrite" in message
    assert sorted(os.listdir(out)) == ["0_0.tfrecords", RUN_FILE] and os.listdir(other) == ["0_0.tfrecords"]
    claim_outputs([folder(out, tile_size_y=48)], overwrite=True)  # replaces the contents entirely
    assert os.listdir(out) == [RUN_FILE] and fs.read_json(str(out / RUN_FILE))["parameters"]["tile_size_y"] == 48


def test_one_folder_for_two_outputs_is_refused(tmp_path):
    windows = OutputFolder(str(tmp_path), "windows", "--window_output", {"Omega": 6})
    with pytest.raises(UserError, match="--stack_output and --window_output are the same folder"):
        claim_outputs([folder(tmp_path), windows], overwrite=False)


def test_sweep_keeps_the_running_attempts_temporaries_and_removes_empty_folders(tmp_path):
    mine, theirs = fs.temporary_name("a.tif", "run2"), fs.temporary_name("b.tif", "run1")
    (tmp_path / "optical").mkdir()
    (tmp_path / "optical" / mine).write_bytes(b"")
    (tmp_path / "optical" / theirs).write_bytes(b"")
    (tmp_path / ".fetch_chunks" / "optical" / "20150711T100008").mkdir(parents=True)
    assert sweep(str(tmp_path), keep_run="run2") == 1
    assert os.listdir(tmp_path / "optical") == [mine] and not os.path.exists(tmp_path / ".fetch_chunks")
    assert sweep(str(tmp_path)) == 1 and not os.path.exists(tmp_path / "optical")
