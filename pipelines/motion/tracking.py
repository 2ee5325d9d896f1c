"""Per-frame affine tracking of a moving character with OpenCV, every frame registered to the reference.

Each frame is estimated from a neighbour already done, going outwards from the reference frame:
1. guesses: the neighbour's affine followed by the frame-to-frame motion of corners tracked with
   pyramidal Lucas-Kanade inside the character's mask (RANSAC similarity, `estimateAffinePartial2D`);
   then, only if ECC accepts none of the earlier ones, a constant-velocity prediction, a direct
   re-detection (SIFT matches to the reference frame), and the neighbour's affine moved and scaled
   onto the frame's mask;
2. a refinement *against the reference frame* with ECC (MOTION_AFFINE) over the reference frame's
   character pixels, coarse to fine, accepted if the correlation is high and the result stays near
   its guess.
Because every accepted frame is aligned to the reference itself, errors do not accumulate along the
clip. Frames where no guess is accepted (character out of view, or lost) are tried again from the
other side once the frames beyond them are done, so a character re-entering the frame is picked up
from where it is fully back in view; if that fails too they keep the tracked guess or hold the last
affine.

ECC is a least-squares fit, so a few wrong pixels in the reference mask pull it off, and a difference
matte has such pixels ("ghosts" where the median plate is wrong because the character lingered there).
So tracking runs twice: after the first pass, the reference frame's matte is re-estimated against a
local plate taken only from frames where the tracked character is elsewhere, and the second pass
aligns on that cleaner template.

Coordinates: returned affines are normalized (`vidrender/geometry.py`), mapping reference-frame points
to frame-t points. Internally OpenCV pixel coordinates (pixel centres at integers) are used.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import cv2
import numpy as np
import torch

from vidrender import geometry
from vidrender.errors import UserError
from vidrender.pipelines.motion.background import median_plate
from vidrender.pipelines.motion.difference_matte import clean_mask, difference_matte, difference_threshold

MIN_TRACKS = 6
MIN_MATCHES = 5
ECC_MIN_CORRELATION = 0.75
ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-6)
# An ECC result further than this from its guess (mean displacement of the character's bounding-box
# corners, in box diagonals) is taken for a jump to a wrong local optimum, not a correction.
MAX_REFINEMENT_JUMP = 0.5
ECC_SCALES = (2, 1)
_HAS_TEMPLATE_MASK_ECC = hasattr(cv2, "findTransformECCWithMask")
# Pixels around the tracked character (first pass) that count as "covered" when taking the local plate.
SAFETY_MARGIN = 3


def _homogeneous(affine: np.ndarray) -> np.ndarray:
    return np.vstack([affine, [0.0, 0.0, 1.0]])


def _corner_distance(A: np.ndarray, B: np.ndarray, corners: np.ndarray) -> float:
    """Mean distance between `corners` (4, 2) mapped by 3x3 affines A and B."""
    points = np.hstack([corners, np.ones((len(corners), 1))]).T
    return float(np.linalg.norm((A @ points - B @ points)[:2], axis=0).mean())


def _box_corners(mask: np.ndarray) -> np.ndarray:
    """(4, 2) corners of the bounding box of a non-empty mask (H, W), OpenCV pixel coordinates."""
    ys, xs = np.nonzero(mask)
    return np.array([[xs.min(), ys.min()], [xs.max(), ys.min()], [xs.max(), ys.max()], [xs.min(), ys.max()]], float)


def _grey(frames: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) float RGB in [0, 1] -> (T, H, W) uint8 luminance."""
    rgb = np.round(frames.float().clamp(0, 1).numpy().transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    return np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in rgb])


