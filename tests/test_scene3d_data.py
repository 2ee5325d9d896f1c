"""scene3d data: the SDF renderer's camera convention, the procedural objects, the data set writer and reader."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from vidrender.errors import UserError
from vidrender.pipelines.scene3d import dataset_writer
from vidrender.pipelines.scene3d.data import SceneDataset, load_image, load_views, resolve_split, scan_split
from vidrender.pipelines.scene3d.dataset_writer import temporal_split, write_dataset
from vidrender.pipelines.scene3d.objects import SdfObject, make_object, world_to_model
from vidrender.pipelines.scene3d.raymarch import (
    BACKGROUND,
    CAMERA_RADIUS,
    FIELD_OF_VIEW_DEG,
    camera_position,
    camera_rotation,
    render_view,
    render_views,
)


def foreground(image: torch.Tensor) -> torch.Tensor:
    """(H, W) mask of pixels that are not the background colour."""
    return (image - torch.tensor(BACKGROUND)[:, None, None]).abs().amax(dim=0) > 0.02


def red_pixels(image: torch.Tensor) -> int:
    r, g, b = image
    return int(((r > 0.25) & (g < 0.6 * r) & (b < 0.6 * r) & (r > 2 * g)).sum())


class Ball(SdfObject):
    """A small sphere at a world point: its image position shows where the camera puts that point."""

    bounding_radius = 9.0

    def __init__(self, centre_world, radius=0.6):
        self.centre = world_to_model(torch.tensor([centre_world], dtype=torch.float32))[0]
        self.radius = radius

    def model_sdf(self, points, t):
        return (points - self.centre).norm(dim=1) - self.radius

    def model_albedo(self, points, t):
        return torch.full((points.shape[0], 3), 0.5)


def project(camera_coords: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel (row, column) of a point given in a camera's frame (to camera, down, right), pinhole model."""
    depth = CAMERA_RADIUS - camera_coords[0]
    tan_half = math.tan(math.radians(FIELD_OF_VIEW_DEG) / 2)
    return (camera_coords[1:] / depth / tan_half + 1) / 2 * size


def centroid(mask: torch.Tensor) -> torch.Tensor:
    rows, columns = torch.nonzero(mask, as_tuple=True)
    return torch.stack([rows.float().mean(), columns.float().mean()]) + 0.5


# ---------------------------------------------------------------------------------------------------
# camera convention


def test_camera_rotation_is_reference_formula_and_places_camera_as_documented():
    assert torch.allclose(camera_rotation(0.0, 0.0), torch.eye(3))
    assert torch.allclose(camera_position(0.0, 0.0), torch.tensor([25.0, 0, 0]), atol=1e-5)
    assert torch.allclose(camera_position(90.0, 0.0), torch.tensor([0, 0, 25.0]), atol=1e-5)  # to +z
    assert torch.allclose(camera_position(0.0, 90.0), torch.tensor([0, -25.0, 0]), atol=1e-5)  # above: -y
    az, el = torch.tensor([10.0, 123.0, 300.0]), torch.tensor([-80.0, 5.0, 45.0])
    rotations = camera_rotation(az, el)
    assert rotations.shape == (3, 3, 3)
    assert torch.allclose(rotations @ rotations.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(rotations), torch.ones(3), atol=1e-6)
    a, e = torch.deg2rad(az), torch.deg2rad(el)
    expected = 25 * torch.stack([torch.cos(e) * torch.cos(a), -torch.sin(e), torch.cos(e) * torch.sin(a)], 1)
    assert torch.allclose(camera_position(az, el), expected, atol=1e-4)


def test_camera_rotation_matches_model_geometry():
    geometry3d = pytest.importorskip("vidrender.geometry3d")
    az, el = torch.tensor([0.0, 37.0, 250.0]), torch.tensor([0.0, -61.0, 12.0])
    assert torch.allclose(camera_rotation(az, el), geometry3d.camera_rotation(az, el).float(), atol=1e-6)


VIEWS = [(0.0, 0.0), (90.0, 0.0), (30.0, 40.0), (200.0, -50.0), (315.0, 75.0)]


