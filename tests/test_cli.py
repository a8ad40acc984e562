"""The commands as a user meets them: `main(argv)` of each entry point, exit codes, one-line errors,
dry runs that translate and write nothing, and `--help` that lists the command's own flags."""

import importlib
import os

import pytest
from conftest import SAMPLE_STACK_FLAGS, SAMPLE_WINDOW_FLAGS
from test_convert import LANDSAT_FLAGS, STACK_WINDOW_FLAGS

SAMPLE_FLAGS = SAMPLE_STACK_FLAGS
TIMES = ["--starttime", "2017-01-01", "--endtime", "2018-01-01"]
WINDOW_FLAGS = SAMPLE_WINDOW_FLAGS


def main(command: str):
    return importlib.import_module(f"rsdt_beam.pipelines.{command}").main


def dry_runs(sample_run: str, out: str) -> dict[str, list[str]]:
    optical = os.path.join(sample_run, "obs", "optical")
    return {
        "stack": ["--optical", optical, *SAMPLE_FLAGS, "--stack_output", f"{out}/stack"],
        "window": ["--stack_dir", f"{sample_run}/stack", *WINDOW_FLAGS, "--window_output", f"{out}/windows"],
        "run": [
            "--optical",
            optical,
            *SAMPLE_FLAGS,
            *WINDOW_FLAGS,
            "--window_output",
            f"{out}/windows",
            "--stack_output",
            f"{out}/stack",
        ],
        "convert": [
            "--store",
            f"{out}/store",
            *LANDSAT_FLAGS,
            *STACK_WINDOW_FLAGS,
            "--window_output",
            f"{out}/windows",
        ],
        "infer": [
            "--stack_dir",
            f"{sample_run}/stack",
            *WINDOW_FLAGS,
            "--model",
            f"{out}/no_model_needed.keras",
            "--map_output",
            f"{out}/maps",
        ],
        "scheduled": [
            "--optical",
            optical,
            *SAMPLE_FLAGS[:4],
            "--delta_step",
            "10d",
            "--output_root",
            f"{out}/root",
            "--end",
            "2016-04-01",
            "--lookback",
            "120d",
            *WINDOW_FLAGS,
            "--write_stacks",
        ],
    }