def _frame_motion(previous: np.ndarray, current: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """3x3 similarity (OpenCV pixels) of the masked content from `previous` to `current`, or None."""
    points = cv2.goodFeaturesToTrack(previous, maxCorners=300, qualityLevel=0.005, minDistance=2, mask=_around(mask))
    if points is None or len(points) < MIN_TRACKS:
        return None
    lk = {"winSize": (15, 15), "maxLevel": 3}
    forward, status, _ = cv2.calcOpticalFlowPyrLK(previous, current, points, None, **lk)
    backward, back_status, _ = cv2.calcOpticalFlowPyrLK(current, previous, forward, None, **lk)
    # forward-backward check: a track that does not return to where it started is unreliable
    good = (status[:, 0] == 1) & (back_status[:, 0] == 1) & (np.linalg.norm(points - backward, axis=-1)[:, 0] < 0.5)
    if good.sum() < MIN_TRACKS:
        return None
    # a similarity (no shear) is enough between neighbouring frames and stays stable when only part
    # of the character is in view; ECC then fits the full affine
    affine, inliers = cv2.estimateAffinePartial2D(
        points[good], forward[good], method=cv2.RANSAC, ransacReprojThreshold=1.0
    )
    if affine is None or inliers.sum() < MIN_TRACKS:
        return None
    return _homogeneous(affine)


class _Redetector:
    """Direct estimate reference -> frame from matched SIFT features: no chaining, so it re-acquires the
    character after it was lost (e.g. out of the frame)."""

    def __init__(self, reference: np.ndarray, mask: np.ndarray):
        self.sift = cv2.SIFT_create()
        self.keypoints, self.descriptors = self.sift.detectAndCompute(reference, _around(mask))
        self.matcher = cv2.BFMatcher()

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
        """3x3 similarity (OpenCV pixels) reference -> `image`, from features in `mask`; None if too few."""
        if self.descriptors is None or len(self.keypoints) < MIN_MATCHES or not mask.any():
            return None
        keypoints, descriptors = self.sift.detectAndCompute(image, _around(mask))
        if descriptors is None or len(keypoints) < 2:
            return None
        pairs = self.matcher.knnMatch(self.descriptors, descriptors, k=2)
        # Lowe's ratio test: keep matches clearly better than the second-best candidate
        good = [pair[0] for pair in pairs if len(pair) == 2 and pair[0].distance < 0.8 * pair[1].distance]
        if len(good) < MIN_MATCHES:
            return None
        source = np.float32([self.keypoints[m.queryIdx].pt for m in good])
        target = np.float32([keypoints[m.trainIdx].pt for m in good])
        affine, inliers = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC, ransacReprojThreshold=3.0)
        if affine is None or inliers.sum() < MIN_MATCHES:
            return None
        return _homogeneous(affine)


def _around(mask: np.ndarray) -> np.ndarray:
    """The mask grown by 2 pixels, so features on the character's outline count."""
    return cv2.dilate(mask, np.ones((5, 5), np.uint8))


def _centroid(mask: np.ndarray) -> np.ndarray | None:
    moments = cv2.moments(mask, binaryImage=True)
    if moments["m00"] < 1:
        return None
    return np.array([moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]])


