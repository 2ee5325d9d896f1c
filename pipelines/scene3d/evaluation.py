"""`vidrender scene eval`: novel views rendered from ONE source view, scored against the true images.

For every scene of a split, `pairs` (source, target) view pairs are drawn with a fixed seed (for
temporal data, targets at any time of the split: the model renders the time offset). Scores: PSNR and
SSIM of the model's render, and of baselines that need no model: copying the source view, the mean
image of the training split (what a model that ignores its input converges to), and the mean image of
the evaluated split itself (a stronger, peeking version of it). The render is only worth something if it
beats them all.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vidrender import metrics
from vidrender.errors import UserError
from vidrender.pipelines.scene3d import infer
from vidrender.pipelines.scene3d.data import load_views
from vidrender.pipelines.scene3d.model import SceneRenderer


def evaluate_novel_views(
    model: SceneRenderer, split_dir: Path, pairs: int = 50, seed: int = 0, train_dir: Path | None = None
) -> dict:
    """Mean PSNR/SSIM of model renders and the baselines over `pairs` random pairs per scene of a split.

    Returns {"split", "pairs", "model", "copy_source", "mean_image", and "mean_train_image" when
    `train_dir` is given}, each score a dict {"psnr": dB, "ssim": ...}.
    """
    scenes = load_views(split_dir, size=model.config.image_size)
    generator = torch.Generator().manual_seed(seed)
    first, last = infer.time_range(model)
    renders, copies, targets = [], [], []
    for scene in scenes:
        images = scene.images.float() / 255
        count = images.shape[0]
        for _ in range(pairs):
            source, target = torch.randperm(count, generator=generator)[:2].tolist()
            dt = float(scene.time[target] - scene.time[source])
            if not first <= dt <= last:
                continue
            with torch.inference_mode():
                scenes_of_source = infer.infer_scenes(model, images[source])
                view = infer.render_views(
                    model, scenes_of_source, [float(scene.azimuth[target])], [float(scene.elevation[target])], [dt],
                    float(scene.azimuth[source]), float(scene.elevation[source]),
                )[0]
            renders.append(view)
            copies.append(images[source])
            targets.append(images[target])
    if not targets:
        raise UserError(f"{split_dir}: no view pairs within the model's time range {first}..{last}")
    truth = torch.stack(targets)
    mean_image = torch.cat([s.images.float() / 255 for s in scenes]).mean(0, keepdim=True).expand_as(truth)
    result = {"split": str(split_dir), "pairs": len(targets)}
    guesses = {"model": torch.stack(renders), "copy_source": torch.stack(copies), "mean_image": mean_image}
    if train_dir is not None:
        train_images = torch.cat([s.images.float() / 255 for s in load_views(train_dir, size=model.config.image_size)])
        guesses["mean_train_image"] = train_images.mean(0, keepdim=True).expand_as(truth)
    for name, guess in guesses.items():
        result[name] = {"psnr": metrics.psnr(guess, truth), "ssim": metrics.ssim(guess, truth)}
    return result
