"""`vidrender scene ...`: the commands of pipeline `scene3d` (data sets, training, rendering, evaluation)."""

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
    force: Annotated[bool, typer.Option("--force", help="Replace existing split folders.")] = False,
) -> None:
    """Render a data set of a procedural object, in the reference format (no Blender needed)."""
    from pipelines.scene3d.dataset_writer import write_dataset

    folders = write_dataset(
        root, object=object, views=views, timesteps=timesteps, size=size, scenes=scenes, seed=seed, overwrite=force
    )
    for split, folder in folders.items():
        print(f"{split}: {folder}")


def _add_model_commands() -> None:
    from pipelines.scene3d import commands

    scene_app.command("train")(commands.train)
    scene_app.command("render")(commands.render)
    scene_app.command("eval")(commands.evaluate)


_add_model_commands()


def register(app: typer.Typer) -> None:
    """Add `vidrender scene ...` to the top-level app."""
    app.add_typer(scene_app, name="scene")
