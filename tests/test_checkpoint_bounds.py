"""Checkpoints that torch's safe loader opens but whose contents would exhaust the machine are refused.

A tensor is a view of its storage (sizes, strides, offset), so a file of a few hundred bytes can declare a
3 x 200000 x 200000 plate or 10**8 affines with zero strides, list one layer many times over, or ask the
loader itself for memory (`bytearray(n)`, a compressed entry). Through the real command line such a file
is one line of error, exit code 2, in seconds, with nothing written; a property test substitutes random
views (shapes, strides, offsets, dtypes) into a valid checkpoint and asks for a stack or a `UserError`.

The command-line runs are child processes under an address-space limit, so a regression fails with an
allocation error instead of taking the test machine's memory.
"""

import math
import os
import resource
import subprocess
import sys
import time
import zipfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidrender.errors import UserError
from vidrender.io.checkpoint import load_checkpoint, save_checkpoint
from vidrender.pipelines.motion.decomposition import load_stack
from vidrender.pipelines.motion.stack import single_layer_stack

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SIZE, FRAMES = 16, 4
# a child's address space: torch's import maps about 4 GB; a refused file needs nothing beyond it
CHILD_ADDRESS_SPACE = 8 * 1024**3
CLI_SECONDS = 30  # "in seconds": interpreter and torch start-up on a busy 2-core machine included
CLIP = ("artifact", "clips", 0)
CHARACTER = (*CLIP, "characters", 0)


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """A valid motion checkpoint (built, not trained; small weights so that they are checked too)."""
    root = tmp_path_factory.mktemp("bounds")
    stack = single_layer_stack(torch.rand(3, SIZE, SIZE), torch.rand(4, SIZE, SIZE),
                               torch.eye(2, 3).repeat(FRAMES, 1, 1), 0, 24.0, (SIZE, SIZE))
    weights = torch.nn.Linear(3, 2).state_dict()
    return save_checkpoint(root / "valid.pt", "motion", {}, weights, {"variant": "known", "clips": [stack.to_dict()]})


def _edited(source, path, edits: dict):
    """A copy of checkpoint `source` at `path` with the values at `edits`' key paths replaced; written with
    plain `torch.save`, which keeps a view's sizes and strides (save_checkpoint would make it contiguous)."""
    payload = torch.load(source, weights_only=True)
    for where, value in edits.items():
        container = payload
        for key in where[:-1]:
            container = container[key]
        container[where[-1]] = value
    torch.save(payload, path)
    return path


