"""`vidrender scene ...`: the commands of pipeline `scene3d` (data sets, training, rendering, evaluation, latents)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

scene_app = typer.Typer(
    help="3-D scenes equivariant to rotation (Dupont et al. 2020) and to time: data, train, render, eval.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@scene_app.command()
def dataset(
    root: Annotated[Path, typer.Argument(help="Data set name: writes ROOT-train/, ROOT-val/, ROOT-test/.")],
    object: Annotated[str, typer.Option("--object", help="bend (temporal), chair or mug (rigid).")] = "bend",
    views: Annotated[int, typer.Option(help="Views per timestep (bend) or per scene (rigid).")] = 200,
    timesteps: Annotated[int, typer.Option(help="Timesteps of the bend.")] = 20,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 128,
    scenes: Annotated[int | None, typer.Option(help="Rigid objects in total (default 30).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", "--force", help="Replace existing split folders (ones holding only scenes).")
    ] = False,
) -> None:
    """Render a data set of a procedural object, in the reference format (no Blender needed)."""
    from vidrender.io.outputs import Output, claim_outputs
    from vidrender.pipelines.scene3d.dataset_writer import SCENE_NAME, split_folders, write_dataset

    outputs = [Output(folder, folder=True, own_names=SCENE_NAME) for folder in split_folders(root).values()]
    with claim_outputs(outputs, overwrite=overwrite):
        folders = write_dataset(root, object=object, views=views, timesteps=timesteps, size=size, scenes=scenes,
                                seed=seed, overwrite=overwrite)
    for split, folder in folders.items():
        print(f"{split}: {folder}")


def latent(
    checkpoint: Annotated[Path, typer.Argument(help="A scene3d checkpoint (.pt).")],
    image: Annotated[Path, typer.Option(help="The one source image.")],
    output: Annotated[Path, typer.Option("-o", "--output", help=".png (depth slices at --dt), .gif/.mp4 (over time)")],
    dt: Annotated[float, typer.Option(help="Time offset of a .png, in steps (fractions interpolate).")] = 0.0,
    tile: Annotated[int, typer.Option(help="Pixels per depth slice, about (whole-pixel upscaling).")] = 64,
    columns: Annotated[int, typer.Option(help="Depth slices per row.")] = 8,
    fps: Annotated[float, typer.Option(help="Frame rate of the animation over time slices.")] = 4.0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
) -> None:
    """Show the scene tensor inferred from one image as colour: one tile per depth slice, frames over time."""
    import torch

    from vidrender.io.outputs import Output, claim_outputs
    from vidrender.pipelines.scene3d.commands import load_model, load_source
    from vidrender.pipelines.scene3d.latent import write_latent

    with claim_outputs([Output(output)], [checkpoint, image], overwrite):
        model, _ = load_model(checkpoint)
        with torch.inference_mode():
            write_latent(model, load_source(image, model), output, dt=dt, tile=tile, columns=columns, fps=fps)
    print(output)


def _add_model_commands() -> None:
    from vidrender.pipelines.scene3d import commands

    scene_app.command("train")(commands.train)
    scene_app.command("render")(commands.render)
    scene_app.command("eval")(commands.evaluate)
    scene_app.command("latent")(latent)


_add_model_commands()


def register(app: typer.Typer) -> None:
    """Add `vidrender scene ...` to the top-level app, and the `scene3d` section to `vidrender bench`."""
    from vidrender.bench.registry import add_section_module

    app.add_typer(scene_app, name="scene")
    add_section_module("vidrender.pipelines.scene3d.bench")
