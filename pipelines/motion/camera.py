"""Camera motion of a clip, estimated with OpenCV: per-frame cameras relative to a reference frame.

`estimate_cameras` returns, per frame t, the camera H_t of `vidrender.geometry.CAMERA_CONVENTION`: a
3x3 matrix mapping frame-t normalized coordinates (align_corners=False, -1 and 1 are the outer edges,
x right, y down) to normalized coordinates of the plate, where the plate is the *reference frame's
view*: H_reference = I, and the world plate is the reference frame extended (`world_bounds` sizes it
and re-expresses the cameras for it, so `BackgroundLayer(plate, cameras)` renders every frame).

How, in three steps (pixels of `exclude`, the character, are ignored throughout):
1. **Neighbours**: each frame is registered to the next one: features (SIFT or ORB) matched with
   Lowe's ratio test and a RANSAC fit of the model (`cv2.findHomography`, `estimateAffine2D`,
   `estimateAffinePartial2D`) give one start, the neighbour's motion another; each is refined
   photometrically with ECC (`cv2.findTransformECC`), which is what makes a pair accurate to a few
   hundredths of a pixel at 128 px, where a fit to the few dozen features of a small frame is off by
   tenths (and on a frame with little texture, by tens of pixels). ECC runs robustly: pixels that
   disagree once aligned (a character nobody excluded, other movers) are left out and it runs again.
   ECC's correlation, and the share of the shared pixels that agree, decide whether the pair is
   accepted: a cut or a textureless frame reaches neither. A failed pair is bridged by skipping a
   frame; frames that stay unconnected to the reference raise a one-line `UserError` naming them.
2. **Keyframes** (every KEYFRAME_STEP-th frame from the reference): every frame is also registered to
   its nearest keyframe, and each keyframe to the next and to the keyframes farthest from it in time
   whose views overlap its own (starting from the chained estimate, refined by ECC). These long links
   close loops: a frame's camera no longer rests on the product of every link between it and the
   reference.
3. **Global least squares**: the cameras G_t (frame t -> reference) minimise, over every accepted
   pair (i, j) with its estimate H_ij, the squared pixel distance between G_i q and G_j H_ij q on a
   grid of points q where the two frames overlap (Gauss-Newton, G_reference = I fixed). Chaining alone
   would let pair errors add up along the clip (drift); the least squares spread them over all loops.

Two details matter at the level of hundredths of a pixel per pair, which chaining would add up: both
frames of a pair are blurred by the same amount of the world, not of their own pixels, so a zoom does not
bias the scale, and the band along the frame's edge that the blur fills with made-up pixels is left out
(`_Registrar._ecc`).

Internally points are OpenCV pixels of the working size (pixel centres at integers); every result is
normalized, so it holds at any resolution. Frames larger than `max_side` are estimated at a reduced
size (normalized coordinates are the same at every size). The least squares hold a dense (8 T)^2 normal
matrix: about 0.5 GB at 1000 frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from vidrender import geometry
from vidrender.errors import UserError

MODELS = ("homography", "affine", "similarity")
FEATURES = ("sift", "orb")
# every KEYFRAME_STEP-th frame from the reference is a keyframe: the long links that close loops
KEYFRAME_STEP = 8
# keyframes are linked when this share of one's view lies in the other's; each to its next one and to at
# most LONG_LINKS more
MIN_OVERLAP = 0.3
LONG_LINKS = 3
# a pair is accepted when ECC's correlation over the pixels the two frames share reaches this
MIN_CORRELATION = 0.9
# ECC runs again without the pixels that disagree once aligned only if at least this share agree
MIN_SHARED = 0.5
# fewer RANSAC inliers than this give no feature estimate (ECC then starts from the neighbour's motion)
MIN_INLIERS = 10
RATIO_TEST = 0.8
RANSAC_THRESHOLD_PX = 1.5
# excluded pixels are grown by this much: features on the character's outline move with it
EXCLUDE_MARGIN_PX = 3
ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 1e-5)
# the Gaussian blur (pixels of the coarser frame) of both frames before ECC: a wider basin, and half the
# error on noisy frames (Gaussian noise of 3 %: 0.30 -> 0.15 px). Not where perspective makes one frame
# sharper than the other in one part and blurrier in another, by more than PERSPECTIVE_SPREAD in scale:
# there the blur pulls the fit (the long links of a turning camera: 0.03 -> 0.15 px), and the final
# run is unblurred
ECC_BLUR = 1.1
PERSPECTIVE_SPREAD = 1.03
# pixels still this many grey levels apart after alignment (or NOISE_MULTIPLE x the noise level, if
# more) move otherwise than the background; at the starting guess, compared after a GUESS_BLUR-pixel
# blur, the bar is GUESS_LEVELS, as a guess is off by a pixel or two
OUTLIER_LEVELS = 12.0
NOISE_MULTIPLE = 4.0
GUESS_BLUR = 2.0
GUESS_LEVELS = 24.0
# the least squares compare each pair on up to GRID x GRID points of the frames' overlap
GRID = 7
GAUSS_NEWTON_STEPS = 6
# `is_static`'s usual tolerance: the estimates of a static clip with 3 % noise stay within ~0.3 px
STATIC_TOLERANCE_PX = 0.5
# a world plate more than this many frames across means the cameras are degenerate, not a real move
MAX_WORLD_FRAMES = 16
_HAS_TWO_MASK_ECC = hasattr(cv2, "findTransformECCWithMask")


@dataclass
class _Pair:
    """One registration: `matrix` (3x3, OpenCV pixels of the working size) maps points of frame `source`
    to frame `target`, or None if it failed; with the evidence behind it."""

    source: int
    target: int
    matrix: np.ndarray | None
    matches: int = 0
    inliers: int = 0
    correlation: float = -1.0


@dataclass
class WorldBounds:
    """The world plate of a clip: the box (`left`, `top`, `width`, `height`), in pixels of the reference
    frame (origin at its top-left corner), that holds every pixel any frame sees, and `cameras` (T, 3, 3)
    float64 re-expressed for a plate of that box: frame t normalized -> plate normalized
    (`geometry.CAMERA_CONVENTION`)."""

    left: int
    top: int
    width: int
    height: int
    cameras: torch.Tensor


# --- inputs ------------------------------------------------------------------------------------------------


def _grey_frames(frames) -> np.ndarray:
    """(T, H, W) uint8 luminance of frames: a (T, 3, H, W) float tensor/array in [0, 1], or uint8
    (T, 3, H, W) or (T, H, W, 3)."""
    array = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.ndim != 4 or 3 not in (array.shape[1], array.shape[-1]):
        raise ValueError(f"estimate_cameras expects frames (T, 3, H, W), got shape {array.shape}")
    if array.shape[1] == 3:
        array = array.transpose(0, 2, 3, 1)
    if array.dtype != np.uint8:
        array = np.round(np.clip(array.astype(np.float32), 0, 1) * 255).astype(np.uint8)
    return np.stack([cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) for frame in array])


def _working_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(h, w) at most `max_side` on the longer side, the aspect kept."""
    scale = min(1.0, max_side / max(height, width))
    return max(16, round(height * scale)), max(16, round(width * scale))


