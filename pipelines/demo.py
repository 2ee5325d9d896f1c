"""`vidrender demo`: the whole motion job on built-in synthetic clips, in minutes on a laptop CPU.

1. write two synthetic clips with ground truth (`vidrender samples`);
2. fit a model on each (`motion.fit`; OpenCV-tracked affines, so no labels are used; CPU-sized settings);
3. compose the character of clip A onto the background of clip B (`motion.compose`);
4. write DIR/out.mp4, DIR/out.gif and DIR/sheet.png (rows: clip A, clip B, the composed result).

The folder is built under a temporary name and appears complete, or not at all; an existing one is
replaced only with `--overwrite`, and only if it holds nothing but what the demo writes.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated

import typer

# Training is cut to CPU size; the layer fit after it keeps `vidrender train`'s defaults: with 40 fit steps
# and 1 round (earlier demo settings) the character kept a dark, blurred rim, 31.5 dB against the true
# re-render (PNG, 40 frames) vs 38.1 dB with the defaults, for 30 s more.
DEMO_SETTINGS = ["train.steps=150", "train.batch_size=8", "data.size=64", "train.preview_every=0",
                 "train.save_every=0"]
# everything the demo writes in its folder
DEMO_NAMES = re.compile(r"clip_[ab]|[ab]\.pt|[ab]\.run|out\.mp4|out\.gif|sheet\.png")


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the demo's outputs.")] = Path(
            "vidrender-demo"
        ),
        frames: Annotated[int, typer.Option(help="Frames per sample clip.")] = 40,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the folder of an earlier demo.")] = False,
    ) -> None:
        """Make two sample clips, train on each, and compose A's character onto B's background."""
        import torch
        from rich.console import Console

        from vidrender.config import load_config
        from vidrender.io.atomic import atomic_path
        from vidrender.io.images import contact_sheet, write_image
        from vidrender.io.outputs import Output, claim_outputs
        from vidrender.io.video import read_video
        from vidrender.io.video_write import write_video
        from vidrender.pipelines import motion
        from vidrender.synth import make_clip, write_truth

        console = Console(stderr=True)
        started = time.perf_counter()
        with (claim_outputs([Output(output, folder=True, own_names=DEMO_NAMES)], overwrite=overwrite),
              atomic_path(output, is_dir=True) as folder):
            config = load_config(motion.MotionConfig, None, ["variant=known", *DEMO_SETTINGS])
            clips = {}
            for name, seed in (("a", 0), ("b", 2)):
                console.rule(f"[bold]clip {name}: synthesise and train")
                clips[name] = write_truth(make_clip(seed=seed, size=128, frames=frames), folder / f"clip_{name}")
                loaded = motion.load_clips([clips[name]], needs_affines=True, affines=["track"])
                decomposition = motion.fit(loaded, config, folder / f"{name}.run")
                decomposition.save(folder / f"{name}.pt")
            console.rule("[bold]compose A's character onto B's background")
            result = motion.compose(motion.load_stack(folder / "a.pt"), motion.load_stack(folder / "b.pt"))
            write_video(folder / "out.mp4", result.frames, result.fps)
            write_video(folder / "out.gif", result.frames, result.fps)
            picks = slice(0, frames, max(1, frames // 6))
            rows = [read_video(clips["a"] / "clip.mp4")[0][picks], read_video(clips["b"] / "clip.mp4")[0][picks],
                    read_video(folder / "out.mp4")[0][picks]]
            write_image(folder / "sheet.png", contact_sheet(list(torch.cat(rows)), cols=len(rows[0])))
        console.print(f"done in {time.perf_counter() - started:.0f} s: {output / 'out.mp4'}, {output / 'out.gif'}, "
                      f"{output / 'sheet.png'}")
