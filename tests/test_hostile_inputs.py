"""Hostile and broken inputs through the real command line: one line of error, exit 2, nothing written.

Runs `vidrender.cli.main` in this process (the same code as the console script, minus interpreter
start-up): an exception other than the one-line `UserError` exit would escape and fail the test, which
is what "no traceback" means. The 10000 x 10000 clip runs in a child process to measure its peak memory.
Cases already covered through the CLI elsewhere (a text file named .mp4, a malformed --affines file, a
checkpoint of the other pipeline) are not repeated here.
"""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from media_files import write_audio_only, write_h264
from PIL import Image

from vidrender import cli
from vidrender.config import load_config, to_dict
from vidrender.io.checkpoint import FORMAT_VERSION, save_checkpoint
from vidrender.pipelines.motion.stack import single_layer_stack
from vidrender.pipelines.scene3d.config import Scene3dConfig
from vidrender.pipelines.scene3d.model import SceneRenderer
from vidrender.synth import make_clip, write_truth

SIZE = 32
SCENE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "scene3d" / "cpu.yaml"




def _mjpeg_clip(path, sides):
    """An MJPEG clip with one frame per side in `sides`, muxed from JPEGs without decoding or encoding video.

    Makes a 10000 x 10000 clip without a 300 MB frame in memory, and a clip whose frame size changes.
    """
    container = av.open(str(path), "w")
    stream = container.add_stream("mjpeg", rate=10)
    stream.width, stream.height, stream.pix_fmt = sides[0], sides[0], "yuvj420p"
    container.start_encoding()
    for index, side in enumerate(sides):
        jpeg = io.BytesIO()
        Image.new("L", (side, side)).save(jpeg, "JPEG")
        packet = av.Packet(jpeg.getvalue())
        packet.stream, packet.pts, packet.dts, packet.time_base = stream, index, index, stream.time_base
        container.mux(packet)
    container.close()
    return path


