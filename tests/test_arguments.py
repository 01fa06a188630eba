"""Every entry point parses with `ddpm_hub.arguments.parse_config`: an unknown or misspelled flag ends like argparse
(usage, one line naming the flag and the closest real one, exit status 2), positionals and `--help` work alike."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import clean_env

from ddpm_hub.arguments import parse_config
from ddpm_hub.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


def _exit_status(main, argv) -> int:
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


@pytest.mark.parametrize(
    "argv, flag, suggestion",
    [
        (["push", "out", "--repo_id", "org/x", "--privat"], "--privat", "--private"),
        (["sample", "org/x", "--num_image", "4"], "--num_image", "--num_images"),
        (["sample", "org/x", "--sampeler", "ddim"], "--sampeler", "--sampler"),
        (["schedules", "--schedule", "linear"], "--schedule", "--schedules"),
        (["eval", "model", "--reference", "shapes", "--num_sample=10"], "--num_sample", "--num_samples"),
        (["explore", "--prot", "7860"], "--prot", "--port"),
    ],
)
def test_cli_unknown_flag_names_the_closest_and_exits_2(capsys, argv, flag, suggestion):
    assert _exit_status(cli_main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: ddpm-hub {argv[0]} "), err
    assert err.strip().splitlines()[-1] == (
        f"ddpm-hub {argv[0]}: error: unrecognized argument {flag}; did you mean {suggestion}?"
    )


def test_training_unknown_flag_exits_2_before_any_work(tmp_path, capsys):
    from ddpm_hub.train import main as train_main

    out = tmp_path / "out"
    assert _exit_status(train_main, ["--output_dir", str(out), "--learning_rat", "1e-4"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "train_unconditional.py: error: unrecognized argument --learning_rat; did you mean --learning_rate?"
    assert not out.exists()


@pytest.mark.parametrize(
    "script, argv, message",
    [
        ("train_unconditional.py", ["--learning_rat", "1e-4"],
         "unrecognized argument --learning_rat; did you mean --learning_rate?"),
        ("text2img.py", ["--prompt", "a cat", "--num_inference_step", "2"],
         "unrecognized argument --num_inference_step; did you mean --num_inference_steps?"),
    ],
)  # fmt: skip
def test_scripts_end_unknown_flags_like_argparse(tmp_path, script, argv, message):
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *argv],
        env=clean_env(OMP_NUM_THREADS="1"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"usage: {script} ") and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"{script}: error: {message}"
    assert list(tmp_path.iterdir()) == []


@dataclass
class _Command:
    source: str = field(metadata={"positional": True, "help": "Where from."})
    target: str | None = field(default=None, metadata={"positional": True, "help": "Where to."})
    pair: list[str] | None = field(default=None, metadata={"nargs": 2, "metavar": ("A", "B")})
    tag: list[str] | None = field(default=None, metadata={"action": "append", "nargs": None})
    steps: int = field(default=3, metadata={"help": "Steps."})
    force: bool = field(default=False, metadata={"action": "store_true"})


def test_positionals_pairs_and_repeated_flags():
    (command,) = parse_config([_Command], ["here", "--tag", "a", "--pair", "x", "y", "--tag", "b,c"])
    assert command == _Command(source="here", target=None, pair=["x", "y"], tag=["a", "b,c"], steps=3, force=False)
    (command,) = parse_config([_Command], ["here", "there", "--steps", "5"])
    assert (command.target, command.steps, command.tag, command.force) == ("there", 5, None, False)
    (command,) = parse_config([_Command], ["--force", "here"])  # a switch never swallows the positional after it
    assert (command.source, command.force) == ("here", True)


def test_no_abbreviations_and_no_guess_when_nothing_is_close(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config([_Command], ["here", "--ste", "5"], prog="demo")
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == "demo: error: unrecognized argument --ste; did you mean --steps?"
    )
    with pytest.raises(SystemExit):
        parse_config([_Command], ["here", "--zzzzzz"], prog="demo")
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == "demo: error: unrecognized argument --zzzzzz; see demo --help"
    )
    with pytest.raises(SystemExit):
        parse_config([_Command], ["here", "there", "extra"], prog="demo")
    assert capsys.readouterr().err.strip().splitlines()[-1] == "demo: error: unrecognized arguments: extra"


@pytest.mark.parametrize("command", ["push", "sample", "schedules", "eval", "explore"])
def test_cli_help_shows_defaults_like_training(capsys, command):
    assert _exit_status(cli_main, [command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ddpm-hub {command} ") and "(default: " in out


def test_cli_without_or_with_unknown_subcommand_exits_2(capsys):
    assert _exit_status(cli_main, []) == 2
    assert _exit_status(cli_main, ["smaple"]) == 2
    assert "invalid choice: 'smaple'" in capsys.readouterr().err