def _recentre(guess: np.ndarray, reference_mask: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`guess` rescaled and shifted so that it maps the reference mask's centroid onto the current mask's
    centroid, and its area onto the current mask's area (rotation and shear are kept)."""
    source, target = _centroid(reference_mask), _centroid(mask)
    if source is None or target is None:
        return guess
    linear = guess[:2, :2] * np.sqrt(mask.sum() / reference_mask.sum() / abs(np.linalg.det(guess[:2, :2])))
    moved = np.eye(3)
    moved[:2, :2] = linear
    moved[:2, 2] = target - linear @ source
    return moved


def _find_transform_ecc(
    template: np.ndarray, image: np.ndarray, template_mask: np.ndarray, warp: np.ndarray
) -> tuple[float, np.ndarray]:
    """One ECC run over the `template_mask` pixels (float32 images, uint8 mask, 2x3 float32 warp from
    template to image pixels); raises cv2.error if it diverges.

    OpenCV >= 4.12 takes the template's mask directly; older versions only take a mask of the input
    image, so the template mask is carried there by the starting warp.
    """
    if _HAS_TEMPLATE_MASK_ECC:
        everywhere = np.ones(image.shape, np.uint8)
        return cv2.findTransformECCWithMask(
            template, image, template_mask, everywhere, warp, cv2.MOTION_AFFINE, ECC_CRITERIA, 1
        )
    image_mask = cv2.warpAffine(template_mask, warp, image.shape[::-1], flags=cv2.INTER_NEAREST)
    return cv2.findTransformECC(template, image, warp, cv2.MOTION_AFFINE, ECC_CRITERIA, image_mask, 1)


def _ecc(
    template: np.ndarray, image: np.ndarray, template_mask: np.ndarray, guess: np.ndarray
) -> tuple[np.ndarray, float]:
    """ECC refinement of the 3x3 `guess` (template pixels -> image pixels), coarse to fine.

    Returns the refined 3x3 affine and the final correlation (-1 if ECC failed at full resolution).
    """
    warp = guess.copy()
    correlation = -1.0
    for factor in ECC_SCALES:
        size = (template.shape[1] // factor, template.shape[0] // factor)
        scaled = [cv2.resize(im, size, interpolation=cv2.INTER_AREA).astype(np.float32) for im in (template, image)]
        scaled_mask = cv2.resize(template_mask, size, interpolation=cv2.INTER_NEAREST)
        # the pixel-centre convention makes the scaling pixel -> pixel/f - (1 - 1/f)/2
        offset = (1 / factor - 1) / 2
        to_scaled = np.array([[1 / factor, 0, offset], [0, 1 / factor, offset], [0, 0, 1]])
        scaled_warp = (to_scaled @ warp @ np.linalg.inv(to_scaled))[:2].astype(np.float32)
        try:
            correlation, scaled_warp = _find_transform_ecc(*scaled, scaled_mask, scaled_warp)
        except cv2.error:
            correlation = -1.0
            continue
        warp = np.linalg.inv(to_scaled) @ _homogeneous(scaled_warp.astype(np.float64)) @ to_scaled
    return warp, correlation


def _guesses(
    tracked: np.ndarray | None,
    predicted: np.ndarray | None,
    previous_affine: np.ndarray,
    image: np.ndarray,
    mask: np.ndarray,
    reference_mask: np.ndarray,
    redetect: _Redetector,
) -> Iterator[np.ndarray]:
    """Starting points for ECC in a frame, best first, computed lazily (only if the ones before failed):
    the tracked frame-to-frame motion, the constant-velocity prediction, a direct re-detection from the
    reference, and the previous affine recentred on the mask."""
    for guess in (tracked, predicted):
        if guess is not None:
            yield guess
    found = redetect(image, mask)
    if found is not None:
        yield found
    yield _recentre(previous_affine, reference_mask, mask)


def _first_accepted(
    template: np.ndarray, image: np.ndarray, template_mask: np.ndarray, guesses: Iterator[np.ndarray]
) -> np.ndarray | None:
    """ECC from each guess in turn: the first refinement ECC accepts, or None.

    ECC's result is accepted if its correlation is high and it moves the character's bounding box
    less than MAX_REFINEMENT_JUMP of the box's diagonal away from the guess.
    """
    if not template_mask.any():
        return None
    corners = _box_corners(template_mask)
    limit = MAX_REFINEMENT_JUMP * np.linalg.norm(corners[2] - corners[0])
    for guess in guesses:
        refined, correlation = _ecc(template, image, template_mask, guess)
        if correlation >= ECC_MIN_CORRELATION and _corner_distance(refined, guess, corners) < limit:
            return refined
    return None


class _Tracker:
    """Registers frames of one clip to its reference frame, each starting from a neighbour's affine."""

    def __init__(self, grey: np.ndarray, masks: np.ndarray, template_mask: np.ndarray, reference: int):
        self.grey, self.masks, self.template_mask, self.reference = grey, masks, template_mask, reference
        self.redetect = _Redetector(grey[reference], masks[reference])
        self.affines = np.repeat(np.eye(3)[None], len(grey), axis=0)
        self.accepted = np.zeros(len(grey), bool)
        self.estimated = np.zeros(len(grey), bool)
        self.accepted[reference] = self.estimated[reference] = True

    def track(self, t: int, neighbour: int) -> None:
        """Estimate frame t from the (already estimated) frame `neighbour` = t -+ 1.

        A refinement ECC accepts always replaces the estimate. Otherwise a frame seen for the first time
        gets the tracked motion if there is one, else holds the neighbour's affine (the character is out
        of view or lost: nothing better is known).
        """
        direction = t - neighbour
        step = _frame_motion(self.grey[neighbour], self.grey[t], self.masks[neighbour])
        tracked = None if step is None else step @ self.affines[neighbour]
        beyond = neighbour - direction
        predicted = None
        if 0 <= beyond < len(self.grey) and self.accepted[beyond]:
            predicted = self.affines[neighbour] @ np.linalg.inv(self.affines[beyond]) @ self.affines[neighbour]
        guesses = _guesses(
            tracked,
            predicted,
            self.affines[neighbour],
            self.grey[t],
            self.masks[t],
            self.masks[self.reference],
            self.redetect,
        )
        refined = _first_accepted(self.grey[self.reference], self.grey[t], self.template_mask, guesses)
        if refined is not None:
            self.affines[t], self.accepted[t] = refined, True
        elif not self.estimated[t]:
            self.affines[t] = self.affines[neighbour] if tracked is None else tracked
        self.estimated[t] = True


def _track_pass(grey: np.ndarray, masks: np.ndarray, template_mask: np.ndarray, reference: int) -> np.ndarray:
    """One tracking pass: (T, 3, 3) OpenCV-pixel affines from the reference frame to each frame.

    Frames are tracked outwards from the reference; then each run of frames ECC did not accept is
    tracked again from its far end, if that end was accepted (e.g. a character re-entering the frame
    is picked up from the frames where it is fully back in view).
    """
    count = len(grey)
    tracker = _Tracker(grey, masks, template_mask, reference)
    for t in range(reference + 1, count):
        tracker.track(t, t - 1)
    for t in range(reference - 1, -1, -1):
        tracker.track(t, t + 1)
    for t in range(count - 2, reference, -1):
        if not tracker.accepted[t] and tracker.accepted[t + 1]:
            tracker.track(t, t + 1)
    for t in range(1, reference):
        if not tracker.accepted[t] and tracker.accepted[t - 1]:
            tracker.track(t, t - 1)
    return tracker.affines


def _reference_matte(frames: torch.Tensor, masks: np.ndarray, affines: np.ndarray, reference: int) -> np.ndarray:
    """The reference frame's matte (H, W) uint8 {0, 1}, re-estimated against a local plate.

    Around the reference mask, the plate is the median over the frames in which the tracked character
    (the reference mask moved by `affines`, (T, 3, 3) OpenCV pixels, with a safety margin) is
    elsewhere, so it is free of the character even where the character lingers for most of the clip.
    Pixels never seen free keep their old matte value.
    """
    count, _, height, width = frames.shape
    margin = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * SAFETY_MARGIN + 1,) * 2)
    around = cv2.dilate(masks[reference], margin)
    ys, xs = np.nonzero(around)
    if len(ys) == 0:
        return masks[reference]
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    rgb = frames[:, :, box[0], box[1]].float().numpy().transpose(0, 2, 3, 1)
    samples = np.full(rgb.shape, np.nan, np.float32)
    for t in range(count):
        if t == reference:
            continue
        covered = cv2.warpAffine(around, affines[t][:2], (width, height), flags=cv2.INTER_NEAREST)[box]
        samples[t][covered == 0] = rgb[t][covered == 0]
    with warnings.catch_warnings():
        # pixels the character covers in every frame have no free sample (all NaN); they keep their value
        warnings.simplefilter("ignore", RuntimeWarning)
        local_plate = np.nanmedian(samples, axis=0)
        spread = samples - local_plate
    known = np.isfinite(local_plate).all(-1)
    if not known.any():
        return masks[reference]
    threshold = difference_threshold(spread[np.isfinite(spread)])
    moving = np.abs(rgb[reference] - local_plate).max(-1) > threshold
    local = np.where(known, moving, masks[reference][box].astype(bool)) & (around[box] > 0)
    matte = np.zeros_like(masks[reference])
    matte[box] = local
    return clean_mask(matte, min_area=max(4, int(0.1 * masks[reference].sum())))