@pytest.mark.e2e
@pytest.mark.parametrize("command", ["stack", "window", "run", "convert", "infer", "scheduled"])
def test_dry_run_translates_and_writes_nothing(command, sample_run, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(command)(dry_runs(sample_run, out)[command] + ["--dry_run=True"]) == 0
    printed = capsys.readouterr().out
    assert "dry run: DirectRunner would run" in printed and "step: " in printed
    assert not os.path.exists(out)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--optical", "obs", "--stack_output", "s", "--endtime", "2017-01-01"], "--starttime is required"),
        (
            ["--optical", "obs", "--stack_output", "s", "--starttime", "2017", "--endtime", "2018"],
            "--starttime: not an ISO 8601 time: '2017'",
        ),
        (["--optical", "obs", "--stack_output", "s", *TIMES, "--tile_size", "3x3x3"], "--tile_size: expected N or NxM"),
        (["--optical", "obs", "--stack_output", "s", *TIMES, "--gzip_level", "12"], "--gzip_level must be 0-9, got 12"),
        (
            ["--optical", "obs", "--stack_output", "s", "--chunk_size", "many"],
            "argument --chunk_size: invalid int value: 'many'",
        ),
        (["--optical", "obs", "--starttime", "2017-01-01", "--endtime", "2018-01-01"], "--stack_output is required"),
        (["--optical", "obs", "--stack_output", "s", "--Delta", "30d"], "--Delta is not a flag of stack"),
        (
            ["--optical", "obs", "--stack_output", "s", *TIMES, "--tilesize", "16"],
            "unknown flag --tilesize; did you mean --tile_size?",
        ),
        (
            ["--optical", "obs", "--stack_output", "s", *TIMES, "--runer", "DirectRunner"],
            "unknown flag --runer; did you mean --runner?",
        ),
        (["--optical", "obs", "--stack_output", "s", *TIMES, "16"], "unexpected argument '16'"),
        (
            ["--optical", "obs", "--stack_output", "s", *TIMES, "--direct_num_workers", "two"],
            "argument --direct_num_workers: invalid int value: 'two'",
        ),
    ],
)
def test_user_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert main("stack")(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("rsdt_beam stack: ") and message in err, err


def test_a_missing_input_folder_is_one_line_naming_it(tmp_path, capsys):
    argv = [
        "--optical",
        str(tmp_path / "nowhere"),
        "--stack_output",
        str(tmp_path / "s"),
        "--starttime",
        "2017-01-01",
        "--endtime",
        "2018-01-01",
    ]
    assert main("stack")(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"rsdt_beam stack: --optical folder {tmp_path / 'nowhere'} does not exist"
    with pytest.raises(ValueError):  # --debug shows the traceback
        main("stack")(argv + ["--debug"])


@pytest.mark.e2e
def test_label_function_that_cannot_be_loaded_fails_at_launch(sample_run, tmp_path, capsys):
    argv = [
        "--stack_dir",
        f"{sample_run}/stack",
        *WINDOW_FLAGS,
        "--window_output",
        str(tmp_path / "w"),
        "--mode",
        "training",
        "--label_fn",
        "no_such_module:label",
    ]
    assert main("window")(argv) == 2
    assert "--label_fn no_such_module:label: cannot load" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "command, shown, hidden",
    [
        ("run", ["--starttime", "--Delta", "--window_output", "--overwrite"], ["--output_root", "--store", "--model"]),
        ("fetch", ["--plan_only", "--sh_base_url", "--starttime", "--window_output"], ["--output_root", "--model"]),
        ("stack", ["--stack_output", "--delta_step"], ["--Delta", "--window_output", "--store", "--lookback"]),
        ("scheduled", ["--output_root", "--lookback", "--end"], ["--starttime", "--window_output"]),
    ],
)
def test_help_lists_the_commands_own_flags_by_stage(command, shown, hidden, capsys):
    assert main(command)(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: python -m rsdt_beam.pipelines.{command}")
    assert all(flag in text for flag in shown) and not any(f"{flag} " in text for flag in hidden)


def test_beams_own_options_pass_and_unknown_ones_do_not(capsys):
    """Beam's options are recognised from its PipelineOptions classes, the DaskRunner's too (registered
    only once its module is imported)."""
    from rsdt_beam.cli.commands import STACK

    beam = ["--runner", "DirectRunner", "--direct_num_workers", "2", "--temp_location", "/tmp/t", "--dry_run=True"]
    dask = ["--dask_client_address", "tcp://127.0.0.1:8786", "--dask_npartitions", "4"]
    argv = ["--optical", "obs", "--stack_output", "s", *TIMES, *beam, *dask]
    args, rest = STACK.parser().parse_known_args(argv)
    assert rest == beam + dask and args.optical == "obs"
    assert main("stack")(argv[:-2] + ["--dask_npartition", "4"]) == 2
    assert capsys.readouterr().err.strip() == (
        "rsdt_beam stack: unknown flag --dask_npartition; did you mean --dask_npartitions?"
    )


def test_tools_refuse_unknown_flags_too(capsys):
    assert main("windows_list")(["--stack_dir", "s", "--omgea", "3"]) == 2
    assert capsys.readouterr().err.strip() == "rsdt_beam windows_list: unknown flag --omgea; did you mean --omega?"


@pytest.mark.parametrize(
    "command, argv, missing",
    [
        ("stack", ["--optical", "obs", *TIMES], "--stack_output"),
        ("window", ["--window_output", "w"], "--stack_dir"),
        ("run", ["--optical", "obs", *TIMES], "--window_output"),
        ("infer", ["--model", "m.keras"], "--map_output"),
        ("scheduled", ["--optical", "obs"], "--output_root"),
        ("windows_list", [], "--stack_dir"),
    ],
)
def test_required_flags_are_marked_in_help_and_refused_when_missing(command, argv, missing, capsys):
    assert main(command)(argv) == 2
    assert capsys.readouterr().err.strip() == f"rsdt_beam {command}: {missing} is required"
    assert main(command)(["--help"]) == 0
    text = capsys.readouterr().out
    assert f"{missing} ..." in text.splitlines()[0]  # the usage line
    assert "REQUIRED: " in text.split(f"  {missing} ", 1)[1].split("\n  --", 1)[0].replace("\n", " ")


def test_help_states_duration_units_and_hides_advanced_flags_behind_help_all(capsys):
    assert main("fetch")(["--help"]) == 0
    short = capsys.readouterr().out
    assert main("fetch")(["--help-all"]) == 0
    full = capsys.readouterr().out
    for text in (short, full):
        for flag in ("--Delta", "--delta_step"):
            assert "a bare number is seconds" in " ".join(text.split(f"  {flag} ", 1)[1].split("\n  --", 1)[0].split())
    assert "--sh_max_attempts" in full and "--sh_max_attempts" not in short
    assert "--help-all shows" in short and "--help-all shows" not in full
    assert len(short.splitlines()) < 0.75 * len(full.splitlines())


def test_label_function_without_training_mode_is_refused(capsys):
    argv = ["--stack_dir", "s", "--window_output", "w", "--label_fn", "m:f"]
    assert main("window")(argv) == 2
    assert "--label_fn makes training records: give --mode training" in capsys.readouterr().err


def test_a_corrupt_gzip_file_is_named(tmp_path):
    from rsdt_beam.errors import UserError
    from rsdt_beam.tfrecord import read_records

    path = tmp_path / "0_0.tfrecords"
    path.write_bytes(b"not gzip at all" * 100)
    with open(path, "rb") as raw, pytest.raises(UserError, match=f"^{path}: not a GZIP file"):
        list(read_records(raw, gzip=True, name=str(path)))


def test_a_windows_folder_given_as_stack_folder_is_named(tmp_path):
    from rsdt_beam.errors import UserError
    from rsdt_beam.stack.files import read_stack_metadata

    (tmp_path / "metadata.json").write_text(
        '{"tile_size_y": 32, "tile_size_x": 32, "bands_sar": 0, "bands_opt": 1, "mode": "training"}'
    )
    with pytest.raises(UserError, match="is a windows folder \\(Stage 3 output\\), not a stack folder"):
        read_stack_metadata(str(tmp_path))


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.keras", None, "no such file"),
        ("garbage.keras", b"\x00" * 100, "not a Keras model (a .keras file is a zip archive; truncated?)"),
        ("garbage.h5", b"\x00" * 100, "not an HDF5 file (a Keras .h5 model or weights file)"),
    ],
)
def test_a_model_that_cannot_load_is_one_line_naming_it_at_launch(name, content, message, sample_run, tmp_path, capsys):
    model = tmp_path / name
    if content is not None:
        model.write_bytes(content)
    argv = ["--stack_dir", f"{sample_run}/stack", *WINDOW_FLAGS, "--model", str(model)]
    assert main("infer")([*argv, "--map_output", str(tmp_path / "maps")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"rsdt_beam infer: --model {model}: {message}"
    assert not (tmp_path / "maps").exists()


def test_errors_re_raised_by_beam_are_reported_as_the_original():
    """Beam re-raises a DoFn's exception as the same type with the step appended (the original as context),
    or, on portable runners, as a RuntimeError carrying the worker's traceback as text."""
    from rsdt_beam.cli.run import reported
    from rsdt_beam.tfrecord import CorruptRecordError

    def beam_copy(original):
        try:
            raise original
        except Exception as error:
            try:
                raise type(error)(f"{error} [while running 'Write windows/Write tile windows']")
            except Exception as copy:
                return copy

    assert reported(beam_copy(NotADirectoryError(20, "Not a directory", "/x/out"))) == (1, "Not a directory: /x/out")
    assert reported(beam_copy(CorruptRecordError("/s/1_1.tfrecords: truncated"))) == (2, "/s/1_1.tfrecords: truncated")
    remote = RuntimeError(
        "Traceback (most recent call last):\n  File ...\nrsdt_beam.tfrecord.CorruptRecordError: /s/1_1.tfrecords: bad\n"
    )
    assert reported(remote) == (2, "/s/1_1.tfrecords: bad")
    assert reported(ZeroDivisionError("a bug")) is None


@pytest.mark.e2e
def test_bad_stack_files_and_outputs_are_one_line_naming_the_file(sample_run, tmp_path, capsys):
    import shutil

    stack = tmp_path / "stack"
    shutil.copytree(f"{sample_run}/stack", stack)
    data = (stack / "1_1.tfrecords").read_bytes()
    (stack / "1_1.tfrecords").write_bytes(data[: len(data) // 2])
    (tmp_path / "a_file").write_text("")
    cases = [
        (str(stack), str(tmp_path / "w1"), 2, f"{stack}/1_1.tfrecords: truncated record at the end"),
        (f"{sample_run}/stack", str(tmp_path / "a_file" / "w"), 1, f"Not a directory: {tmp_path}/a_file/w"),
        (f"{sample_run}/windows", str(tmp_path / "w2"), 2, f"{sample_run}/windows is a windows folder"),
    ]
    for stack_dir, output, status, message in cases:
        argv = ["--stack_dir", stack_dir, *WINDOW_FLAGS, "--window_output", output, "--no_progress"]
        assert main("window")(argv) == status
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith(f"rsdt_beam window: {message}"), last
        assert not os.path.exists(os.path.join(output, "metadata.json"))
    with pytest.raises(Exception, match="truncated record"):  # --debug keeps the traceback
        main("window")(["--stack_dir", str(stack), *WINDOW_FLAGS, "--window_output", str(tmp_path / "w3"), "--debug"])


README_WINDOW_FLAGS = ["--Delta", "30d", "--omega", "10", "--Omega", "16"]  # the flags' defaults


@pytest.mark.parametrize(
    "command, argv, message",
    [
        (
            "run",
            [*SAMPLE_FLAGS, *README_WINDOW_FLAGS],
            "0 windows: at most 4 frames fall within Delta=30d on any tile, omega=10 (34 frames, "
            "2016-01-07T10:12:43Z to 2017-06-20T10:04:53Z)",
        ),
        ("run", [*SAMPLE_FLAGS, "--Delta", "60", "--omega", "3"], "0 windows: at most 1 frames fall within Delta=60 s"),
        (
            "run",
            [*SAMPLE_FLAGS, *WINDOW_FLAGS, "--tiles", "list:7_7"],
            "0 tiles selected: --tiles list:7_7 selects none of the 9 tiles",
        ),
        (
            "stack",
            [*SAMPLE_FLAGS, "--starttime", "2019-01-01", "--endtime", "2019-07-01"],
            "0 observations in the time range [2019-01-01T00:00:00Z, 2019-07-01T00:00:00Z): the 68 observations "
            "listed span 2015-07-11T10:00:08Z to 2017-12-22T10:04:15Z",
        ),
    ],
)
def test_a_run_that_would_write_nothing_is_refused_at_launch_in_numbers(
    command, argv, message, sample_eopatches, tmp_path, capsys
):
    output = "--window_output" if command == "run" else "--stack_output"
    out = tmp_path / "out"
    assert main(command)(["--optical", sample_eopatches, *argv, output, str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"rsdt_beam {command}: {message}"), err[-1]
    assert not out.exists()  # nothing that looks complete, nothing at all


def test_a_window_run_on_a_stack_folder_without_windows_is_refused(tmp_path, capsys):
    """The window command decides from the stack's metadata.json alone: no tile file is read."""
    import json

    metadata = {"tile_size_y": 4, "tile_size_x": 4, "bands_sar": 0, "bands_opt": 1, "deadzone_y": 0, "deadzone_x": 0}
    metadata.update(files=["0_0.tfrecords"], timestamps=[f"2017-01-{d:02d}T00:00:00Z" for d in (1, 11, 21)])
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "metadata.json").write_text(json.dumps(metadata))
    argv = ["--stack_dir", str(tmp_path / "stack"), "--window_output", str(tmp_path / "w"), "--triple"]
    assert main("window")(argv + ["--Delta", "15d", "--omega", "2"]) == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            "0 windows: at most 2 frames fall within Delta=15d on any tile, omega=2 (3 frames, 2017-01-01T00:00:00Z to "
            "2017-01-21T00:00:00Z; triple windows need omega in each of 3 parts)"
        )
    )
    assert not (tmp_path / "w").exists()


def test_refusals_show_durations_as_written():
    from rsdt_beam.common.times import format_duration
    from rsdt_beam.outputs import differences

    assert [format_duration(s) for s in (5184000.0, 43200, 5400, 60, 90.5)] == ["60d", "12h", "90m", "1m", "90.5s"]
    assert differences({"Delta": 5184000.0, "omega": 3}, {"Delta": 2592000.0, "omega": 3}) == [
        "Delta 60d there, 30d now"
    ]


@pytest.mark.e2e
def test_a_run_whose_filter_keeps_no_window_fails_and_does_not_look_complete(sample_run, tmp_path, capsys):
    out = tmp_path / "w"
    argv = ["--stack_dir", f"{sample_run}/stack", "--Delta", "60d", "--omega", "3", "--Omega", "4"]
    argv += ["--window_filter", "window_filters:at_least_five_frames", "--window_output", str(out), "--no_progress"]
    assert main("window")(argv) == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith(f"rsdt_beam window: 0 windows written to {out} from 9 tiles: the window filter or sample kept none")
    )
    assert not (out / "metadata.json").exists()


@pytest.mark.e2e
def test_a_scheduled_launch_without_new_data_succeeds_and_says_so(sample_eopatches, tmp_path, capsys):
    argv = ["--optical", sample_eopatches, *SAMPLE_FLAGS[:4], "--delta_step", "10d", *WINDOW_FLAGS, "--no_progress"]
    argv += ["--output_root", str(tmp_path / "root"), "--end", "2018-06-01", "--lookback", "30d"]
    assert main("scheduled")(argv) == 0
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith(
            "rsdt_beam scheduled: run 20180429T000000-20180529T000000 succeeded: no new observations in "
            "[2018-04-29T00:00:00Z, 2018-05-29T00:00:00Z); "
        )
    )


def test_the_direct_runners_default_follows_the_usable_cores():
    """Threads, one per core the process may use (taskset, cpusets); on one core, in_memory (no threads)."""
    from rsdt_beam.cli.runners import runner_defaults

    saved = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(saved)})
        assert runner_defaults([]) == []
        try:
            os.sched_setaffinity(0, {0, 1})
        except OSError:  # a machine (or cpuset) of one core
            pytest.skip("fewer than 2 cores to give this process")
        assert runner_defaults([]) == ["--direct_num_workers", "2", "--direct_running_mode", "multi_threading"]
        assert runner_defaults(["--direct_num_workers", "1"]) == []  # the user's choice stands
    finally:
        os.sched_setaffinity(0, saved)