@pytest.mark.parametrize("point", [(2.0, -3.0, 4.0), (-3.0, 2.5, -2.0)])
def test_world_points_appear_where_the_camera_convention_puts_them(point):
    size = 48
    ball = Ball(point)
    images = render_views(ball, [v[0] for v in VIEWS], [v[1] for v in VIEWS], size, antialias=1)
    for (az, el), image in zip(VIEWS, images, strict=True):
        camera_coords = camera_rotation(az, el).T @ torch.tensor(point)
        assert torch.allclose(centroid(foreground(image)), project(camera_coords, size), atol=0.6), (az, el)


def test_rotating_the_scene_by_the_relative_rotation_moves_points_to_the_target_view():
    # what the model does to its latent: q_target = R_obj(target) R_obj(source)^T q_source
    size, point = 48, torch.tensor([3.0, -2.0, 1.5])
    (az_s, el_s), (az_t, el_t) = (20.0, 10.0), (140.0, -35.0)
    object_source, object_target = camera_rotation(az_s, el_s).T, camera_rotation(az_t, el_t).T
    relative = object_target @ object_source.T
    in_target = relative @ (object_source @ point)
    image = render_view(Ball(point.tolist()), az_t, el_t, size, antialias=1)
    assert torch.allclose(centroid(foreground(image)), project(in_target, size), atol=0.6)


# ---------------------------------------------------------------------------------------------------
# renderer and objects