def _pixel_cv_to_normalized(affines: np.ndarray, width: int, height: int) -> torch.Tensor:
    """(T, 3, 3) OpenCV-pixel affines -> (T, 2, 3) normalized, float64."""
    centre_shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    # vidrender pixel coordinates put pixel centres at +0.5: A = S @ A_cv @ S^-1
    pixel = centre_shift @ affines @ np.linalg.inv(centre_shift)
    return geometry.pixel_to_normalized(torch.from_numpy(pixel[:, :2]), width, height)


def track_affines(frames: torch.Tensor, reference: int = 0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Affine of the moving character from the reference frame to every frame.

    frames: (T, 3, H, W) float RGB in [0, 1] (static camera). mask: the character's matte, (T, 1, H, W)
    in [0, 1] (> 0.5 = character); None estimates it with a median plate and difference matte.
    Returns (T, 2, 3) float64 normalized affines mapping reference-frame points to frame-t points;
    entry `reference` is the identity.
    """
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"track_affines expects frames (T, 3, H, W), got shape {tuple(frames.shape)}")
    count, _, height, width = frames.shape
    if not 0 <= reference < count:
        raise UserError(f"reference frame {reference} is outside the clip's {count} frames")
    frames = frames.detach().cpu()
    grey = _grey(frames)
    if mask is None:
        mask = difference_matte(frames, median_plate(frames))
    if mask.shape != (count, 1, height, width):
        raise ValueError(f"track_affines expects a mask of shape {(count, 1, height, width)}, got {tuple(mask.shape)}")
    masks = (mask.detach().cpu()[:, 0].numpy() > 0.5).astype(np.uint8)
    # mixed character/background pixels on the matte's edge match neither layer's motion
    edge = np.ones((3, 3), np.uint8)
    affines = _track_pass(grey, masks, cv2.erode(masks[reference], edge), reference)
    masks[reference] = _reference_matte(frames, masks, affines, reference)
    affines = _track_pass(grey, masks, cv2.erode(masks[reference], edge), reference)
    return _pixel_cv_to_normalized(affines, width, height)