def _allowed_masks(exclude, count: int, size: tuple[int, int], working: tuple[int, int]) -> np.ndarray:
    """(T, h, w) uint8: 255 where a pixel may be used (not excluded, nor within EXCLUDE_MARGIN_PX of it)."""
    if exclude is None:
        return np.full((count, *working), 255, np.uint8)
    masks = exclude.detach().cpu().float().numpy() if isinstance(exclude, torch.Tensor) else np.asarray(exclude, float)
    if masks.shape != (count, 1, *size):
        raise ValueError(f"estimate_cameras expects exclude of shape {(count, 1, *size)}, got {masks.shape}")
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * EXCLUDE_MARGIN_PX + 1,) * 2)
    allowed = []
    for mask in masks[:, 0]:
        # any share of an excluded pixel excludes the working pixel it falls in
        small = cv2.resize((mask > 0).astype(np.float32), working[::-1], interpolation=cv2.INTER_AREA) > 0
        allowed.append(255 - 255 * cv2.dilate(small.astype(np.uint8), grow))
    return np.stack(allowed).astype(np.uint8)


# --- one pair ----------------------------------------------------------------------------------------------


class _Registrar:
    """Registers pairs of frames of one clip (features, RANSAC, ECC), caching each frame's features."""

    def __init__(self, grey: np.ndarray, allowed: np.ndarray, model: str, features: str):
        self.grey, self.allowed, self.model = grey, allowed, model
        self.floats = grey.astype(np.float32)
        if features == "sift":
            self.detector, norm = cv2.SIFT_create(), cv2.NORM_L2
        else:
            self.detector, norm = cv2.ORB_create(nfeatures=2000, fastThreshold=5, edgeThreshold=15, patchSize=15), \
                cv2.NORM_HAMMING
        self.matcher = cv2.BFMatcher(norm)
        self.cache: dict[int, tuple] = {}
        height, width = grey.shape[1:]
        self.corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]])

    def _features(self, t: int) -> tuple:
        if t not in self.cache:
            self.cache[t] = self.detector.detectAndCompute(self.grey[t], self.allowed[t])
        return self.cache[t]

    def _fit(self, source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray | None, int]:
        """RANSAC fit of the model to matched points (N, 2): (3x3 or None, inlier count)."""
        if self.model == "homography":
            matrix, inliers = cv2.findHomography(source, target, cv2.RANSAC, RANSAC_THRESHOLD_PX)
        elif self.model == "affine":
            matrix, inliers = cv2.estimateAffine2D(source, target, method=cv2.RANSAC,
                                                   ransacReprojThreshold=RANSAC_THRESHOLD_PX)
        else:
            matrix, inliers = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC,
                                                          ransacReprojThreshold=RANSAC_THRESHOLD_PX)
        if matrix is None or inliers is None:
            return None, 0
        return (matrix if matrix.shape == (3, 3) else np.vstack([matrix, [0, 0, 1]])), int(inliers.sum())

    def matched(self, source: int, target: int) -> tuple[np.ndarray | None, int, int]:
        """A feature estimate source -> target: (3x3 or None when under MIN_INLIERS, matches, inliers)."""
        (keys_s, desc_s), (keys_t, desc_t) = self._features(source), self._features(target)
        if desc_s is None or desc_t is None or len(keys_s) < 2 or len(keys_t) < 2:
            return None, 0, 0
        pairs = self.matcher.knnMatch(desc_s, desc_t, k=2)
        # Lowe's ratio test: keep matches clearly better than the second-best candidate
        good = [pair[0] for pair in pairs if len(pair) == 2 and pair[0].distance < RATIO_TEST * pair[1].distance]
        if len(good) < 4:
            return None, len(good), 0
        points_s = np.float32([keys_s[m.queryIdx].pt for m in good])
        points_t = np.float32([keys_t[m.trainIdx].pt for m in good])
        matrix, inliers = self._fit(points_s, points_t)
        return (matrix if inliers >= MIN_INLIERS else None), len(good), inliers

    def refine(self, source: int, target: int, guess: np.ndarray) -> tuple[np.ndarray, float]:
        """Robust ECC refinement of `guess` (3x3 source -> target): (refined 3x3, correlation; -1 if ECC
        failed).

        ECC is a least-squares fit, so whatever moves otherwise than the background and is not excluded
        (the character when `exclude` is None, other people) pulls it, and with it the correlation that
        decides whether the pair is accepted. So ECC runs over the pixels that agree: first those that
        agree at the guess (compared blurred, so that the guess's own error of a pixel or two does not
        count against textured background), then, once aligned, over those that agree sharply, unblurred
        where perspective spreads the scale (PERSPECTIVE_SPREAD); the second run only if at least
        MIN_SHARED of the pixels the frames share agree:
        leaving out more would let a small part of the frame (after a cut, or behind something close to
        the camera) speak for it."""
        mask = self.allowed[source]
        differs, _ = self._outliers(source, target, guess, GUESS_BLUR, GUESS_LEVELS)
        if differs.sum() < 0.5 * (mask > 0).sum():  # else the guess is too far off to tell
            mask = np.where(differs, 0, mask).astype(np.uint8)
        refined, correlation = self._ecc(source, target, guess, mask, ECC_BLUR)
        if correlation < 0:
            return guess, -1.0
        differs, agreement = self._outliers(source, target, refined, 0, OUTLIER_LEVELS)
        if agreement < MIN_SHARED:
            return refined, correlation
        blur = ECC_BLUR if self._scale_spread(refined) <= PERSPECTIVE_SPREAD else 0.0
        if (differs & (mask > 0)).any() or blur < ECC_BLUR:
            refined, correlation = self._ecc(source, target, refined, np.where(differs, 0, mask).astype(np.uint8),
                                             blur)
        return refined, correlation

    def _scale_spread(self, matrix: np.ndarray) -> float:
        """How much more `matrix` magnifies at one corner of the frame than at another (>= 1): a
        homography's local magnification is det(H) / w^3 at a point where its third coordinate is w."""
        w = np.hstack([self.corners, np.ones((4, 1))]) @ matrix[2]
        return float((w.max() / w.min()) ** 3) if (w > 0).all() else np.inf

    def _ecc(self, source: int, target: int, guess: np.ndarray, template_mask: np.ndarray, blur: float
             ) -> tuple[np.ndarray, float]:
        """One ECC run from `guess` over `template_mask`: (refined 3x3, correlation; -1 if it failed).

        Both frames are blurred by `blur` pixels of the coarser one, the same blur in the world: a blur of
        so many pixels of each frame (ECC's own pre-filter) blurs a zoomed-in frame less in the world than
        a zoomed-out one, and ECC then trades scale for sharpness (0.2 px off at a 1.4x zoom). Within three
        blur widths of its edge a blurred frame mixes in made-up pixels from past the edge, which pulls
        the fit by hundredths of a pixel per pair (they add up along a clip), so that band is left out."""
        projective = self.model == "homography"
        motion = cv2.MOTION_HOMOGRAPHY if projective else cv2.MOTION_AFFINE
        warp = (guess / guess[2, 2] if projective else guess[:2]).astype(np.float32)
        scale = float(np.sqrt(abs(np.linalg.det(guess[:2, :2] / guess[2, 2]))))  # target pixels per source pixel
        template, template_mask = self._blurred(source, blur * max(1.0, 1 / scale), template_mask)
        image, image_mask = self._blurred(target, blur * max(1.0, scale), self.allowed[target])
        try:
            if _HAS_TWO_MASK_ECC:
                correlation, warp = cv2.findTransformECCWithMask(
                    template, image, template_mask, image_mask, warp, motion, ECC_CRITERIA, 1)
            else:
                # older OpenCV masks only the input image: carry the template's mask there by the guess
                carried = self._carry(template_mask, image_mask, guess)
                correlation, warp = cv2.findTransformECC(template, image, warp, motion, ECC_CRITERIA, carried, 1)
        except cv2.error:
            return guess, -1.0
        refined = warp.astype(np.float64) if projective else np.vstack([warp.astype(np.float64), [0, 0, 1]])
        if self.model == "similarity":
            refined = _nearest_similarity(refined)
        correlation = float(correlation) if np.isfinite(correlation) else -1.0
        return refined, correlation

    def _blurred(self, t: int, sigma: float, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame t blurred by a Gaussian of `sigma` pixels, and `mask` without the band of 3 sigma at the
        frame's edge (none for `sigma` 0)."""
        if sigma <= 0:
            return self.floats[t], mask
        band = int(np.ceil(3 * sigma))
        mask = mask.copy()
        mask[:band], mask[-band:], mask[:, :band], mask[:, -band:] = 0, 0, 0, 0
        return cv2.GaussianBlur(self.floats[t], (0, 0), sigma), mask

    def _outliers(self, source: int, target: int, matrix: np.ndarray, blur: float, levels: float
                  ) -> tuple[np.ndarray, float]:
        """Pixels of `source` (allowed, and seen in `target` through `matrix`) that differ from `target` by
        more than `levels` grey levels, or NOISE_MULTIPLE times the noise level if that is more, once
        aligned by `matrix` (both blurred by a Gaussian of `blur` pixels if > 0), grown by 2 pixels; and
        the share of the seen pixels that agree."""
        height, width = self.grey.shape[1:]
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        aligned = cv2.warpPerspective(self.floats[target], matrix, (width, height), flags=flags)
        seen = cv2.warpPerspective(self.allowed[target], matrix, (width, height),
                                   flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) > 0
        seen &= self.allowed[source] > 0
        if not seen.any():
            return np.zeros_like(seen), 0.0
        template = self.floats[source]
        if blur > 0:
            aligned, template = (cv2.GaussianBlur(image, (0, 0), blur) for image in (aligned, template))
        difference = np.abs(aligned - template)
        # noise raises the bar: NOISE_MULTIPLE x its level (1.4826 x the median absolute difference)
        levels = max(levels, NOISE_MULTIPLE * 1.4826 * float(np.median(difference[seen])))
        differs = (difference > levels) & seen
        share = 1 - differs.sum() / seen.sum()
        return cv2.dilate(differs.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0, float(share)

    def _carry(self, template_mask: np.ndarray, image_mask: np.ndarray, guess: np.ndarray) -> np.ndarray:
        height, width = self.grey.shape[1:]
        moved = cv2.warpPerspective(template_mask, guess, (width, height), flags=cv2.INTER_NEAREST)
        return np.minimum(moved, image_mask)

    def register(self, source: int, target: int, guesses: list[np.ndarray], use_features: bool = True) -> _Pair:
        """Register `source` to `target`: `guesses` and the feature estimate (if `use_features`), each refined
        by ECC; the refinement of the highest correlation wins, and is accepted if that reaches
        MIN_CORRELATION.

        Every start is tried (except one that lands where an earlier refinement already did) because
        neither is always right: on a frame with little texture a homography fit to a dozen features can
        be off by tens of pixels, and ECC from there settles on a wrong optimum of fair correlation,
        while the neighbour's motion is the right start; at a sudden move it is the features."""
        pair = _Pair(source, target, None)
        candidates = list(guesses)
        if use_features:
            found, pair.matches, pair.inliers = self.matched(source, target)
            if found is not None:
                candidates.append(found)
        refinements: list[np.ndarray] = []
        for guess in candidates:
            if any(self._distance(guess, done) < 0.5 for done in refinements):
                continue
            refined, correlation = self.refine(source, target, guess)
            refinements.append(refined)
            # ECC converging far from its start found some other optimum, not a correction
            if correlation < 0 or self._distance(refined, guess) > 0.25 * self._diagonal():
                continue
            if correlation > pair.correlation:
                pair.correlation = correlation
                pair.matrix = refined if correlation >= MIN_CORRELATION else None
        return pair

    def _diagonal(self) -> float:
        return float(np.linalg.norm(self.corners[2] - self.corners[0]))

    def _distance(self, A: np.ndarray, B: np.ndarray) -> float:
        return float(np.linalg.norm(_project(A, self.corners) - _project(B, self.corners), axis=-1).mean())

    def overlap(self, A: np.ndarray) -> float:
        """Share of a frame that the 3x3 map A (frame -> frame pixels) keeps inside the frame."""
        quad = _project(A, self.corners).astype(np.float32)
        frame = self.corners.astype(np.float32)
        if not np.isfinite(quad).all() or cv2.contourArea(quad) <= 0:
            return 0.0
        area, _ = cv2.intersectConvexConvex(quad, frame)
        return float(area / cv2.contourArea(frame))


def _project(A: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N, 2) mapped by the 3x3 matrix A, with the perspective division."""
    mapped = np.hstack([points, np.ones((len(points), 1))]) @ A.T
    return mapped[:, :2] / mapped[:, 2:]


def _nearest_similarity(A: np.ndarray) -> np.ndarray:
    """The similarity (rotation, uniform scale, translation) closest to the affine A (3x3)."""
    a, b = (A[0, 0] + A[1, 1]) / 2, (A[1, 0] - A[0, 1]) / 2
    return np.array([[a, -b, A[0, 2]], [b, a, A[1, 2]], [0, 0, 1]])


# --- the clip ----------------------------------------------------------------------------------------------


def _neighbour_pairs(registrar: _Registrar, count: int) -> dict[tuple[int, int], _Pair]:
    """Step 1: frame t -> t + 1 for every t, each starting from its features, else from the last accepted
    neighbour's motion or no motion; a failed pair is bridged by t -> t + 2 where that works."""
    pairs: dict[tuple[int, int], _Pair] = {}
    last = np.eye(3)
    for t in range(count - 1):
        pair = registrar.register(t, t + 1, [last, np.eye(3)])
        pairs[(t, t + 1)] = pair
        if pair.matrix is not None:
            last = pair.matrix
    for t in range(count - 2):
        if pairs[(t, t + 1)].matrix is None or pairs[(t + 1, t + 2)].matrix is None:
            bridge = registrar.register(t, t + 2, [np.eye(3)])
            if bridge.matrix is not None:
                pairs[(t, t + 2)] = bridge
    return pairs


def _chain(pairs: dict[tuple[int, int], _Pair], count: int, reference: int) -> dict[int, np.ndarray]:
    """Cameras frame t -> reference (3x3, working pixels) by chaining accepted pairs outwards from the
    reference (breadth first: fewest links); frames no pair connects are absent."""
    links: dict[int, list[tuple[int, np.ndarray]]] = {t: [] for t in range(count)}
    for (source, target), pair in pairs.items():
        if pair.matrix is not None:
            links[source].append((target, pair.matrix))
            links[target].append((source, np.linalg.inv(pair.matrix)))
    cameras = {reference: np.eye(3)}
    frontier = [reference]
    while frontier:
        following = []
        for t in frontier:
            for other, matrix in links[t]:  # matrix maps t -> other, so other -> reference is G_t @ matrix^-1
                if other not in cameras:
                    cameras[other] = cameras[t] @ np.linalg.inv(matrix)
                    following.append(other)
        frontier = following
    return cameras


def _failure(pairs: dict[tuple[int, int], _Pair], cameras: dict[int, np.ndarray], count: int,
             reference: int) -> UserError:
    """The one-line error for frames the pairs leave unconnected to the reference: the run of failed
    neighbour pairs nearest the reference, with the evidence of its first pair."""
    lost = min((t for t in range(count) if t not in cameras), key=lambda t: abs(t - reference))
    step = 1 if lost > reference else -1
    first = lost - step  # the last connected frame on the way from the reference
    last = lost
    while 0 <= last + step < count and pairs[tuple(sorted((last, last + step)))].matrix is None:
        last += step
    low, high = sorted((first, last))
    pair = pairs[tuple(sorted((first, lost)))]
    return UserError(
        f"frames {low}-{high}: no camera motion could be estimated ({pair.matches} matches, {pair.inliers} inliers, "
        f"image correlation {max(pair.correlation, 0):.2f}); a cut or a textureless frame?")


def _keyframe_pairs(registrar: _Registrar, cameras: dict[int, np.ndarray], count: int, reference: int,
                    pairs: dict[tuple[int, int], _Pair]) -> None:
    """Step 2: every frame to its nearest keyframe; each keyframe to the next one and to the LONG_LINKS
    keyframes farthest from it in time whose views overlap its own (the links that close the largest
    loops, and a number of pairs that grows with the clip's length, not its square). Each starts from the
    chained cameras; the accepted pairs are added to `pairs`."""
    keyframes = sorted(set(range(reference % KEYFRAME_STEP, count, KEYFRAME_STEP)) | {reference})
    for t in range(count):
        nearest = min(keyframes, key=lambda k: (abs(k - t), k))
        if abs(nearest - t) > 1:
            _link(registrar, cameras, pairs, t, nearest)
    for index, first in enumerate(keyframes[:-1]):
        _link(registrar, cameras, pairs, first, keyframes[index + 1])
        linked = 0
        for second in reversed(keyframes[index + 2:]):  # farthest first
            linked += _link(registrar, cameras, pairs, first, second)
            if linked == LONG_LINKS:
                break


def _link(registrar: _Registrar, cameras: dict[int, np.ndarray], pairs: dict[tuple[int, int], _Pair],
          source: int, target: int) -> bool:
    """Register `source` to `target` from the chained cameras if their views overlap by MIN_OVERLAP and
    they are not linked yet; whether a pair was added."""
    guess = np.linalg.inv(cameras[target]) @ cameras[source]
    if abs(target - source) < 2 or (source, target) in pairs or registrar.overlap(guess) < MIN_OVERLAP:
        return False
    pair = registrar.register(source, target, [guess], use_features=False)
    if pair.matrix is not None:
        pairs[(source, target)] = pair
    return pair.matrix is not None


def _grid(registrar: _Registrar, matrix: np.ndarray) -> np.ndarray:
    """(N, 2) points of a GRID x GRID lattice over the source frame that `matrix` keeps inside the target."""
    height, width = registrar.grey.shape[1:]
    xs, ys = np.meshgrid(np.linspace(0, width - 1, GRID), np.linspace(0, height - 1, GRID))
    points = np.stack([xs.ravel(), ys.ravel()], -1)
    moved = _project(matrix, points)
    inside = (moved[:, 0] >= 0) & (moved[:, 0] <= width - 1) & (moved[:, 1] >= 0) & (moved[:, 1] <= height - 1)
    return points[inside]


def _parameters(model: str) -> int:
    return {"homography": 8, "affine": 6, "similarity": 4}[model]


def _to_matrix(params: np.ndarray, model: str) -> np.ndarray:
    """(T, P) parameters -> (T, 3, 3) cameras; parameters are offsets from the identity."""
    count = len(params)
    matrices = np.repeat(np.eye(3)[None], count, axis=0)
    if model == "similarity":
        a, b, tx, ty = params.T
        matrices[:, 0, 0] += a
        matrices[:, 1, 1] += a
        matrices[:, 0, 1], matrices[:, 1, 0] = -b, b
        matrices[:, 0, 2], matrices[:, 1, 2] = tx, ty
    else:
        matrices.reshape(count, 9)[:, : _parameters(model)] += params
    return matrices


def _from_matrix(matrices: np.ndarray, model: str) -> np.ndarray:
    """The inverse of `_to_matrix`, for cameras of the model (homographies scaled to H[2, 2] = 1)."""
    matrices = matrices / matrices[:, 2:, 2:]
    if model == "similarity":
        return np.stack([(matrices[:, 0, 0] + matrices[:, 1, 1]) / 2 - 1, (matrices[:, 1, 0] - matrices[:, 0, 1]) / 2,
                         matrices[:, 0, 2], matrices[:, 1, 2]], -1)
    return (matrices - np.eye(3)).reshape(len(matrices), 9)[:, : _parameters(model)]


def _point_jacobian(matrices: np.ndarray, points: np.ndarray, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Projected points (N, 2) of points (N, 2) under per-point cameras (N, 3, 3), and the Jacobian of
    the projection with respect to the cameras' parameters (N, 2, P)."""
    homogeneous = np.hstack([points, np.ones((len(points), 1))])
    mapped = np.einsum("nij,nj->ni", matrices, homogeneous)
    w = mapped[:, 2]
    projected = mapped[:, :2] / w[:, None]
    x, y = points[:, 0], points[:, 1]
    jacobian = np.zeros((len(points), 2, _parameters(model)))
    if model == "similarity":
        jacobian[:, 0] = np.stack([x, -y, np.ones_like(x), np.zeros_like(x)], -1)
        jacobian[:, 1] = np.stack([y, x, np.zeros_like(x), np.ones_like(x)], -1)
        return projected, jacobian
    jacobian[:, 0, 0:3] = homogeneous / w[:, None]
    jacobian[:, 1, 3:6] = homogeneous / w[:, None]
    if model == "homography":
        jacobian[:, 0, 6:8] = -projected[:, :1] * homogeneous[:, :2] / w[:, None]
        jacobian[:, 1, 6:8] = -projected[:, 1:] * homogeneous[:, :2] / w[:, None]
    return projected, jacobian


def _least_squares(registrar: _Registrar, pairs: dict[tuple[int, int], _Pair], cameras: dict[int, np.ndarray],
                   count: int, reference: int, model: str) -> np.ndarray:
    """Step 3: (T, 3, 3) cameras frame t -> reference (working pixels) minimising the pixel distances
    G_i q - G_j H_ij q over every accepted pair, by Gauss-Newton from the chained cameras.

    The solve runs in centred coordinates scaled to about [-1, 1] (`centred`): in pixels, a homography's
    perspective terms and its translation differ by the frame size squared, which ruins the conditioning."""
    height, width = registrar.grey.shape[1:]
    half = max(height, width) / 2
    centred = np.array([[1 / half, 0, -(width - 1) / 2 / half], [0, 1 / half, -(height - 1) / 2 / half], [0, 0, 1]])
    sources, targets, points, matched = [], [], [], []
    for (source, target), pair in pairs.items():
        if pair.matrix is None:
            continue
        grid = _grid(registrar, pair.matrix)
        sources += [source] * len(grid)
        targets += [target] * len(grid)
        points.append(_project(centred, grid))
        matched.append(_project(centred @ pair.matrix, grid))
    sources, targets = np.array(sources), np.array(targets)
    points, matched = np.concatenate(points), np.concatenate(matched)
    size = _parameters(model)
    chained = np.stack([centred @ cameras[t] @ np.linalg.inv(centred) for t in range(count)])
    params = _from_matrix(chained, model)
    free = np.array([t for t in range(count) if t != reference])
    column = np.full(count, -1)
    column[free] = np.arange(len(free))
    for _ in range(GAUSS_NEWTON_STEPS):
        matrices = _to_matrix(params, model)
        at_source, d_source = _point_jacobian(matrices[sources], points, model)
        at_target, d_target = _point_jacobian(matrices[targets], matched, model)
        step = _normal_step(at_source - at_target, ((sources, d_source), (targets, -d_target)), column, size)
        params[free] += step.reshape(len(free), size)
        if np.abs(step).max() < 1e-12:
            break
    return np.linalg.inv(centred) @ _to_matrix(params, model) @ centred


def _normal_step(residual: np.ndarray, parts, column: np.ndarray, size: int) -> np.ndarray:
    """The Gauss-Newton step solving J^T J step = -J^T r, from residuals (N, 2) and, per side of each point,
    (frames (N,), derivatives (N, 2, P)); `column` gives each frame's block (-1: fixed). Each point touches
    two cameras only, so J^T J is accumulated block by block instead of forming J."""
    blocks = int(column.max()) + 1
    normal = np.zeros((blocks, blocks, size, size))
    gradient = np.zeros((blocks, size))
    for frames, derivative in parts:
        keep = column[frames] >= 0
        np.add.at(gradient, column[frames[keep]], np.einsum("nkp,nk->np", derivative[keep], residual[keep]))
        for other_frames, other in parts:
            both = keep & (column[other_frames] >= 0)
            products = np.einsum("nkp,nkq->npq", derivative[both], other[both])
            np.add.at(normal, (column[frames[both]], column[other_frames[both]]), products)
    normal = normal.transpose(0, 2, 1, 3).reshape(blocks * size, blocks * size)
    return np.linalg.solve(normal, -gradient.reshape(-1))


def _to_normalized(cameras: np.ndarray, height: int, width: int) -> torch.Tensor:
    """(T, 3, 3) working-pixel cameras (OpenCV: pixel centres at integers) -> normalized, float64."""
    pixel = np.array([[width / 2, 0, width / 2 - 0.5], [0, height / 2, height / 2 - 0.5], [0, 0, 1]])
    normalized = np.linalg.inv(pixel) @ cameras @ pixel
    return torch.from_numpy(normalized / normalized[:, 2:, 2:])


def estimate_cameras(frames, exclude=None, reference: int = 0, model: str = "homography", features: str = "sift",
                     max_side: int = 512) -> torch.Tensor:
    """Per-frame cameras of a clip, relative to frame `reference`: (T, 3, 3) float64.

    frames: (T, 3, H, W) float in [0, 1] (tensor or array), or uint8 (T, 3, H, W) or (T, H, W, 3).
    exclude: None, or (T, 1, H, W) masks (> 0: ignore the pixel; the character), tensor or array. Pass it
    where it is known: pixels that disagree once aligned are left out anyway, which suffices over a
    textured background (a photograph: 0.02 px with or without), but over one of little texture a
    textured character nobody excluded pulls the cameras by pixels (the synthetic clips: 2-5 px).
    model: "homography" (8 degrees of freedom), "affine" (6) or "similarity" (4: rotation, uniform scale,
    translation); the cheaper ones fit fewer parameters and use `cv2.estimateAffine2D` /
    `estimateAffinePartial2D`. features: "sift" or "orb" (only starting points: ECC sets the accuracy).
    max_side: frames are estimated at most this large.

    Returns H_t in `geometry.CAMERA_CONVENTION`, frame t normalized -> normalized coordinates of the
    reference frame (H_reference = I): the plate is the reference frame's view, extended beyond it.
    Raises UserError naming the frames where a clip cannot be registered (a cut, a textureless frame).
    """
    if model not in MODELS:
        raise UserError(f"unknown camera model {model!r}; choose from {', '.join(MODELS)}")
    if features not in FEATURES:
        raise UserError(f"unknown feature detector {features!r}; choose from {', '.join(FEATURES)}")
    grey = _grey_frames(frames)
    count, height, width = grey.shape
    if not 0 <= reference < count:
        raise UserError(f"reference frame {reference} is outside the clip's {count} frames")
    working = _working_size(height, width, max_side)
    if working != (height, width):
        grey = np.stack([cv2.resize(frame, working[::-1], interpolation=cv2.INTER_AREA) for frame in grey])
    if count == 1:
        return torch.eye(3, dtype=torch.float64)[None]
    registrar = _Registrar(grey, _allowed_masks(exclude, count, (height, width), working), model, features)
    pairs = _neighbour_pairs(registrar, count)
    cameras = _chain(pairs, count, reference)
    if len(cameras) < count:
        raise _failure(pairs, cameras, count, reference)
    _keyframe_pairs(registrar, cameras, count, reference, pairs)
    solved = _least_squares(registrar, pairs, cameras, count, reference, model)
    return _to_normalized(solved, *working)


def is_static(cameras: torch.Tensor, tolerance_px: float, size: tuple[int, int]) -> bool:
    """Whether every camera (T, 3, 3, `geometry.CAMERA_CONVENTION`) moves the frame's corners by at most
    `tolerance_px` pixels from where the identity leaves them, at the clip's `size` (H, W); such a clip
    takes the static-camera path (plate = the frame, cameras = identity). `STATIC_TOLERANCE_PX` is a
    sensible tolerance."""
    height, width = size
    identity = torch.eye(3, dtype=torch.float64).expand(len(cameras), 3, 3)
    distances = geometry.camera_corner_distance(cameras.double(), identity, width, height)
    return bool((distances <= tolerance_px).all())


def world_bounds(cameras: torch.Tensor, size: tuple[int, int]) -> WorldBounds:
    """The world plate that holds every pixel any frame sees, and the cameras re-expressed for it.

    cameras: (T, 3, 3) relative to the reference frame (`estimate_cameras`: frame t normalized ->
    reference-frame normalized); size: the frames' (H, W). The box is in pixels of the reference frame
    (origin at its top-left corner), rounded outwards to whole pixels, so a plate of `width` x `height`
    pixels has the frames' pixel size at the reference frame; the returned cameras map frame t to that
    plate, normalized, so `BackgroundLayer(plate, bounds.cameras).views(size=size)` renders each frame.
    """
    height, width = size
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    relative = cameras.double()
    depth = corners @ relative[:, 2:, :2].transpose(-1, -2) + relative[:, 2:, 2:].transpose(-1, -2)
    seen = geometry.project(relative, corners.expand(len(relative), 4, 2)).reshape(-1, 2)
    if not (depth > 0).all() or not torch.isfinite(seen).all():
        raise UserError("the cameras map a frame's corner to infinity or behind the camera; "
                        "they cannot define a world plate")
    pixels = (seen + 1) * torch.tensor([width / 2, height / 2], dtype=torch.float64)
    low, high = torch.floor(pixels.min(dim=0).values), torch.ceil(pixels.max(dim=0).values)
    extent = high - low
    if extent[0] > MAX_WORLD_FRAMES * width or extent[1] > MAX_WORLD_FRAMES * height:
        raise UserError(f"the cameras see a world of {int(extent[0])}x{int(extent[1])} pixels, over "
                        f"{MAX_WORLD_FRAMES} frames across; the camera motion is degenerate")
    left, top, plate_width, plate_height = int(low[0]), int(low[1]), int(extent[0]), int(extent[1])
    # reference pixels -> plate pixels is a shift by (left, top); both grids have the same pixel size
    shift = torch.tensor([[1.0, 0, -left], [0, 1, -top], [0, 0, 1]], dtype=torch.float64)
    to_reference_pixels = geometry.camera_to_pixel(relative, (width, height), (width, height))
    plate_cameras = geometry.camera_to_normalized(shift @ to_reference_pixels, (width, height),
                                                  (plate_width, plate_height))
    return WorldBounds(left, top, plate_width, plate_height, plate_cameras)