@pytest.mark.parametrize("name", ["bend", "chair", "mug"])
def test_render_shape_range_and_framing(name):
    obj = make_object(name, seed=3, timesteps=8)
    images = render_views(obj, [0.0, 130.0, 250.0], [10.0, -40.0, 70.0], 32, t=2)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    for image in images:
        mask = foreground(image)
        border = torch.cat([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
        assert not border.any(), "object leaves the frame"
        assert mask.float().mean() > 0.05, "object too small"


def test_az_0_and_180_differ_and_full_turn_is_identical():
    chair = make_object("chair", seed=1)
    front, back, full_turn = render_views(chair, [0.0, 180.0, 360.0], [10.0, 10.0, 10.0], 32)
    assert (front - back).abs().mean() > 0.02
    assert torch.allclose(front, full_turn, atol=1e-3)


def test_red_underside_visible_from_below_not_from_above():
    bar = make_object("bend", timesteps=20)
    below, above = render_views(bar, [30.0, 30.0], [-60.0, 60.0], 32, t=0)
    assert red_pixels(below) > 30
    assert red_pixels(above) == 0


def test_bend_deforms_with_time_and_is_deterministic():
    bar = make_object("bend", timesteps=20)
    straight, bent, bent_again = (render_view(bar, 20.0, 15.0, 32, t=t) for t in (0, 5, 5))
    assert (straight - bent).abs().mean() > 0.02
    assert torch.equal(bent, bent_again)
    other_bar = make_object("bend", seed=7, timesteps=20)
    assert torch.equal(render_view(other_bar, 20.0, 15.0, 32, t=5), bent)


def test_bend_is_periodic_and_bends_up_then_down():
    bar = make_object("bend", timesteps=20)
    assert bar.bend_angle(0) == pytest.approx(0.0)
    assert bar.bend_angle(5) > 0 > bar.bend_angle(15)
    assert bar.bend_angle(3) == pytest.approx(bar.bend_angle(23))
    # a point on the arc's neutral axis a quarter length from the middle rises when the ends bend up
    quarter = torch.tensor([[0.0, 0.0, bar.length / 4]])  # world z = model X, along the bar
    lifted = torch.tensor([[0.0, -1.0, bar.length / 4]])  # one unit up (world -y)
    assert bar.sdf(lifted, 5) < bar.sdf(lifted, 0)
    assert bar.sdf(quarter, 5) > bar.sdf(quarter, 0)


def test_rigid_objects_vary_with_seed_and_ignore_time():
    for name in ("chair", "mug"):
        first, again, other = make_object(name, seed=4), make_object(name, seed=4), make_object(name, seed=5)
        image = render_view(first, 40.0, 20.0, 32)
        assert torch.equal(image, render_view(again, 40.0, 20.0, 32, t=7))
        assert (image - render_view(other, 40.0, 20.0, 32)).abs().mean() > 0.01


def test_unknown_object_is_a_user_error():
    with pytest.raises(UserError, match="unknown object"):
        make_object("teapot")


# ---------------------------------------------------------------------------------------------------
# writer


def test_temporal_split_reproduces_the_write_up_and_partitions_other_lengths():
    assert temporal_split(20) == {
        "train": [0, 1, 2, 3, 4, 6, 7, 8, 11, 12, 13, 14, 15, 17, 18, 19],
        "val": [5, 10],
        "test": [9, 16],
    }
    for steps in (3, 4, 7, 8, 11, 30):
        split = temporal_split(steps)
        assert sorted(split["train"] + split["val"] + split["test"]) == list(range(steps))
        assert all(split[name] for name in ("train", "val", "test"))
    with pytest.raises(UserError, match="timesteps"):
        temporal_split(2)


@pytest.fixture(scope="module")
def bend_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "bend"
    folders = write_dataset(root, "bend", views=8, timesteps=4, size=32, progress=False)
    return root, folders


def test_writer_writes_the_reference_format(bend_data):
    root, folders = bend_data
    split = temporal_split(4)
    assert folders == {name: root.with_name(f"bend-{name}") for name in ("train", "val", "test")}
    for name, folder in folders.items():
        assert [child.name for child in folder.iterdir()] == ["bend"]
        scene = folder / "bend"
        params = json.loads((scene / "render_params.json").read_text())
        pngs = sorted(path.stem for path in scene.glob("*.png"))
        assert pngs == sorted(params) == [f"{i:05d}" for i in range(8 * len(split[name]))]
        for entry in params.values():
            assert set(entry) == {"azimuth", "elevation", "temporal"}
            assert 0 <= entry["azimuth"] < 360 and -90 <= entry["elevation"] <= 90
        times = [entry["temporal"] for entry in params.values()]
        assert sorted(set(times)) == split[name] and all(times.count(t) == 8 for t in split[name])
        with Image.open(scene / "00000.png") as image:
            assert image.size == (32, 32) and image.mode == "RGB"
    assert not list(root.parent.glob(".*tmp*")), "temporary folders left behind"


def test_writer_is_reproducible_and_views_match_their_angles(bend_data, tmp_path):
    root, folders = bend_data
    again = write_dataset(tmp_path / "bend", "bend", views=8, timesteps=4, size=32, progress=False)
    first = json.loads((folders["val"] / "bend" / "render_params.json").read_text())
    assert json.loads((again["val"] / "bend" / "render_params.json").read_text()) == first
    entry = first["00003"]
    rendered = render_view(
        make_object("bend", timesteps=4), entry["azimuth"], entry["elevation"], 32, t=entry["temporal"]
    )
    stored = torch.from_numpy(np.array(Image.open(folders["val"] / "bend" / "00003.png"))).permute(2, 0, 1) / 255
    assert (rendered - stored).abs().max() < 1 / 255 + 1e-6


def test_writer_rigid_objects_split_by_scene(tmp_path):
    folders = write_dataset(tmp_path / "mugs", "mug", views=3, size=16, scenes=3, progress=False)
    names = {split: sorted(child.name for child in folder.iterdir()) for split, folder in folders.items()}
    assert names == {"train": ["mug_00000"], "val": ["mug_00001"], "test": ["mug_00002"]}
    params = json.loads((folders["test"] / "mug_00002" / "render_params.json").read_text())
    assert len(params) == 3 and all(set(entry) == {"azimuth", "elevation"} for entry in params.values())


def test_writer_user_errors(bend_data, tmp_path):
    root, _ = bend_data
    with pytest.raises(UserError, match="already exist"):
        write_dataset(root, "bend", views=2, timesteps=3, size=8, progress=False)
    with pytest.raises(UserError, match="unknown object"):
        write_dataset(tmp_path / "x", "teapot", progress=False)
    with pytest.raises(UserError, match="--scenes"):
        write_dataset(tmp_path / "x", "bend", views=2, timesteps=3, size=8, scenes=4, progress=False)
    with pytest.raises(UserError, match="--scenes"):
        write_dataset(tmp_path / "x", "chair", views=2, size=8, scenes=2, progress=False)
    with pytest.raises(UserError, match="--views"):
        write_dataset(tmp_path / "x", "chair", views=1, size=8, progress=False)
    assert not list(tmp_path.iterdir())


def test_writer_leaves_nothing_when_rendering_fails(tmp_path, monkeypatch):
    calls = []

    def failing_render(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("renderer crashed")
        return torch.zeros(len(args[1]), 3, 8, 8)

    monkeypatch.setattr(dataset_writer, "render_views", failing_render)
    with pytest.raises(RuntimeError):
        write_dataset(tmp_path / "bend", "bend", views=2, timesteps=3, size=8, progress=False)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------
# reader


def test_reader_reads_back_angles_times_and_pixels(bend_data):
    _, folders = bend_data
    dataset = SceneDataset(folders["train"], temporal=True, max_gap=3)
    params = json.loads((folders["train"] / "bend" / "render_params.json").read_text())
    assert len(dataset) == len(params) == 16 and dataset.image_size == (32, 32)
    assert dataset.images is not None and dataset.images.dtype == torch.uint8
    keys = sorted(params)
    assert torch.allclose(dataset.azimuth, torch.tensor([params[k]["azimuth"] for k in keys]))
    assert torch.allclose(dataset.elevation, torch.tensor([params[k]["elevation"] for k in keys]))
    assert dataset.time.tolist() == [params[k]["temporal"] for k in keys]
    item = dataset[5]
    assert item["image_a"].shape == (3, 32, 32) and item["image_a"].dtype == torch.float32
    stored = torch.from_numpy(np.array(Image.open(folders["train"] / "bend" / "00005.png"))).permute(2, 0, 1)
    assert torch.equal(item["image_a"], stored.float() / 255)
    assert item["azimuth_a"] == pytest.approx(params["00005"]["azimuth"], abs=1e-4)
    assert item["time_a"] == params["00005"]["temporal"]
    # item 5's view a is bend/00005.png, of scene 0, and its partner is another of that scene's images
    view = int(dataset.anchors[5])
    assert dataset.paths[view] == folders["train"] / "bend" / "00005.png" and dataset.scene_index[view] == 0
    others = [path for path in dataset.scenes[0].paths if path.name != "00005.png"]
    assert any(torch.equal(item["image_b"], load_image(path).float() / 255) for path in others)


def test_pairs_respect_time_gap_and_never_repeat_a_view(bend_data):
    _, folders = bend_data  # train times of T=4: {0, 3}
    torch.manual_seed(0)
    same_time = SceneDataset(folders["train"], temporal=False)
    any_time = SceneDataset(folders["train"], temporal=True)
    seen_gaps = set()
    for index in range(len(same_time)):
        for _ in range(4):
            item = same_time[index]
            assert item["time_a"] == item["time_b"]
            assert not torch.equal(item["image_a"], item["image_b"])
            seen_gaps.add(int(any_time[index]["time_b"] - any_time[index]["time_a"]))
    assert {-3, 0, 3} <= seen_gaps and any_time.largest_gap == 3
    narrow = SceneDataset(folders["train"], temporal=True, max_gap=2)
    assert all(narrow[i]["time_a"] == narrow[i]["time_b"] for i in range(len(narrow)))


def test_fixed_pairs_repeat_and_resize(bend_data):
    _, folders = bend_data
    dataset = SceneDataset(folders["val"], size=16, temporal=True, fixed_pairs=True, seed=3)
    first = [dataset[i]["azimuth_b"] for i in range(len(dataset))]
    assert [dataset[i]["azimuth_b"] for i in range(len(dataset))] == first
    assert dataset[0]["image_a"].shape == (3, 16, 16)
    lazy = SceneDataset(folders["val"], size=16, temporal=True, fixed_pairs=True, seed=3, preload_bytes=0)
    assert lazy.images is None and torch.equal(lazy[2]["image_b"], dataset[2]["image_b"])


def test_load_views_lists_scenes_with_images(bend_data):
    _, folders = bend_data
    (scene,) = load_views(folders["test"])
    assert scene.name == "bend" and scene.images.shape == (8, 3, 32, 32) and scene.images.dtype == torch.uint8
    assert scene.time.tolist() == [temporal_split(4)["test"][0]] * 8


def make_scene(folder, views, image_size=8, mode="RGB", name_format="{:05d}.png"):
    folder.mkdir(parents=True)
    params = {}
    for index in range(views):
        Image.new(mode, (image_size, image_size), (index * 40, 0, 0, 255)[: len(mode)]).save(
            folder / name_format.format(index)
        )
        params[f"{index:05d}"] = {"azimuth": 10.0 * index, "elevation": -5.0 * index}
    (folder / "render_params.json").write_text(json.dumps(params))
    return params


def test_reader_accepts_reference_layouts(tmp_path):
    # splits as subfolders, unequal view counts, RGBA images, prefixed names keyed by their last 5 characters
    make_scene(tmp_path / "chairs" / "train" / "a", 3, mode="RGBA")
    make_scene(tmp_path / "chairs" / "train" / "b", 2, name_format="render_{:05d}.png")
    make_scene(tmp_path / "chairs" / "val" / "c", 2)
    train = resolve_split(tmp_path / "chairs", "train")
    assert train == tmp_path / "chairs" / "train"
    assert resolve_split(train, "val") == tmp_path / "chairs" / "val"
    dataset = SceneDataset(train)
    assert len(dataset) == 5 and [scene.name for scene in dataset.scenes] == ["a", "b"]
    assert dataset[1]["image_a"].shape == (3, 8, 8) and dataset.time.eq(0).all()
    # every view's scene index names the folder its image is in; item 3's view a is b's first view
    assert [dataset.scenes[i].name for i in dataset.scene_index.tolist()] == [p.parent.name for p in dataset.paths]
    view = int(dataset.anchors[3])
    assert dataset.scene_index[view] == 1 and dataset.paths[view].name == "render_00000.png"
    assert dataset[3]["azimuth_a"] == pytest.approx(0.0)
    with pytest.raises(UserError, match="no test split"):
        resolve_split(tmp_path / "chairs", "test")


def test_reader_sibling_split_folders(bend_data):
    root, folders = bend_data
    assert resolve_split(root, "val") == folders["val"]
    assert resolve_split(folders["train"], "test") == folders["test"]


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("empty", "not a scene data set"),
        ("splits_parent", "are splits"),
        ("missing_image", "without an image"),
        ("unlisted_image", "not listed"),
        ("bad_json", "not valid JSON"),
        ("no_azimuth", "has no 'azimuth'"),
        ("text_azimuth", "must be a number"),
        ("one_view", "at least 2 views"),
        ("no_json", "no render_params.json"),
        ("fractional_time", "whole time step"),
    ],
)
def test_reader_user_errors(tmp_path, breakage, message):
    root = tmp_path / "data"
    root.mkdir()
    scene = root / "train" / "scene" if breakage == "splits_parent" else root / "scene"
    if breakage != "empty":
        params = make_scene(scene, 1 if breakage == "one_view" else 3)
    params_path = scene / "render_params.json"
    if breakage == "missing_image":
        (scene / "00001.png").unlink()
    elif breakage == "unlisted_image":
        Image.new("RGB", (8, 8)).save(scene / "00099.png")
    elif breakage == "bad_json":
        params_path.write_text("{not json")
    elif breakage == "no_azimuth":
        del params["00002"]["azimuth"]
        params_path.write_text(json.dumps(params))
    elif breakage == "text_azimuth":
        params["00002"]["azimuth"] = "north"
        params_path.write_text(json.dumps(params))
    elif breakage == "no_json":
        params_path.unlink()
    elif breakage == "fractional_time":
        params["00000"]["temporal"] = 1.5
        params_path.write_text(json.dumps(params))
    with pytest.raises(UserError, match=message):
        SceneDataset(root)


def test_reader_rejects_scenes_without_pairs_and_missing_folders(tmp_path):
    scene = tmp_path / "data" / "scene"
    params = make_scene(scene, 2)
    params["00001"]["temporal"] = 5
    (scene / "render_params.json").write_text(json.dumps(params))
    with pytest.raises(UserError, match="no two views at the same time step"):
        SceneDataset(tmp_path / "data", temporal=False)
    assert len(SceneDataset(tmp_path / "data", temporal=True)) == 2
    with pytest.raises(UserError, match="does not exist"):
        scan_split(tmp_path / "nowhere")
