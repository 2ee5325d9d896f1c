"""`vidrender compose` end to end: two models trained on different synthetic clips, composed through the CLI.

Clip A (64x64, 16 frames at 24 fps) gives the character, clip B (80x64, 12 frames at 12 fps) the
background, so every run also exercises mismatched sizes and frame rates. Results are checked against
the synthetic truth: the true re-render (A's true sprite moved by A's true motion over B's true plate),
the true mattes, and where a path or an edit says the character must be (centroid and area of the
matte that `--layers-only` writes). Everything goes through the real command line (`vidrender.cli.main`).
"""

from __future__ import annotations

import contextlib
import io
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from motion_training import train_plainly
from PIL import Image

from vidrender import geometry, metrics
from vidrender.cli import main
from vidrender.compositing import over
from vidrender.config import load_config, to_dict
from vidrender.io.checkpoint import save_checkpoint
from vidrender.io.images import read_image
from vidrender.io.trajectory import write_trajectory
from vidrender.io.video import probe, read_video
from vidrender.io.video_write import write_video
from vidrender.pipelines.motion.config import MotionConfig
from vidrender.pipelines.motion.data import Clip
from vidrender.pipelines.motion.decomposition import load_stack
from vidrender.pipelines.motion.stack import CharacterLayer, composite
from vidrender.pipelines.motion.task import MotionTask
from vidrender.synth import make_clip, recompose
from vidrender.synth.motion import MotionRanges

# Compose PSNR against the true re-render: a correct compose of these tiny models scores ~32 dB (the
# residual is the learned matte's edge); every broken compose below scores under 21 dB (the character
# in the wrong place or missing costs ~10 dB on this 80x64 frame). 28 dB is the target for
# default training at 128 px, between the two with a margin of 4 dB on the good side and 7 on the bad.
THRESHOLD = 28.0
# Fast settings: a `known` model learns the matte in 80 steps at 32 px; inference fits it at 64 px.
OVERRIDES = ["variant=known", "data.size=32", "data.max_gap=4", "loss.regulariser_warmup=40", "train.steps=80",
             "train.batch_size=8", "infer.refine_steps=60", "infer.rounds=1"]
MOTION = MotionRanges(cycles=(0.125, 0.375))  # the default speed per frame on a 16-frame clip
A_SIZE, B_SIZE = (64, 64), (80, 64)  # (W, H)


def train_checkpoint(truth, path):
    """Train variant `known` with the truth's affines (a plain loop; the shared loop is tested elsewhere)."""
    torch.manual_seed(0)
    config = load_config(MotionConfig, None, OVERRIDES)
    task = MotionTask(config, [Clip(frames=truth.frames, affines=truth.affines.float(), fps=truth.fps, name="t")])
    model = train_plainly(task)
    save_checkpoint(path, "motion", to_dict(config), model.state_dict(), task.artifact(model))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("compose")
    clip_a = make_clip(seed=1, size=A_SIZE, frames=16, fps=24.0, motion=MOTION)
    clip_b = make_clip(seed=2, size=B_SIZE, frames=12, fps=12.0, motion=MOTION)
    a = train_checkpoint(clip_a, root / "a.pt")
    b = train_checkpoint(clip_b, root / "b.pt")
    return {"root": root, "a": a, "b": b, "clip_a": clip_a, "clip_b": clip_b}


def run(*args) -> tuple[int, str]:
    """`vidrender ARGS` in this process (the console script's entry point): (exit code, stderr)."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            main([str(arg) for arg in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    return code, stderr.getvalue()


def compose(setup, output, *options):
    code, err = run("compose", "--character", setup["a"], "--background", setup["b"], "-o", output, *options)
    assert code == 0, err
    return output


def true_alpha(clip, size, affines):
    """True matte (T, 1, H, W) of `clip`'s character moved by `affines` on a (W, H) frame (via `recompose`)."""
    white = recompose(clip, torch.ones(3, size[1], size[0]), affines)
    black = recompose(clip, torch.zeros(3, size[1], size[0]), affines)
    return 1 - (white - black)[:, :1]


