"""The commands as a user meets them: `main(argv)` of each entry point, exit codes, one-line errors,
dry runs that translate and write nothing, and `--help` that lists the command's own flags."""

import importlib
import os

import pytest
from conftest import SAMPLE_STACK_FLAGS, SAMPLE_WINDOW_FLAGS
from test_convert import LANDSAT_FLAGS, STACK_WINDOW_FLAGS

SAMPLE_FLAGS = SAMPLE_STACK_FLAGS
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
        (["--optical", "obs", "--stack_output", "s", "--tile_size", "3x3x3"], "--tile_size: expected N or NxM"),
        (["--optical", "obs", "--stack_output", "s", "--gzip_level", "12"], "--gzip_level must be 0-9, got 12"),
        (
            ["--optical", "obs", "--stack_output", "s", "--chunk_size", "many"],
            "argument --chunk_size: invalid int value: 'many'",
        ),
        (["--optical", "obs", "--starttime", "2017-01-01", "--endtime", "2018-01-01"], "--stack_output is required"),
        (["--optical", "obs", "--stack_output", "s", "--Delta", "30d"], "--Delta is not a flag of stack"),
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
        ("run", ["--starttime", "--Delta", "--window_output", "--gzip_level"], ["--output_root", "--store", "--model"]),
        ("fetch", ["--plan_only", "--sh_base_url", "--starttime", "--window_output"], ["--output_root", "--model"]),
        ("stack", ["--stack_output", "--chunk_size"], ["--Delta", "--window_output", "--store", "--lookback"]),
        ("scheduled", ["--output_root", "--lookback", "--write_stacks"], ["--starttime", "--window_output"]),
    ],
)
def test_help_lists_the_commands_own_flags_by_stage(command, shown, hidden, capsys):
    assert main(command)(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: python -m rsdt_beam.pipelines.{command}")
    assert all(flag in text for flag in shown) and not any(f"{flag} " in text for flag in hidden)