def _with_bad_nal_length(path: Path) -> bytes:
    """The bytes of the H.264 mp4 at `path` with the middle frame's first NAL length prefix pointing past
    the end of its packet.

    Random bytes written over a frame are not a reliable test: on frames of a few macroblocks the decoder
    often reads them as valid, slightly different pixels and reports nothing (37 of 60 positions tried here
    with FFmpeg 8), and which positions do depends on the encoder's output. A length prefix past the end of
    the packet is refused by every H.264 decoder.
    """
    with av.open(str(path)) as container:
        packets = [(packet.pos, packet.size) for packet in container.demux(video=0) if packet.size]
    position, size = packets[len(packets) // 2]
    damaged = bytearray(path.read_bytes())
    damaged[position : position + 4] = (4 * size).to_bytes(4, "big")
    return bytes(damaged)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    noise = list(np.random.default_rng(0).integers(0, 256, (20, SIZE, SIZE, 3), dtype=np.uint8))
    index_last = write_h264(root / "index_last.mp4", noise).read_bytes()  # mp4's index (moov) is at the end
    index_first = write_h264(root / "index_first.mp4", noise, {"movflags": "faststart"}).read_bytes()
    (root / "cut_index.mp4").write_bytes(index_last[: len(index_last) // 2])
    (root / "cut_frames.mp4").write_bytes(index_first[: len(index_first) // 2])
    (root / "damaged.mp4").write_bytes(_with_bad_nal_length(root / "index_first.mp4"))
    (root / "empty.mp4").write_bytes(b"")
    write_h264(root / "one_frame.mp4", noise[:1])
    write_audio_only(root / "audio_only.mp4")
    _mjpeg_clip(root / "huge.avi", [10_000, 10_000])
    _mjpeg_clip(root / "size_changes.avi", [SIZE, SIZE, 2 * SIZE])  # what damaged MJPEG streams decode to
    return root


def _refused(args, capsys, message: str) -> str:
    """Run the CLI; it must exit 2 with exactly one line on stderr that contains `message`."""
    with pytest.raises(SystemExit) as exited:
        cli.main([str(arg) for arg in args])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    return lines[0]


def _succeeds(args) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([str(arg) for arg in args])
    assert exited.value.code == 0


@pytest.mark.parametrize(
    "name, message",
    [
        ("cut_index.mp4", "not a video file FFmpeg can read"),
        ("cut_frames.mp4", "truncated or corrupt"),
        ("damaged.mp4", "corrupt"),
        ("empty.mp4", "not a video file FFmpeg can read"),
        ("audio_only.mp4", "has no video stream"),
        ("one_frame.mp4", "needs at least 2"),
        ("size_changes.avi", "frame 2 is 64x64 but the first is 32x32"),
    ],
)
def test_broken_videos_are_refused_by_train(videos, tmp_path, capsys, name, message):
    # --steps 1: should a broken clip ever be accepted, the test fails in seconds, not after a full training
    _refused(["train", videos / name, "-o", tmp_path / "a.pt", "--variant", "known", "--affines", "track",
              "--steps", "1"], capsys, message)
    assert list(tmp_path.iterdir()) == []  # neither a.pt nor a.run


def _peak_rss_kib(args) -> tuple[int, str]:
    """Run the CLI in a child process; (its peak resident memory in KiB, its stderr)."""
    child = subprocess.Popen([sys.executable, "-m", "vidrender", *map(str, args)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 2, stderr
    return usage.ru_maxrss, stderr


def test_10000_pixel_frames_are_refused_from_the_header_in_bounded_memory(videos, tmp_path):
    train = ["train", None, "-o", tmp_path / "a.pt", "--variant", "known", "--affines", "track"]
    baseline, _ = _peak_rss_kib([train[0], videos / "empty.mp4", *train[2:]])
    peak, stderr = _peak_rss_kib([train[0], videos / "huge.avi", *train[2:]])
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "10000x10000 (100 Mpixel), over the limit of 67 Mpixel" in lines[0], stderr
    # one decoded RGB frame of this size is 286 MiB (as float32, 1.1 GiB): none was ever made
    assert peak - baseline < 150 * 1024, (peak, baseline)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A valid motion and scene3d checkpoint (built, not trained) and the folder to put damaged ones in."""
    root = tmp_path_factory.mktemp("checkpoints")
    stack = single_layer_stack(torch.rand(3, 16, 16), torch.rand(4, 16, 16), torch.eye(2, 3).repeat(4, 1, 1), 0, 24.0)
    save_checkpoint(root / "motion.pt", "motion", {}, {}, {"clips": [stack.to_dict()]})
    config = load_config(Scene3dConfig, SCENE_CONFIG)
    model = SceneRenderer.from_config(config)
    save_checkpoint(root / "scene.pt", "scene3d", to_dict(config), model.state_dict(), {})
    image = root / "view.png"
    Image.new("RGB", (32, 32), (90, 120, 200)).save(image)
    return root


def _damaged(source, path, change):
    payload = torch.load(source, weights_only=True)
    change(payload)
    torch.save(payload, path)
    return path


def _motion_commands(checkpoint, folder, good):
    """export, compose (as character and as background) and eval of a motion checkpoint."""
    return [
        ["export", checkpoint, "-o", folder / "layers"],
        ["compose", "--character", checkpoint, "--background", good, "-o", folder / "c.mp4"],
        ["compose", "--character", good, "--background", checkpoint, "-o", folder / "c.mp4"],
        ["eval", checkpoint, "--truth", folder / "no_truth_needed_first"],
    ]


def test_the_valid_checkpoints_work(checkpoints, tmp_path):
    # so that the refusals below are about the damage, not about the made-up files
    _succeeds(["compose", "--character", checkpoints / "motion.pt", "--background", checkpoints / "motion.pt",
               "-o", tmp_path / "c.mp4"])
    _succeeds(["export", checkpoints / "motion.pt", "-o", tmp_path / "layers"])
    _succeeds(["scene", "render", checkpoints / "scene.pt", "--image", checkpoints / "view.png",
               "-o", tmp_path / "v.png"])


def _set_entry(path, value):
    """Set the clip entry's item at `path` (keys and list indices, e.g. ("background", "plate"))."""
    def change(payload):
        container = payload["artifact"]["clips"][0]
        for key in path[:-1]:
            container = container[key]
        container[path[-1]] = value
    return change


def _drop_entry(path):
    def change(payload):
        container = payload["artifact"]["clips"][0]
        for key in path[:-1]:
            container = container[key]
        del container[path[-1]]
    return change


def _set(key, value):
    def change(payload):
        payload[key] = value
    return change


MOTION_DAMAGE = {
    "newer_version": (_set("format_version", FORMAT_VERSION + 1), "newer than this vidrender reads"),
    "text_version": (_set("format_version", "1"), "not a vidrender checkpoint"),
    "missing_plate": (_drop_entry(("background", "plate")), "plate is not a float tensor"),
    "plate_wrong_shape": (_set_entry(("background", "plate"), torch.zeros(3, 5)), "plate has shape (3, 5)"),
    "plate_not_a_tensor": (_set_entry(("background", "plate"), [[0.5]]), "plate is not a float tensor"),
    "empty_plate": (_set_entry(("background", "plate"), torch.zeros(3, 0, 0)), "the plate is 0x0"),
    "no_characters": (_set_entry(("characters",), []), "no character layers"),
    "no_affines": (_set_entry(("characters", 0, "affines"), torch.zeros(0, 2, 3)), "have 0 affines"),
    "nan_affines": (_set_entry(("characters", 0, "affines"), torch.full((4, 2, 3), float("nan"))),
                    "affines holds NaN"),
    "wrong_camera": (_set_entry(("background", "camera"), torch.zeros(2, 3, 3)), "camera has shape (2, 3, 3)"),
    "text_fps": (_set_entry(("fps",), "fast"), "fps is 'fast'"),
    "bad_reference": (_set_entry(("characters", 0, "reference"), 9), "reference frame is 9"),
    "artifact_a_list": (_set("artifact", [1, 2]), "'artifact' is a list"),
    "clips_not_entries": (_set("artifact", {"clips": [5]}), "the clip entry is not a dict"),
    "clips_not_a_list": (_set("artifact", {"clips": 5}), "no list of clips"),
}


@pytest.mark.parametrize("damage", MOTION_DAMAGE)
def test_damaged_motion_checkpoints_are_refused_by_every_command(checkpoints, tmp_path, capsys, damage):
    change, message = MOTION_DAMAGE[damage]
    bad = _damaged(checkpoints / "motion.pt", tmp_path / "bad.pt", change)
    for args in _motion_commands(bad, tmp_path, checkpoints / "motion.pt"):
        _refused(args, capsys, message)
    assert [p.name for p in tmp_path.iterdir()] == ["bad.pt"]


class _RunsCode:
    """Unpickling this would run a shell command: the payload of a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_unexecuted_by_every_command(checkpoints, tmp_path, capsys):
    marker = tmp_path / "code_ran"
    motion = torch.load(checkpoints / "motion.pt", weights_only=True)
    motion["artifact"]["trap"] = _RunsCode(marker)
    torch.save(motion, tmp_path / "evil_motion.pt")
    scene = torch.load(checkpoints / "scene.pt", weights_only=True)
    scene["config"]["trap"] = _RunsCode(marker)
    torch.save(scene, tmp_path / "evil_scene.pt")
    commands = _motion_commands(tmp_path / "evil_motion.pt", tmp_path, checkpoints / "motion.pt")
    commands.append(["scene", "render", tmp_path / "evil_scene.pt", "--image", checkpoints / "view.png",
                     "-o", tmp_path / "v.png"])
    commands.append(["scene", "eval", tmp_path / "evil_scene.pt", tmp_path])
    for args in commands:
        _refused(args, capsys, "refused, it holds pickled objects that could run code")
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil_motion.pt", "evil_scene.pt"]


def _scene_weights(change):
    def edit(payload):
        change(payload["weights"])
    return edit


SCENE_DAMAGE = {
    "missing_tensor": (_scene_weights(lambda weights: weights.pop("to_rgb.weight")), "missing: ['to_rgb.weight']"),
    "wrong_shape": (_scene_weights(lambda weights: weights.update({"to_rgb.bias": torch.zeros(7)})),
                    "to_rgb.bias has shape (7,), the model needs (3,)"),
    "weights_not_tensors": (_scene_weights(lambda weights: weights.update({"to_rgb.bias": [0.0, 0.0, 0.0]})),
                            "weights must be named tensors"),
    "config_a_list": (_set("config", [1]), "'config' is a list"),
    "newer_version": (_set("format_version", FORMAT_VERSION + 1), "newer than this vidrender reads"),
    # a config edited to describe another (larger) model than the file's tensors
    "other_config": (lambda payload: payload["config"]["model"].update(channels_3d=[512] * 8), "weights do not match"),
}


@pytest.mark.parametrize("damage", SCENE_DAMAGE)
def test_damaged_scene_checkpoints_are_refused(checkpoints, tmp_path, capsys, damage):
    change, message = SCENE_DAMAGE[damage]
    bad = _damaged(checkpoints / "scene.pt", tmp_path / "bad.pt", change)
    _refused(["scene", "render", bad, "--image", checkpoints / "view.png", "-o", tmp_path / "v.png"], capsys, message)
    assert [p.name for p in tmp_path.iterdir()] == ["bad.pt"]


def test_truncated_checkpoint_is_refused(checkpoints, tmp_path, capsys):
    data = (checkpoints / "motion.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    _refused(["export", tmp_path / "cut.pt", "-o", tmp_path / "layers"], capsys, "not a readable vidrender checkpoint")
    assert [p.name for p in tmp_path.iterdir()] == ["cut.pt"]


TRAJECTORIES = {
    "nan.json": ('{"frames": [[[1, 0, NaN], [0, 1, 0]]], "width": 16, "height": 16}', "NaN or infinite"),
    "cut.json": ('{"frames": [[[1, 0, 0], [0, 1', "not valid JSON"),
    "no_frames.json": ('{"affines": []}', '"frames"'),
    "overflow.json": ('{"frames": [[[1, 0, 1e300], [0, 1, 0]]], "width": 1e-300, "height": 16}', "too large"),
    "huge_integer.json": ('{"frames": [[[1' + "0" * 400 + ', 0, 0], [0, 1, 0]]]}', "ordinary numbers"),
    "deep.json": ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
}


@pytest.mark.parametrize("name", TRAJECTORIES)
def test_broken_trajectories_are_refused_by_compose(checkpoints, tmp_path, capsys, name):
    content, message = TRAJECTORIES[name]
    (tmp_path / name).write_text(content)
    good = checkpoints / "motion.pt"
    _refused(["compose", "--character", good, "--background", good, "--motion", tmp_path / name,
              "-o", tmp_path / "c.mp4"], capsys, message)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_nan_trajectory_is_refused_by_train(tmp_path, capsys):
    truth = write_truth(make_clip(seed=0, size=SIZE, frames=3), tmp_path / "truth")
    (tmp_path / "nan.json").write_text('{"frames": [[[1, 0, NaN], [0, 1, 0]]]}')
    _refused(["train", truth, "-o", tmp_path / "a.pt", "--variant", "known", "--affines", tmp_path / "nan.json"],
             capsys, "NaN or infinite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.json", "truth"]


def _scene_folder(root, views=3):
    scene = root / "data" / "scene"
    scene.mkdir(parents=True)
    params = {}
    for index in range(views):
        Image.new("RGB", (32, 32), (index * 40, 80, 160)).save(scene / f"{index:05d}.png")
        params[f"{index:05d}"] = {"azimuth": 30.0 * index, "elevation": 10.0}
    return scene, params


@pytest.mark.parametrize(
    "mismatch, message",
    [
        ("lists_a_missing_image", "lists views without an image"),
        ("image_not_listed", "images not listed"),
        ("not_an_object", "expected an object"),
        ("nan_angle", "must be finite"),
    ],
)
def test_data_set_with_mismatched_json_is_refused_by_scene_train(tmp_path, capsys, mismatch, message):
    scene, params = _scene_folder(tmp_path)
    if mismatch == "lists_a_missing_image":
        params["00007"] = {"azimuth": 0.0, "elevation": 0.0}
    elif mismatch == "image_not_listed":
        del params["00002"]
    elif mismatch == "nan_angle":
        params["00001"]["azimuth"] = float("nan")
    text = json.dumps(list(params.values()) if mismatch == "not_an_object" else params)
    (scene / "render_params.json").write_text(text)
    _refused(["scene", "train", tmp_path / "data", "-o", tmp_path / "s.pt", "--config", SCENE_CONFIG],
             capsys, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