def centroid_and_area(alpha):
    """Per frame: centroid (x, y) in pixel coordinates (pixel centres at i + 0.5) and area of (T, 1, H, W)."""
    height, width = alpha.shape[-2:]
    area = alpha.sum(dim=(1, 2, 3))
    xs = (torch.arange(width, dtype=alpha.dtype) + 0.5).view(1, 1, 1, width)
    ys = (torch.arange(height, dtype=alpha.dtype) + 0.5).view(1, 1, height, 1)
    return torch.stack([(alpha * xs).sum(dim=(1, 2, 3)), (alpha * ys).sum(dim=(1, 2, 3))], -1) / area[:, None], area


def source_indices(count, out_fps, source_fps, length, speed=1.0):
    """Which source frame output frame i shows: the one at time i / out_fps * speed, looping."""
    return [round(i / out_fps * speed * source_fps) % length for i in range(count)]


@pytest.fixture(scope="module")
def source_frames(setup):
    """The default compose (A's character with A's motion on B's background) as a lossless PNG folder, read back."""
    return read_video(compose(setup, setup["root"] / "source"))[0]


def test_source_motion_matches_the_true_rerender_and_broken_composes_do_not(setup, source_frames):
    clip_a, clip_b = setup["clip_a"], setup["clip_b"]
    frames = source_frames
    # B's size and frame rate: 16 frames at 24 fps last 8 frames at 12 fps; frame i shows A's frame 2i
    assert frames.shape == (8, 3, 64, 80)
    affines = clip_a.affines[source_indices(8, 12, 24, 16)]
    truth = recompose(clip_a, clip_b.background, affines)
    score = metrics.psnr(frames, truth)
    assert score > THRESHOLD

    # the same layers, composed wrongly: each must fail the threshold clearly
    character = load_stack(setup["a"]).characters[0]
    plate = load_stack(setup["b"]).background.plate
    moved = character.moved(affines.float(), (64, 80))
    broken = {
        "character under the plate": plate.expand(8, -1, -1, -1),
        "inverted affines": composite(plate, [character.moved(geometry.invert(affines.float()), (64, 80))]),
        "A's pixel size, not B's": composite(plate, [F.pad(character.moved(affines.float()), (0, 16))]),
    }
    assert torch.equal((composite(plate, [moved]) * 255).round(), (frames * 255).round()), \
        "the CLI composes as layers do"
    for name, wrong in broken.items():
        assert metrics.psnr(wrong, truth) < THRESHOLD - 5, f"{name}: {metrics.psnr(wrong, truth):.1f} dB"


def test_clips_of_one_multi_clip_checkpoint_compose_like_two_checkpoints(setup, source_frames):
    """`--character-clip`/`--background-clip` pick entries of one file (a multi-clip model's layout)."""
    payload_a, payload_b = (torch.load(setup[name], weights_only=True) for name in "ab")
    clips = [payload_a["artifact"]["clips"][0], payload_b["artifact"]["clips"][0]]
    both = save_checkpoint(setup["root"] / "both.pt", "motion", payload_a["config"], payload_a["weights"],
                           {**payload_a["artifact"], "clips": clips})
    code, err = run("compose", "--character", both, "--background", both, "--background-clip", 1,
                    "-o", setup["root"] / "both")
    assert code == 0, err
    assert torch.equal(read_video(setup["root"] / "both")[0], source_frames)


def test_background_motion_replaces_b_character(setup):
    clip_a, clip_b = setup["clip_a"], setup["clip_b"]
    frames, _ = read_video(compose(setup, setup["root"] / "background", "--motion", "background"))
    assert frames.shape == (12, 3, 64, 80)  # B's length, size and rate
    truth = recompose(clip_a, clip_b.background, clip_b.affines)
    assert metrics.psnr(frames, truth) > THRESHOLD
    # where B's character was and A's is not, the output shows B's clean plate, not B's character
    revealed = (clip_b.alpha > 0.5) & ((truth - clip_b.background).abs().amax(1, keepdim=True) < 1 / 255)
    revealed = revealed.expand(-1, 3, -1, -1)
    assert revealed.sum() > 300
    assert (frames - clip_b.background)[revealed].abs().mean() < 0.02
    assert (clip_b.clean - clip_b.background)[revealed].abs().mean() > 0.1  # B's character would show there


