"""The command line: help, version, one-line errors with exit code 2, and --debug tracebacks."""

import subprocess
import sys

import pytest
import torch
import typer

from vidrender import __version__, cli
from vidrender.errors import UserError


def _run(*args):
    return subprocess.run([sys.executable, "-m", "vidrender", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_commands():
    result = _run("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_version():
    result = _run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"vidrender {__version__}"


def test_unknown_command_is_a_usage_error():
    result = _run("no-such-command")
    assert result.returncode == 2
    assert "No such command" in result.stderr


@pytest.fixture
def failing_command():
    """A command that raises a UserError, added to the app for the test and removed afterwards."""

    def fail(path: str = typer.Argument(...)) -> None:
        raise UserError(f"{path}: no such file")

    cli._register_pipelines()
    cli.app.command("fail-for-test")(fail)
    yield
    cli.app.registered_commands = [c for c in cli.app.registered_commands if c.name != "fail-for-test"]
    cli._debug["enabled"] = False


def test_user_error_is_one_line_and_exit_2(failing_command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fail-for-test", "clip.mp4"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: clip.mp4: no such file"
    assert "Traceback" not in err


@pytest.mark.parametrize("args", [["--debug", "fail-for-test", "x"], ["fail-for-test", "x", "--debug"]])
def test_debug_shows_the_traceback(failing_command, args):
    with pytest.raises(UserError, match="x: no such file"):
        cli.main(args)


def test_samples_writes_truth_folders(tmp_path):
    from vidrender.synth import read_truth

    result = _run("samples", str(tmp_path / "s"), "-n", "2", "--size", "32", "--frames", "6")
    assert result.returncode == 0, result.stderr
    clips = [read_truth(tmp_path / "s" / f"clip{i}") for i in range(2)]
    assert [c.frames.shape for c in clips] == [(6, 3, 32, 32)] * 2
    assert not torch.equal(clips[0].background, clips[1].background)


@pytest.mark.parametrize("aspect, width", [("16:9", 64), ("9:16", 20), ("21:9", 84)])
def test_samples_of_any_aspect_and_character_size(tmp_path, aspect, width):
    from vidrender.synth import read_truth

    result = _run("samples", str(tmp_path / "s"), "-n", "1", "--size", "36", "--aspect", aspect,
                  "--coverage", "0.03", "--frames", "4")
    assert result.returncode == 0, result.stderr
    clip = read_truth(tmp_path / "s" / "clip0")
    assert clip.frames.shape == (4, 3, 36, width)
    assert clip.alpha[0].mean().item() == pytest.approx(0.03, rel=0.35)


def test_samples_refuses_a_bad_aspect(tmp_path):
    result = _run("samples", str(tmp_path / "s"), "--aspect", "wide")
    assert result.returncode == 2 and "--aspect" in result.stderr and not (tmp_path / "s").exists()
