"""The output policy (vidrender/io/outputs.py) through the command line: no command replaces or deletes a
file it did not create unless `--overwrite` is given, none writes over its own input or the current folder,
output-side OS errors and signals are one line and a documented exit code, and a kill leaves nothing that
the next run does not clean up.

The refusals happen before any work, so the matrix over every command runs in-process through
`vidrender.cli.main` with placeholder inputs; signals, locks and one-line errors run as real processes.
"""

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vidrender import cli
from vidrender.io.checkpoint import save_checkpoint
from vidrender.io.outputs import STALE_SECONDS, Output, claim_outputs
from vidrender.pipelines.motion.stack import single_layer_stack

SIZE, FRAMES = 16, 4
TINY_TRAIN = ["--steps", "1", "--size", "16", "--set", "train.batch_size=2"]


def _checkpoint(path: Path) -> Path:
    """A valid motion checkpoint, built rather than trained."""
    stack = single_layer_stack(torch.rand(3, SIZE, SIZE), torch.rand(4, SIZE, SIZE),
                               torch.eye(2, 3).repeat(FRAMES, 1, 1), 0, 24.0, (SIZE, SIZE))
    return save_checkpoint(path, "motion", {}, {}, {"variant": "known", "clips": [stack.to_dict()]})


@pytest.fixture
def inputs(tmp_path):
    """Placeholder inputs named like real ones (the refusals come before anything reads them)."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    for name in ("clip.mp4", "m.pt", "scene.pt", "image.png"):
        (folder / name).write_bytes(b"the user's " + name.encode())
    (folder / "data").mkdir()
    return folder


# command -> (arguments with OUT for the output, the output's kind, an input the command reads or None)
COMMANDS = {
    "samples": (["samples", "OUT", "-n", "1", "--size", "16", "--frames", "3"], "parent", None),
    "train": (["train", "{in}/clip.mp4", "-o", "OUT", *TINY_TRAIN], "file", "clip.mp4"),
    "export": (["export", "{in}/m.pt", "-o", "OUT"], "folder", "m.pt"),
    "compose": (["compose", "--character", "{in}/m.pt", "--background", "{in}/m.pt", "-o", "OUT"], "video", "m.pt"),
    "demo": (["demo", "-o", "OUT", "--frames", "4"], "folder", None),
    "scene dataset": (["scene", "dataset", "OUT", "--views", "2", "--size", "8"], "splits", None),
    "scene train": (["scene", "train", "{in}/data", "-o", "OUT", "--steps", "1"], "file", "data"),
    "scene render": (["scene", "render", "{in}/scene.pt", "--image", "{in}/image.png", "-o", "OUT"], "file",
                     "image.png"),
    "scene latent": (["scene", "latent", "{in}/scene.pt", "--image", "{in}/image.png", "-o", "OUT"], "file",
                     "scene.pt"),
    "bench": (["bench", "--only", "machine", "--json-out", "OUT"], "file", None),
}


def _snapshot(root: Path) -> dict:
    """Every path under `root` with its content hash (files) and modification time."""
    return {str(path.relative_to(root)): (hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir",
                                          path.stat().st_mtime_ns)
            for path in sorted(root.rglob("*"))}


def _run(args: list[str], capsys) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exited:
        cli.main(args)
    return exited.value.code, capsys.readouterr().err.strip().splitlines()


def _existing_targets(tmp_path: Path, kind: str) -> dict[str, tuple[Path, Path]]:
    """{case: (what to pass as OUT, the user's thing that must survive)} for an output of `kind`."""
    user_file = tmp_path / "existing" / "notes.bin"
    user_folder = tmp_path / "existing" / "work"
    user_file.parent.mkdir()
    user_file.write_bytes(b"precious")
    user_folder.mkdir()
    (user_folder / "notes.txt").write_text("mine")
    if kind == "parent":  # samples DIR writes DIR/clip0
        (user_folder / "clip0").mkdir()
        (user_folder / "clip0" / "notes.txt").write_text("mine")
        return {"file": (user_file, user_file), "folder": (user_folder, user_folder)}
    if kind == "splits":  # scene dataset ROOT writes ROOT-train, ROOT-val, ROOT-test
        (tmp_path / "existing" / "set-train").mkdir()
        (tmp_path / "existing" / "set-train" / "notes.txt").write_text("mine")
        (tmp_path / "existing" / "set-val").write_bytes(b"precious")
        return {"folder": (tmp_path / "existing" / "set", tmp_path / "existing")}
    return {"file": (user_file, user_file), "folder": (user_folder, user_folder)}


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_replaces_a_users_file_folder_or_its_own_input(command, overwrite, inputs, tmp_path, capsys):
    template, kind, input_name = COMMANDS[command]
    targets = _existing_targets(tmp_path, kind)
    if input_name is not None:
        targets["input"] = (inputs / input_name, inputs / input_name)
    for case, (out, survivor) in targets.items():
        if overwrite and case == "file" and kind in ("file", "video"):
            continue  # replacing a file with --overwrite is the point of the flag (tested below)
        before = _snapshot(tmp_path)
        args = [part.replace("OUT", str(out)).replace("{in}", str(inputs)) for part in template]
        code, lines = _run([*args, *(["--overwrite"] if overwrite else [])], capsys)
        assert code == 2, (case, lines)
        assert len(lines) == 1 and lines[0].startswith("error:"), (case, lines)
        assert survivor.exists() and _snapshot(tmp_path) == before, case


def test_overwrite_replaces_an_earlier_export_but_not_a_folder_with_other_files(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path / "m.pt")
    assert _run(["export", str(checkpoint), "-o", str(tmp_path / "layers")], capsys)[0] == 0
    first = (tmp_path / "layers" / "stack.json").stat().st_mtime_ns
    code, lines = _run(["export", str(checkpoint), "-o", str(tmp_path / "layers")], capsys)
    assert code == 2 and "pass --overwrite" in lines[0]
    assert _run(["export", str(checkpoint), "-o", str(tmp_path / "layers"), "--overwrite"], capsys)[0] == 0
    assert (tmp_path / "layers" / "stack.json").stat().st_mtime_ns != first
    (tmp_path / "layers" / "notes.txt").write_text("mine")
    code, lines = _run(["export", str(checkpoint), "-o", str(tmp_path / "layers"), "--overwrite"], capsys)
    assert code == 2 and "notes.txt" in lines[0] and (tmp_path / "layers" / "notes.txt").exists()


def test_compose_overwrite_replaces_the_video_and_its_previews(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path / "m.pt")
    args = ["compose", "--character", str(checkpoint), "--background", str(checkpoint), "-o", str(tmp_path / "o.mp4"),
            "--preview"]
    assert _run(args, capsys)[0] == 0
    (tmp_path / "o.mp4").unlink()
    code, lines = _run(args, capsys)  # the preview GIF is still there: refused before the video is made
    assert code == 2 and "o.gif: already exists" in lines[0] and not (tmp_path / "o.mp4").exists()
    assert _run([*args, "--overwrite"], capsys)[0] == 0 and (tmp_path / "o.mp4").is_file()


@pytest.mark.parametrize("target", [".", "..", "/"])
def test_the_current_folder_and_those_above_are_refused(target, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoint = _checkpoint(tmp_path / "m.pt")
    code, lines = _run(["export", str(checkpoint), "-o", target, "--overwrite"], capsys)
    assert code == 2 and len(lines) == 1 and "current folder" in lines[0]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["m.pt"]


def test_train_refuses_an_earlier_run_folder_without_resume_or_overwrite(tmp_path, capsys):
    (tmp_path / "m.run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "clip.mp4").write_bytes(b"placeholder")
    code, lines = _run(["train", str(tmp_path / "clip.mp4"), "-o", str(tmp_path / "m.pt"), *TINY_TRAIN], capsys)
    assert code == 2 and "--resume" in lines[0] and "--overwrite" in lines[0]


def test_a_destination_being_written_is_refused(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path / "m.pt")
    with claim_outputs([Output(tmp_path / "layers", folder=True)]):  # as another command would hold it
        code, lines = _run(["export", str(checkpoint), "-o", str(tmp_path / "layers")], capsys)
    assert code == 2 and "another vidrender command is writing it" in lines[0]
    assert not (tmp_path / "layers").exists()
    assert _run(["export", str(checkpoint), "-o", str(tmp_path / "layers")], capsys)[0] == 0
    assert not list(tmp_path.glob(".*lock"))  # the lock file goes with the command


def test_a_killed_runs_temporaries_are_removed_by_the_next_run(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path / "m.pt")
    stale = tmp_path / ".o.mp4.0123abcd.tmp.mp4"
    fresh = tmp_path / ".o.mp4.89abcdef.tmp.mp4"
    stale_folder = tmp_path / ".layers.fedcba98.old"
    lookalike = tmp_path / ".o.mp4.notes"
    for path in (stale, fresh, lookalike):
        path.write_bytes(b"left behind")
    stale_folder.mkdir()
    (stale_folder / "00000.png").write_bytes(b"left behind")
    old = time.time() - 2 * STALE_SECONDS
    for path in (stale, stale_folder, lookalike):
        os.utime(path, (old, old))
    assert _run(["compose", "--character", str(checkpoint), "--background", str(checkpoint), "-o",
                 str(tmp_path / "o.mp4")], capsys)[0] == 0
    assert _run(["export", str(checkpoint), "-o", str(tmp_path / "layers")], capsys)[0] == 0
    assert not stale.exists() and not stale_folder.exists()
    assert fresh.exists() and lookalike.exists()  # maybe a live writer's; not ours by name


def test_a_full_disk_while_writing_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    from vidrender.pipelines.motion import stack

    checkpoint = _checkpoint(tmp_path / "m.pt")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(stack, "write_image", full_disk)
    code, lines = _run(["export", str(checkpoint), "-o", str(tmp_path / "layers")], capsys)
    assert code == 2 and len(lines) == 1 and "No space left on device" in lines[0]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["m.pt"]


@pytest.mark.parametrize("name, refused", [("x" * 300 + ".mp4", True), ("x" * 245 + ".mp4", False)],
                         ids=["name-too-long", "long-legal-name"])
def test_long_output_names(name, refused, tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path / "m.pt")
    code, lines = _run(["compose", "--character", str(checkpoint), "--background", str(checkpoint), "-o",
                        str(tmp_path / name)], capsys)
    if refused:
        assert code == 2 and len(lines) == 1 and "longer than 255 bytes" in lines[0]
    else:  # its temporary name would be too long unshortened
        assert code == 0 and (tmp_path / name).is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["m.pt", *([] if refused else [name])]


def test_a_parent_that_is_a_file_is_one_line(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path / "m.pt")
    code, lines = _run(["compose", "--character", str(checkpoint), "--background", str(checkpoint), "-o",
                        str(checkpoint / "o.mp4")], capsys)
    assert code == 2 and len(lines) == 1 and "m.pt: is a file, not a folder" in lines[0]


def _vidrender(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vidrender", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_bad_option_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "vidrender", "compose", "--bogus"], capture_output=True,
                            text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0] == "error: vidrender compose: No such option: --bogus (see vidrender compose --help)"


# the fast tier sends SIGTERM; Ctrl-C and SIGHUP take the same path
@pytest.mark.parametrize("signum", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM,
                                    pytest.param(signal.SIGHUP, marks=pytest.mark.slow)], ids=lambda s: s.name)
def test_a_signal_mid_write_stops_with_one_line_and_leaves_nothing(signum, tmp_path):
    checkpoint = _checkpoint(tmp_path / "m.pt")
    output = tmp_path / "frames"
    process = _vidrender("compose", "--character", str(checkpoint), "--background", str(checkpoint), "-o",
                         str(output), "--frames", "1500", "--size", "96x96")
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".frames.*.tmp")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, process.communicate()  # caught while writing
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    lines = stderr.strip().splitlines()
    assert process.returncode == 128 + signum, stderr
    assert len(lines) == 1 and lines[0].startswith("stopped:"), stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["m.pt"]


@pytest.mark.slow
def test_two_trainings_cannot_write_one_checkpoint(tmp_path):
    from vidrender.synth import make_clip, write_truth

    truth = write_truth(make_clip(seed=0, size=32, frames=6), tmp_path / "truth")
    output = tmp_path / "m.pt"
    arguments = ["train", str(truth), "-o", str(output), "--variant", "known", "--affines", "truth", "--steps",
                 "400", "--size", "16", "--set", "train.batch_size=2", "--set", "train.preview_every=0"]
    first = _vidrender(*arguments)
    deadline = time.monotonic() + 120
    while not (tmp_path / "m.run" / "log.jsonl").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    # --overwrite, so that only the lock stands between the second run and the first one's run folder
    second = subprocess.run([sys.executable, "-m", "vidrender", *arguments, "--overwrite"], capture_output=True,
                            text=True, timeout=120)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    assert second.returncode == 2 and "another vidrender command is writing it" in second.stderr, second.stderr
    assert first.returncode == 128 + signal.SIGTERM  # stopped by us, saved at a step boundary
    assert (tmp_path / "m.run" / "log.jsonl").is_file()  # the first run's folder was not replaced


def test_an_os_error_no_command_expected_is_still_one_line(tmp_path, capsys, monkeypatch):
    from vidrender.io import video_write

    checkpoint = _checkpoint(tmp_path / "m.pt")

    def failing_device(path, *args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))

    monkeypatch.setattr(video_write, "write_video", failing_device)
    code, lines = _run(["compose", "--character", str(checkpoint), "--background", str(checkpoint), "-o",
                        str(tmp_path / "o.mp4")], capsys)
    assert code == 2 and lines == [f"error: {tmp_path / 'o.mp4'}: {os.strerror(errno.EIO)} (add --debug for the "
                                   "traceback)"]


def test_an_empty_folder_made_for_the_output_is_used(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path / "m.pt")
    (tmp_path / "layers").mkdir()
    assert _run(["export", str(checkpoint), "-o", str(tmp_path / "layers")], capsys)[0] == 0
    assert (tmp_path / "layers" / "stack.json").is_file()