def test_colour_stored_outside_the_matte_does_not_halo():
    """A layer's RGB where alpha is 0 is its clip's old background: resampling it onto a larger, rotated
    frame must not drag that colour into the character's soft edge."""
    ys, xs = torch.meshgrid(torch.arange(16) + 0.5, torch.arange(16) + 0.5, indexing="ij")
    alpha = (5.5 - ((xs - 8) ** 2 + (ys - 8) ** 2).sqrt()).clamp(0, 1)  # a red disc with a soft edge ...
    character = torch.stack([torch.ones(16, 16), (alpha == 0).float(), torch.zeros(16, 16), alpha])  # ... on green
    turn = geometry.from_params(*torch.tensor([[0.1], [0.0], [0.3], [1.0]]))
    moved = CharacterLayer(character, turn).moved(size=(40, 40))
    assert moved[:, 3].gt(0.5).sum() > 200  # the disc is there, scaled to the frame
    assert over(moved, torch.zeros(3, 40, 40))[:, 1].max() < 1e-3  # and no green at all


@pytest.fixture(scope="module")
def reference_centroid(setup):
    """Where A's character is at its reference pose on B's frame, (x, y) pixels, from the truth."""
    alpha = true_alpha(setup["clip_a"], B_SIZE, geometry.identity(1, dtype=torch.float64))
    return centroid_and_area(alpha)[0][0]


def test_path_json_puts_the_character_where_the_path_says(setup, reference_centroid):
    # in pixels of a 160x128 grid (twice B's size): steps towards the frame centre, then a scale of 0.8
    # about the grid's top-left corner; the file's grid, not B's, gives the numbers their meaning
    towards = torch.sign(torch.tensor([40.0, 32.0]) - reference_centroid)
    pixel = torch.eye(2, 3, dtype=torch.float64).repeat(9, 1, 1)
    for t in range(8):
        pixel[t, 0, 2], pixel[t, 1, 2] = 2 * t * towards[0], 2 * t * towards[1]
    pixel[8, :, :2] *= 0.8
    path = write_trajectory(setup["root"] / "path.json", geometry.pixel_to_normalized(pixel, 160, 128), 160, 128,
                            fps=12.0)
    out = compose(setup, setup["root"] / "path", "--motion", path, "--layers-only")
    layers, _ = read_video(out, alpha=True)
    assert layers.shape == (9, 4, 64, 80)
    centres, areas = centroid_and_area(layers[:, 3:])
    assert torch.allclose(centres[0], reference_centroid, atol=0.5)
    expected = reference_centroid + torch.arange(8)[:, None] * towards  # 2 px of the grid = 1 px of B
    assert torch.allclose(centres[:8], expected, atol=0.3), centres[:8] - expected
    assert torch.allclose(centres[8], 0.8 * centres[0], atol=0.5)
    assert areas[8] / areas[0] == pytest.approx(0.8**2, rel=0.03)


@pytest.fixture(scope="module")
def still_path(setup):
    """A trajectory that holds the character at its reference pose for 12 frames (fps from B)."""
    return write_trajectory(setup["root"] / "still.json", geometry.identity(12), 80, 64, fps=12.0)


def edited_matte(setup, still_path, name, *edit):
    out = compose(setup, setup["root"] / name, "--motion", still_path, "--layers-only", "--frames", 7, *edit)
    layers, _ = read_video(out, alpha=True)
    assert layers.shape == (7, 4, 64, 80)
    return centroid_and_area(layers[:, 3:])