def _refused_by_the_cli(args, folder, *messages: str) -> None:
    """`vidrender ARGS` in a child process: exit 2, one line on stderr holding every one of `messages`, no
    traceback, within CLI_SECONDS, and no new file in `folder`."""
    before = sorted(folder.iterdir())
    start = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "vidrender", *map(str, args)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if hasattr(resource, "prlimit"):  # Linux; set at once, long before the child could allocate much
        resource.prlimit(child.pid, resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))
    try:
        _, stderr = child.communicate(timeout=3 * CLI_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        pytest.fail(f"vidrender {args[0]} still ran after {3 * CLI_SECONDS} s")
    elapsed = time.monotonic() - start
    lines = stderr.strip().splitlines()
    assert child.returncode == 2, stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and all(m in lines[0] for m in messages), lines[-5:]
    assert elapsed < CLI_SECONDS, elapsed
    assert sorted(folder.iterdir()) == before


def _every_motion_command(bad, good, folder, *messages: str) -> None:
    for args in (["export", bad, "-o", folder / "layers"],
                 ["compose", "--character", bad, "--background", good, "-o", folder / "out.mp4"],
                 ["compose", "--character", good, "--background", bad, "-o", folder / "out.mp4"]):
        _refused_by_the_cli(args, folder, *messages)


@pytest.mark.slow  # three CLI processes each
def test_a_zero_stride_plate_of_200000_squared_is_refused_by_the_cli(valid, tmp_path):
    plate = torch.zeros(1).expand(3, 200_000, 200_000)
    bad = _edited(valid, tmp_path / "plate.pt", {(*CLIP, "background", "plate"): plate})
    assert bad.stat().st_size < 100_000  # the file is small; what it declares is 480 GB
    _every_motion_command(bad, valid, tmp_path, "plate.pt: damaged checkpoint, artifact.clips[0].background.plate "
                                                "declares 3x200000x200000 values in a storage of 4 bytes")


@pytest.mark.slow  # three CLI processes each
def test_10_to_the_8_zero_stride_affines_are_refused_by_the_cli(valid, tmp_path):
    # with a camera of as many frames the stack is consistent, so only the sizes can tell
    frames = 10**8
    bad = _edited(valid, tmp_path / "affines.pt", {(*CHARACTER, "affines"): torch.eye(2, 3).expand(frames, 2, 3),
                                                   (*CLIP, "background", "camera"): torch.eye(3).expand(frames, 3, 3)})
    assert bad.stat().st_size < 100_000
    # either tensor may be named first
    _every_motion_command(bad, valid, tmp_path, "affines.pt: damaged checkpoint, artifact.clips[0].",
                          f"declares {frames}x", "values in a storage of ")


def _deflated(source, path):
    """`source` re-zipped with compressed entries (torch's loader inflates them)."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for entry in archive.infolist():
            out.writestr(entry.filename, archive.read(entry), zipfile.ZIP_DEFLATED)
    return path


def _listed_twice(payload):
    characters = payload["artifact"]["clips"][0]["characters"]
    characters.append(characters[0])  # pickled once, a second reference: one layer's bytes, two layers' work


def _inside_itself(payload):
    loop = []
    loop.append(loop)
    payload["artifact"]["loop"] = loop


def _views_of_one_storage(payload):
    # distinct tensors over the same values: the second layer costs the file no bytes
    rgba = payload["artifact"]["clips"][0]["characters"][0]["rgba"]
    payload["artifact"]["clips"][0]["characters"].append(
        {"rgba": rgba.view(-1).view(rgba.shape), "affines": torch.eye(2, 3).repeat(FRAMES, 1, 1), "reference": 0})


def _bytearray(payload):
    payload["artifact"]["buffer"] = bytearray(1000)  # torch.load builds it at any declared size, zero-filled


def _huge_fps(payload):
    payload["artifact"]["clips"][0]["fps"] = 10**400  # finite as an integer, too large for a float


def _other_native_size(payload):
    payload["artifact"]["clips"][0]["native_size"] = [2 * SIZE, SIZE]


def _too_many_frames(payload):
    # real values, no view tricks: 8200 frames of 256 x 256 need 6.0 GiB as float32, over train's clip limit
    clip, side, frames = payload["artifact"]["clips"][0], 256, 8200
    clip["native_size"] = [side, side]
    clip["background"] = {"plate": torch.rand(3, side, side), "camera": torch.eye(3).repeat(frames, 1, 1)}
    clip["characters"] = [{"rgba": torch.rand(4, side, side), "affines": torch.eye(2, 3).repeat(frames, 1, 1),
                           "reference": 0}]


HOSTILE = {
    "listed_twice": (_listed_twice, "share their values"),
    "inside_itself": (_inside_itself, "listed inside themselves or many times over"),
    "views_of_one_storage": (_views_of_one_storage, "share their values"),
    "bytearray": (_bytearray, "refused, it holds pickled objects"),
    "huge_fps": (_huge_fps, "fps is"),
    "other_native_size": (_other_native_size, "the plate is 16x16 but native_size is 32x16"),
    "too_many_frames": (_too_many_frames, "affines has 8200 frames"),
}


@pytest.mark.parametrize("damage", HOSTILE)
def test_structures_that_multiply_work_or_memory_are_refused(valid, tmp_path, damage):
    change, message = HOSTILE[damage]
    payload = torch.load(valid, weights_only=True)
    change(payload)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(UserError, match=message) as refused:
        load_stack(tmp_path / "bad.pt")
    assert str(refused.value).startswith(str(tmp_path / "bad.pt")) and "\n" not in str(refused.value)


def test_a_compressed_checkpoint_is_refused_before_it_inflates(valid, tmp_path):
    with pytest.raises(UserError, match="compressed"):
        load_stack(_deflated(valid, tmp_path / "deflated.pt"))


# where a valid checkpoint holds a tensor, and that tensor's shape; ("artifact", "extra") holds none
FIELDS = {
    (*CLIP, "background", "plate"): (3, SIZE, SIZE),
    (*CLIP, "background", "camera"): (FRAMES, 3, 3),
    (*CHARACTER, "rgba"): (4, SIZE, SIZE),
    (*CHARACTER, "affines"): (FRAMES, 2, 3),
    ("weights", "weight"): (2, 3),
    ("weights", "bias"): (2,),
    ("artifact", "extra"): (5,),
}
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.uint8,
          torch.bool, torch.int16, torch.complex64]
BIG = [4096, 10**5, 2**31]  # sizes only a zero stride can declare on a small storage
MAX_STORED = 10_000  # values a fuzzed tensor really stores: every example stays small and fast


@st.composite
def views(draw):
    """(where, tensor): a view (sizes, strides, offset) of a small storage of a random dtype, shaped like
    the field it replaces or at random, with huge sizes declared through zero strides."""
    where = draw(st.sampled_from(list(FIELDS)))
    expected = FIELDS[where]
    shape = draw(st.one_of(
        st.just(list(expected)),
        st.lists(st.sampled_from([0, 1, 2, 3, 5, *BIG]), max_size=4),
        st.builds(lambda index, big: [big if i == index else size for i, size in enumerate(expected)],
                  st.integers(0, len(expected) - 1), st.sampled_from(BIG)),
    ))
    shape = list(shape)
    while math.prod(size for size in shape if size) >= 2**62:  # torch counts values in int64, zeros last
        shape[max(i for i, size in enumerate(shape) if size in BIG)] = 1
    contiguous = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        contiguous[i] = contiguous[i + 1] * max(shape[i + 1], 1)
    strides = [0 if size in BIG else draw(st.sampled_from([min(stride, 2**40), 0, 1, 2, 7]))
               for size, stride in zip(shape, contiguous, strict=True)]
    offset = draw(st.integers(0, 3))
    stored = offset + 1 + sum((size - 1) * stride for size, stride in zip(shape, strides, strict=True) if size)
    if stored > MAX_STORED:  # a moderate size with its natural stride: declare it through a zero stride instead
        strides = [0] * len(shape)
        stored = offset + 1
    dtype = draw(st.sampled_from(DTYPES))
    storage = torch.rand(stored).to(dtype)
    return where, storage.as_strided(shape, strides, offset)


def _holds_its_values(tensor: torch.Tensor) -> bool:
    needed = (tensor.storage_offset() + tensor.numel()) * tensor.element_size()
    return tensor.is_contiguous() and tensor.untyped_storage().nbytes() >= needed


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


@pytest.fixture(scope="module")
def peak_before():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(substitution=views())
def test_fuzzed_views_load_as_a_consistent_stack_or_a_one_line_error(valid, fuzz_dir, peak_before, substitution):
    where, tensor = substitution
    path = _edited(valid, fuzz_dir / "fuzzed.pt", {where: tensor})
    try:
        payload = load_checkpoint(path, "motion")
        stack = load_stack(path)
    except UserError as err:
        assert str(err).startswith(str(path)) and "\n" not in str(err)
    else:
        # what the loaders hand out holds every value it declares, and the stack agrees with its own sizes
        assert all(_holds_its_values(value) for value in _tensors(payload))
        layers = [stack.background.plate, stack.background.camera]
        layers += [tensor for character in stack.characters for tensor in (character.rgba, character.affines)]
        assert all(_holds_its_values(layer) for layer in layers)
        height, width = stack.size
        assert stack.native_size == (width, height) and stack.background.plate.shape == (3, height, width)
        assert all(c.rgba.shape == (4, height, width) and c.affines.shape == (stack.frame_count, 2, 3)
                   for c in stack.characters)
    # nothing near what a view can declare was allocated (a 3 x 4096 x 4096 float plate alone is 200 MB)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 150 * 1024


def test_what_vidrender_writes_loads_and_what_it_cannot_write_does_not(valid, tmp_path):
    # last in the file: its few hundred MB would hide the fuzz's memory check
    # a stack whose layers are one tensor: save_checkpoint stores each its own values, so the file loads
    plate, rgba, affines = torch.rand(3, SIZE, SIZE), torch.rand(4, SIZE, SIZE), torch.eye(2, 3).repeat(FRAMES, 1, 1)
    stack = single_layer_stack(plate, rgba, affines, 0, 24.0, (SIZE, SIZE))
    stack.characters.append(stack.characters[0])
    save_checkpoint(tmp_path / "shared.pt", "motion", {}, {"plate": plate}, {"clips": [stack.to_dict()]})
    assert len(load_stack(tmp_path / "shared.pt").characters) == 2
    # a plate and an RGBA layer at the reader's frame limit pass; one value more does not (bool keeps each
    # value at one byte: the checks read sizes and strides, never values, so the dtype does not matter)
    side = 8192
    for shape in [(3, side, side), (4, side, side)]:
        _edited(valid, tmp_path / "big.pt", {("artifact", "extra"): torch.zeros(shape, dtype=torch.bool)})
        assert load_checkpoint(tmp_path / "big.pt", "motion")["artifact"]["extra"].shape == shape
    _edited(valid, tmp_path / "big.pt", {("artifact", "extra"): torch.zeros(4 * side * side + 1, dtype=torch.bool)})
    with pytest.raises(UserError, match="artifact.extra holds 268435457 values, over the limit of 268435456"):
        load_checkpoint(tmp_path / "big.pt", "motion")