def test_translate_moves_by_frame_fractions_per_second(setup, still_path, reference_centroid):
    towards = torch.sign(torch.tensor([40.0, 32.0]) - reference_centroid)
    rate = (0.125 * float(towards[0]), 0.0625 * float(towards[1]))
    centres, areas = edited_matte(setup, still_path, "translate", "--translate", f"{rate[0]},{rate[1]}")
    seconds = torch.arange(7)[:, None] / 12
    expected = centres[0] + seconds * torch.tensor([rate[0] * 80, rate[1] * 64])
    assert torch.allclose(centres, expected, atol=0.3)
    assert (centres[6] - centres[0]).abs().min() > 1.5  # it did move
    assert torch.allclose(areas, areas[0].expand(7), rtol=0.02)


def test_rotate_turns_about_the_frame_centre_counter_clockwise(setup, still_path):
    centres, areas = edited_matte(setup, still_path, "rotate", "--rotate", 90)
    angle = math.radians(90 * 6 / 12)  # after 6 frames at 12 fps
    offset = centres[0] - torch.tensor([40.0, 32.0])
    # counter-clockwise on screen, y down: (x, y) -> (x cos + y sin, -x sin + y cos), a rigid turn in pixels
    turned = torch.tensor([offset[0] * math.cos(angle) + offset[1] * math.sin(angle),
                           -offset[0] * math.sin(angle) + offset[1] * math.cos(angle)])
    assert offset.norm() > 4  # far enough from the centre for the turn to move it
    assert torch.allclose(centres[6], torch.tensor([40.0, 32.0]) + turned, atol=0.5)
    assert areas[6] / areas[0] == pytest.approx(1, rel=0.03)


def test_scale_shrinks_about_the_frame_centre(setup, still_path):
    centres, areas = edited_matte(setup, still_path, "scale", "--scale", 0.5)
    factor = 0.5 ** (6 / 12)
    centre = torch.tensor([40.0, 32.0])
    assert torch.allclose(centres[6], centre + factor * (centres[0] - centre), atol=0.5)
    assert areas[6] / areas[0] == pytest.approx(factor**2, rel=0.03)


def test_speed_and_frames_resample_and_loop_the_motion(setup, source_frames):
    normal = source_frames
    fast, _ = read_video(compose(setup, setup["root"] / "fast", "--speed", 2))
    assert fast.shape[0] == 4 and torch.equal(fast, normal[::2])  # frame i shows A's frame 4i
    looped, _ = read_video(compose(setup, setup["root"] / "loop", "--frames", 20))
    # A's 16 frames last 8 output frames at B's 12 fps; then the motion starts again
    assert looped.shape[0] == 20 and torch.equal(looped[:8], normal) and torch.equal(looped[8:16], normal)
    assert (normal[4] - normal[0]).abs().max() > 0.5  # the character does move within a loop


def test_formats_round_trip_with_alpha(setup):
    root = setup["root"]
    folder = compose(setup, root / "layers", "--layers-only")
    expected, _ = read_video(folder, alpha=True)
    assert expected.shape == (8, 4, 64, 80)
    true = true_alpha(setup["clip_a"], B_SIZE, setup["clip_a"].affines[source_indices(8, 12, 24, 16)])
    assert metrics.matte_iou(expected[:, 3:], true) > 0.8  # the tiny model's matte; an empty one scores 0
    inside = (expected[:, 3:] > 0.5).expand(-1, 3, -1, -1)
    for suffix, colour_tolerance in ((".webm", 0.05), (".mov", 2 / 255)):  # VP9 4:2:0 colour; ProRes 4444
        out = compose(setup, root / f"layers{suffix}", "--layers-only")
        assert probe(out).has_alpha
        frames, info = read_video(out, alpha=True)
        assert frames.shape == expected.shape and info.fps == 12
        assert (frames[:, 3:] - expected[:, 3:]).abs().max() <= 1 / 255 + 1e-6, suffix
        difference = (frames[:, :3] - expected[:, :3])[inside].abs()
        assert (difference.mean() if suffix == ".webm" else difference.max()) <= colour_tolerance + 1e-6, suffix


def test_mp4_and_preview(setup, source_frames):
    root = setup["root"]
    out = compose(setup, root / "out.mp4", "--preview")
    info = probe(out)
    assert (info.width, info.height, info.fps, info.has_alpha) == (80, 64, 12, False)
    frames, _ = read_video(out)
    # H.264 4:2:0 alone costs these finely coloured textures ~26 dB; the CLI adds nothing to it
    write_video(root / "reference.mp4", source_frames, 12)
    reference, _ = read_video(root / "reference.mp4")
    assert frames.shape == source_frames.shape and metrics.psnr(frames, reference) > 40
    assert metrics.psnr(frames, source_frames) > 24
    with Image.open(root / "out.gif") as gif:
        assert gif.n_frames == 8 and gif.size == (80, 64)
    # 8 frames in rows of 4 with 2 px gaps
    assert read_image(root / "out.sheet.png").shape == (2 * 64 + 2, 4 * 80 + 3 * 2, 3)


def test_size_and_fps_options(setup):
    out = compose(setup, setup["root"] / "big", "--size", "120x96", "--fps", 6)
    frames, _ = read_video(out)
    assert frames.shape == (4, 3, 96, 120)  # 16 frames at 24 fps last 4 frames at 6 fps
    plate = F.interpolate(setup["clip_b"].background[None], size=(96, 120), mode="bilinear", align_corners=False,
                          antialias=True)[0]
    truth = recompose(setup["clip_a"], plate, setup["clip_a"].affines[source_indices(4, 6, 24, 16)])
    assert metrics.psnr(frames, truth) > THRESHOLD
    info = probe(compose(setup, setup["root"] / "slow.mp4", "--fps", 6))
    assert (info.width, info.height, info.fps, info.frame_count) == (80, 64, 6, 4)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--character", "{missing}"], "no such checkpoint"),
        (["--background", "{scene}"], "'scene3d' checkpoint"),
        (["--motion", "{bad_json}"], "not valid JSON"),
        (["--motion", "{no_frames}"], '"frames"'),
        (["--motion", "{nan_path}"], "NaN"),
        (["--motion", "{missing_path}"], "is not 'source', 'background' or an existing"),
        (["--character-clip", "3"], "no clip 3"),
        (["--size", "nanx64"], "--size"),
        (["--fps", "0"], "--fps"),
        (["--rotate", "nan"], "finite"),
        (["--scale", "0"], "--scale"),
        (["--frames", "0"], "--frames"),
        (["--translate", "1"], "--translate"),
    ],
)
def test_bad_inputs_are_one_line_errors_and_leave_nothing(setup, tmp_path, options, message):
    scene = save_checkpoint(tmp_path / "scene.pt", "scene3d", {}, {}, {})
    (tmp_path / "bad.json").write_text('{"frames": [[[1, 0, 0], [0, 1, 0]],')
    (tmp_path / "no_frames.json").write_text('{"affines": []}')
    (tmp_path / "nan.json").write_text('{"frames": [[[1, 0, NaN], [0, 1, 0]]]}')
    names = {"missing": tmp_path / "missing.pt", "scene": scene, "bad_json": tmp_path / "bad.json",
             "no_frames": tmp_path / "no_frames.json", "nan_path": tmp_path / "nan.json",
             "missing_path": tmp_path / "missing.json"}
    before = set(tmp_path.iterdir())
    args = {"--character": setup["a"], "--background": setup["b"], "-o": tmp_path / "out.mp4"}
    extra = []
    for name, value in zip(options[::2], options[1::2], strict=True):
        value = value.format(**names)
        if name in args:
            args[name] = value
        else:
            extra += [name, value]
    code, err = run("compose", *[item for pair in args.items() for item in pair], *extra)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert set(tmp_path.iterdir()) == before  # no output, no temporary file


def test_bad_input_through_the_installed_command(setup, tmp_path):
    output = tmp_path / "out.webm"
    result = subprocess.run([sys.executable, "-m", "vidrender", "compose", "--character", str(tmp_path / "none.pt"),
                             "--background", str(setup["b"]), "-o", str(output)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "none.pt: no such checkpoint file" in result.stderr and not output.exists()
