"""Occluders of family ``object``: photographs, not drawings — so a model trained without them meets them unseen in
style as well as in type.

- ``object_photo``: a cut-out of a real object photographed in scikit-image's bundled sample images (a coffee cup
  on its saucer, a cat's face, a toy space shuttle, old coins), segmented here once per process (GrabCut from a fixed
  rectangle or ellipse, or a threshold), kept in memory as premultiplied RGBA. Placement: the object's centre falls
  anywhere in the face box (landmark box widened by the inter-ocular distance), its longest side is a random
  multiple of the inter-ocular distance, rotated and mirrored at random, with a soft alpha edge and its brightness
  and colour cast pulled towards the face's.
- ``crowd``: another person's face, cut with a soft ellipse around its own landmarks from an image of a
  :class:`DonorPool` (other images of the same data set), scaled to the face by inter-ocular distance and placed
  over its left or right side or below the chin, as a head in front of it in a crowd would be. ``identity`` (the
  occluded face's, or several: e.g. also those it is paired with in a test set) excludes donors of those people.

Nothing here uses the training renderer's drawing code (render.py, shapes.py, textures.py, occluders.py,
geometry.py): placement, warping and compositing are this module's own. As for every occluder, the result depends
only on the RNG, the input is never modified, and visibility is 0 exactly where a pixel changed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from data_processor.occlusion.base import OCCLUDERS

Result = Tuple[np.ndarray, np.ndarray]
OBJECT_OCCLUDERS = ("object_photo", "crowd")
IDENTITY_KINDS = ("crowd",)  # occluders that take the occluded image's ``identity`` (to skip same-person donors)
ALPHA_MIN = 0.03             # warped coverage below this leaves a pixel untouched (and visible)
CROWD_SIDES = ("left", "right", "bottom")


# ---- face geometry (own code: the 5 landmarks, no template fit) -------------------------------------------------
@dataclass(frozen=True)
class FaceGeometry:
    """Inter-ocular distance, roll (degrees, image y down), face centre and the face box of 5 landmarks."""

    eye_distance: float
    roll_deg: float
    centre: np.ndarray
    box: Tuple[float, float, float, float]  # left, top, right, bottom (not clipped to the image)

    @classmethod
    def of(cls, landmarks: np.ndarray) -> "FaceGeometry":
        points = np.asarray(landmarks, dtype=np.float64)
        eye_vector = points[1] - points[0]
        eye_distance = max(float(np.hypot(*eye_vector)), 1.0)
        roll = float(np.degrees(np.arctan2(eye_vector[1], eye_vector[0])))
        eyes, mouth = points[:2].mean(axis=0), points[3:].mean(axis=0)
        low, high = points.min(axis=0), points.max(axis=0)
        box = (low[0] - 0.6 * eye_distance, min(eyes[1], low[1]) - 0.8 * eye_distance, high[0] + 0.6 * eye_distance,
               max(mouth[1], high[1]) + 0.5 * eye_distance)
        return cls(eye_distance, roll, (eyes + mouth) / 2, box)


def face_box_mask(shape: Tuple[int, int], landmarks: np.ndarray) -> np.ndarray:
    """Boolean ``H×W``: the pixels of the face box the occluders of this module aim at."""
    left, top, right, bottom = FaceGeometry.of(landmarks).box
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    return (cols >= left) & (cols <= right) & (rows >= top) & (rows <= bottom)


def _rotation(angle_deg: float) -> np.ndarray:
    angle = np.deg2rad(angle_deg)
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


# ---- cut-outs: premultiplied RGBA patches --------------------------------------------------------------------
@dataclass(frozen=True)
class Cutout:
    """A premultiplied float32 ``h×w×4`` patch (alpha in [0, 1]), the point placed on the target (``anchor``, patch
    pixels) and the alpha-weighted mean colour of the object (for the lighting match)."""

    rgba: np.ndarray
    anchor: np.ndarray
    mean_colour: np.ndarray

    @classmethod
    def from_mask(cls, rgb: np.ndarray, mask: np.ndarray, feather: float, anchor: Optional[np.ndarray] = None,
                  pad: int = 2) -> "Cutout":
        """Cut ``mask`` (bool/uint8) out of ``rgb`` with a Gaussian-feathered edge (sigma ``feather`` px), cropped
        to the mask's box. Colours under the feathered rim come from the object (normalised blur), so the
        background never bleeds into the edge."""
        mask = mask.astype(np.float32)
        alpha = cv2.GaussianBlur(mask, (0, 0), feather) if feather > 0 else mask
        alpha = np.where(alpha < 1.0 / 255.0, 0.0, alpha).astype(np.float32)
        colour = rgb.astype(np.float32)
        if feather > 0:
            spread = cv2.GaussianBlur(mask, (0, 0), 2.0 * feather + 1.0)
            pushed = cv2.GaussianBlur(colour * mask[..., None], (0, 0), 2.0 * feather + 1.0)
            pushed = pushed / np.maximum(spread, 1e-6)[..., None]
            colour = np.where(mask[..., None] > 0.5, colour, pushed)
        rows, cols = np.nonzero(alpha > 0)
        if rows.size == 0:
            raise ValueError("cut-out mask is empty")
        r0, r1 = max(int(rows.min()) - pad, 0), min(int(rows.max()) + pad + 1, rgb.shape[0])
        c0, c1 = max(int(cols.min()) - pad, 0), min(int(cols.max()) + pad + 1, rgb.shape[1])
        alpha, colour = alpha[r0:r1, c0:c1], colour[r0:r1, c0:c1]
        rgba = np.concatenate([colour * alpha[..., None], alpha[..., None]], axis=2).astype(np.float32)
        if anchor is None:  # the alpha centroid: an opaque part of the object for every shape used here
            ys, xs = np.mgrid[0:alpha.shape[0], 0:alpha.shape[1]]
            anchor = np.array([(xs * alpha).sum(), (ys * alpha).sum()]) / alpha.sum()
        else:
            anchor = np.asarray(anchor, dtype=np.float64) - [c0, r0]
        mean = rgba[..., :3].reshape(-1, 3).sum(axis=0) / max(float(alpha.sum()), 1e-6)
        return cls(np.ascontiguousarray(rgba), np.asarray(anchor, dtype=np.float64), mean.astype(np.float64))

    def mirrored(self) -> "Cutout":
        width = self.rgba.shape[1]
        return Cutout(np.ascontiguousarray(self.rgba[:, ::-1]), np.array([width - 1 - self.anchor[0],
                                                                          self.anchor[1]]), self.mean_colour)

    @property
    def longest_side(self) -> float:
        return float(max(self.rgba.shape[:2]))


def lighting_gain(image: np.ndarray, box: Tuple[float, float, float, float], mean_colour: np.ndarray,
                  rng: np.random.Generator, strength: float = 0.5) -> np.ndarray:
    """Per-channel gain pulling a pasted object's brightness (``strength``) and colour cast towards the face's."""
    height, width = image.shape[:2]
    left, top, right, bottom = box
    c0, c1 = int(np.clip(np.floor(left), 0, width - 1)), int(np.clip(np.ceil(right), 1, width))
    r0, r1 = int(np.clip(np.floor(top), 0, height - 1)), int(np.clip(np.ceil(bottom), 1, height))
    face = image[r0:max(r1, r0 + 1), c0:max(c1, c0 + 1)].reshape(-1, 3).astype(np.float64).mean(axis=0)
    face_level, object_level = face.mean() + 8.0, float(np.mean(mean_colour)) + 8.0
    brightness = np.clip((face_level / object_level) ** strength, 0.6, 1.5) * rng.uniform(0.9, 1.1)
    cast = np.clip(((face + 8.0) / face_level) ** 0.3, 0.85, 1.15)
    return (brightness * cast).astype(np.float32)


def paste_cutout(image: np.ndarray, cutout: Cutout, centre: Sequence[float], scale: float, angle_deg: float,
                 gain: np.ndarray) -> Result:
    """Composite ``cutout`` (its anchor on ``centre``, scaled, rotated by ``angle_deg``, colour × ``gain``) onto a
    copy of ``image``; visibility is 0 exactly where the result differs from ``image``."""
    rgba, anchor = cutout.rgba, cutout.anchor
    if scale < 1.0:  # shrink with area averaging first: a bilinear warp alone would alias the photograph
        size = (max(1, int(round(rgba.shape[1] * scale))), max(1, int(round(rgba.shape[0] * scale))))
        factors = np.array([size[0] / rgba.shape[1], size[1] / rgba.shape[0]])
        rgba = cv2.resize(rgba, size, interpolation=cv2.INTER_AREA)
        anchor = (anchor + 0.5) * factors - 0.5
        scale = 1.0
    linear = scale * _rotation(angle_deg)
    matrix = np.hstack([linear, (np.asarray(centre, dtype=np.float64) - linear @ anchor)[:, None]])
    height, width = image.shape[:2]
    warped = cv2.warpAffine(rgba, matrix, (width, height), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0.0, 0.0, 0.0, 0.0))
    alpha = warped[..., 3]
    region = alpha >= ALPHA_MIN
    noisy = image.copy()
    under = image[region].astype(np.float32)
    blended = warped[region, :3] * gain + (1.0 - alpha[region, None]) * under
    noisy[region] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    changed = (noisy != image).any(axis=2)
    return noisy, (~changed).view(np.uint8)


# ---- the photographed objects -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhotoObject:
    """One object: its cut-out variants, size range (longest side ÷ inter-ocular distance) and rotation range."""

    name: str
    variants: Tuple[Cutout, ...]
    size_range: Tuple[float, float]
    rotation_deg: float


def _skimage_rgb(name: str, scale: float = 1.0) -> np.ndarray:
    import skimage.data  # noqa: PLC0415 (only when the cut-outs are first needed)

    image = np.ascontiguousarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if scale != 1.0:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return image


def _grabcut(rgb: np.ndarray, rect: Optional[Tuple[int, int, int, int]] = None,
             init: Optional[np.ndarray] = None, iterations: int = 5) -> np.ndarray:
    """GrabCut foreground (uint8 0/1), reproducible: OpenCV's RNG (its k-means seeding) is seeded first."""
    cv2.setRNGSeed(0)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    if init is None:
        mask = np.zeros(rgb.shape[:2], np.uint8)
        cv2.grabCut(bgr, mask, rect, background, foreground, iterations, cv2.GC_INIT_WITH_RECT)
    else:
        mask = init.copy()
        cv2.grabCut(bgr, mask, None, background, foreground, iterations, cv2.GC_INIT_WITH_MASK)
    return ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)


def _largest_filled_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of ``mask`` with its holes filled (uint8 0/1)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count < 2:
        raise ValueError("segmentation found no object")
    largest = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    outside = np.pad(1 - largest, 1, constant_values=1)
    flood = outside.copy()
    cv2.floodFill(flood, None, (0, 0), 2)
    return np.maximum(largest, (flood[1:-1, 1:-1] == 1).astype(np.uint8))


def _coffee_cup() -> Tuple[Cutout, ...]:
    rgb = _skimage_rgb("coffee", 0.5)  # 200×300: the cup on its saucer, centre left
    mask = _largest_filled_component(_grabcut(rgb, rect=(30, 5, 215, 194)))
    return (Cutout.from_mask(rgb, mask, feather=0.8),)


def _cat_face() -> Tuple[Cutout, ...]:
    rgb = _skimage_rgb("chelsea", 0.5)  # 150×226: the cat's head fills the frame
    init = np.full(rgb.shape[:2], cv2.GC_BGD, np.uint8)
    cv2.ellipse(init, (125, 70), (95, 80), 0, 0, 360, int(cv2.GC_PR_FGD), -1)
    cv2.ellipse(init, (125, 75), (55, 45), 0, 0, 360, int(cv2.GC_FGD), -1)
    mask = _largest_filled_component(_grabcut(rgb, init=init))
    return (Cutout.from_mask(rgb, mask, feather=0.8),)


def _space_shuttle() -> Tuple[Cutout, ...]:
    # the shuttle model at the top right of the 512×512 astronaut; at full size, or its white orbiter is lost to
    # the white wall behind it
    rgb = np.ascontiguousarray(_skimage_rgb("astronaut")[0:300, 340:480])
    mask = _largest_filled_component(_grabcut(rgb, rect=(10, 0, 120, 290)))
    half = (rgb.shape[1] // 2, rgb.shape[0] // 2)
    mask = cv2.resize(mask.astype(np.float32), half, interpolation=cv2.INTER_AREA) >= 0.5
    return (Cutout.from_mask(cv2.resize(rgb, half, interpolation=cv2.INTER_AREA), mask, feather=0.6),)


def _coins(count: int = 3) -> Tuple[Cutout, ...]:
    """The ``count`` largest coins of ``coins``: background-subtracted (morphological opening), Otsu threshold,
    round components only (fill ratio of the bounding box > 0.6, aspect < 1.3)."""
    gray = _skimage_rgb("coins")[..., 0]
    background = cv2.morphologyEx(gray, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (61, 61)))
    detail = cv2.GaussianBlur(cv2.subtract(gray, background), (5, 5), 0)
    _, binary = cv2.threshold(detail, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    found, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    round_ones = []
    for label in range(1, found):
        x, y, w, h, area = (int(v) for v in stats[label])
        if max(w, h) / max(min(w, h), 1) < 1.3 and area / float(w * h) > 0.6 and x > 0 and y > 0 \
                and x + w < gray.shape[1] and y + h < gray.shape[0]:
            round_ones.append((-area, label))
    if len(round_ones) < count:
        raise ValueError(f"coins: found {len(round_ones)} round coins, expected {count}")
    tint = np.array([1.0, 0.93, 0.8], dtype=np.float32)  # old silver/bronze, not a neutral grey
    rgb = np.clip(cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB).astype(np.float32) * tint, 0, 255).astype(np.uint8)
    cutouts = []
    for _, label in sorted(round_ones)[:count]:
        mask = _largest_filled_component((labels == label).astype(np.uint8))
        cutouts.append(Cutout.from_mask(rgb, mask, feather=0.8))
    return tuple(cutouts)


OBJECT_RECIPES = {  # name: (cut-out builder, longest side ÷ inter-ocular distance, rotation ± degrees)
    "coffee_cup": (_coffee_cup, (1.8, 3.0), 25.0),
    "cat_face": (_cat_face, (1.8, 3.0), 25.0),
    "space_shuttle": (_space_shuttle, (2.0, 3.2), 35.0),
    "coin": (_coins, (1.0, 1.8), 180.0),
}
PHOTO_OBJECTS = tuple(OBJECT_RECIPES)


@lru_cache(maxsize=None)
def photo_object(name: str) -> PhotoObject:
    """The cut-out(s) of object ``name`` (segmented on first use in this process, then cached)."""
    if name not in OBJECT_RECIPES:
        raise ValueError(f"unknown photo object {name!r}; known: {', '.join(PHOTO_OBJECTS)}")
    build, size_range, rotation = OBJECT_RECIPES[name]
    return PhotoObject(name, build(), size_range, rotation)


def _check_range(name: str, value: Sequence[float], low: float) -> Tuple[float, float]:
    if len(value) != 2 or not low < float(value[0]) <= float(value[1]):
        raise ValueError(f"{name} must be (low, high) with {low} < low <= high, got {tuple(value)}")
    return float(value[0]), float(value[1])


@OCCLUDERS.register("object_photo")
def object_photo(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                 objects: Optional[Sequence[str]] = None, size_scale: float = 1.0,
                 lighting: float = 0.5) -> Result:
    """A photographed object (one of ``objects``, default all of PHOTO_OBJECTS) over the face box.

    ``size_scale`` multiplies every object's size range; ``lighting`` (0–1) is how far its brightness is pulled
    towards the face's.
    """
    names = PHOTO_OBJECTS if objects is None else tuple(objects)
    unknown = [name for name in names if name not in OBJECT_RECIPES]
    if not names or unknown:
        raise ValueError(f"object_photo: objects must be names from {PHOTO_OBJECTS}, got {list(names)}")
    if not size_scale > 0 or not 0.0 <= lighting <= 1.0:
        raise ValueError(f"object_photo: size_scale must be > 0 and lighting in [0, 1], got {size_scale}, {lighting}")
    item = photo_object(names[int(rng.integers(len(names)))])
    cutout = item.variants[int(rng.integers(len(item.variants)))]
    if rng.random() < 0.5:
        cutout = cutout.mirrored()
    face = FaceGeometry.of(landmarks)
    length = rng.uniform(*item.size_range) * size_scale * face.eye_distance
    angle = face.roll_deg + rng.uniform(-item.rotation_deg, item.rotation_deg)
    left, top, right, bottom = face.box
    height, width = image.shape[:2]
    centre = rng.uniform([max(left, 0.0), max(top, 0.0)], [min(right, width - 1.0), min(bottom, height - 1.0)])
    gain = lighting_gain(image, face.box, cutout.mean_colour, rng, strength=lighting)
    return paste_cutout(image, cutout, centre, length / cutout.longest_side, angle, gain)


# ---- crowd: faces of other people --------------------------------------------------------------------------------
_TRAILING_NUMBER = re.compile(r"[_\-]?\d+$")
Excluded = Union[None, Hashable, Sequence[Hashable], frozenset]  # identities a crowd donor must not have


def identity_of_path(relative: str) -> str:
    """Identity key of an image path: its folder (``Name/Name_0001.jpg`` → ``Name``), or for a flat file its stem
    without a trailing number (``Name_0001.jpg`` → ``Name``)."""
    path = Path(relative)
    if len(path.parts) > 1:
        return path.parts[-2]
    return _TRAILING_NUMBER.sub("", path.stem) or path.stem


class DonorPool:
    """Faces a ``crowd`` occluder cuts from: aligned images (arrays, or files read when drawn), their 5 landmarks
    and an identity key each. Picklable (files are paths), so it travels to spawned builder workers."""

    def __init__(self, landmarks: Sequence[np.ndarray], identities: Sequence[Hashable],
                 images: Optional[Sequence[np.ndarray]] = None,
                 paths: Optional[Sequence[Union[str, Path]]] = None) -> None:
        if (images is None) == (paths is None):
            raise ValueError("DonorPool: pass either images (arrays) or paths (files), not both or neither")
        faces = list(images) if images is not None else [str(p) for p in paths]
        if not faces or not len(faces) == len(landmarks) == len(identities):
            raise ValueError(f"DonorPool: needs at least one face and as many landmarks and identities as faces, got "
                             f"{len(faces)} faces, {len(landmarks)} landmarks, {len(identities)} identities")
        self._faces = faces
        self._from_files = paths is not None
        self.landmarks = np.asarray(landmarks, dtype=np.float64).reshape(len(faces), 5, 2)
        self.identities = np.array([str(identity) for identity in identities])

    @classmethod
    def from_files(cls, root: Union[str, Path], names: Sequence[str], landmarks: Mapping[str, np.ndarray],
                   identities: Optional[Mapping[str, Hashable]] = None) -> "DonorPool":
        """Images ``root/name`` (in the order given), identities from the paths unless given."""
        names = list(names)
        return cls([landmarks[name] for name in names],
                   [identities[name] if identities is not None else identity_of_path(name) for name in names],
                   paths=[Path(root) / name for name in names])

    def __len__(self) -> int:
        return len(self._faces)

    def face(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(uint8 H×W×3 RGB, float64 [5, 2] landmarks)`` of donor ``index``."""
        face = self._faces[index]
        if self._from_files:
            from data_processor.image_io import read_image  # noqa: PLC0415 (only file pools need it)

            face = read_image(face)
        return np.asarray(face), self.landmarks[index]

    def draw(self, rng: np.random.Generator, identity: Excluded = None) -> int:
        """A donor index, uniform over the donors whose identity is not ``identity`` (one, or a list/set of them)."""
        if identity is None:
            candidates = np.arange(len(self))
        elif isinstance(identity, (list, tuple, set, frozenset)):
            candidates = np.flatnonzero(~np.isin(self.identities, sorted(str(i) for i in identity)))
        else:
            candidates = np.flatnonzero(self.identities != str(identity))
        if candidates.size == 0:
            raise ValueError(f"crowd: the donor pool has no face of another identity than {identity!r}")
        return int(candidates[int(rng.integers(candidates.size))])


class DatasetDonors(DonorPool):
    """A training dataset (per-image ``labels``, or ``items`` of (path, label), and samples with ``image`` /
    ``landmarks``) as a donor pool: identities are the labels, faces are loaded when drawn."""

    def __init__(self, dataset: Any) -> None:
        labels = getattr(dataset, "labels", None)
        if labels is None and getattr(dataset, "items", None) is not None:
            labels = [label for _, label in dataset.items]
        if labels is None or len(labels) != len(dataset):
            raise ValueError(f"crowd: {type(dataset).__name__} has no per-image labels ('labels' or 'items'); "
                             f"pass params.crowd.donors instead")
        self.dataset = dataset
        self.identities = np.array([str(int(label)) for label in labels])

    def __len__(self) -> int:
        return len(self.identities)

    def face(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        sample = self.dataset[index]
        image = np.ascontiguousarray(np.asarray(sample["image"]).transpose(1, 2, 0))
        return image, np.asarray(sample["landmarks"], dtype=np.float64)


def face_cutout(image: np.ndarray, landmarks: np.ndarray, feather_fraction: float = 0.06) -> Cutout:
    """The face of ``image`` inside a soft ellipse around its landmarks (forehead to chin, cheek to cheek); the
    anchor is the face centre."""
    face = FaceGeometry.of(landmarks)
    points = np.asarray(landmarks, dtype=np.float64)
    up = points[3:].mean(axis=0) - points[:2].mean(axis=0)
    centre = face.centre - 0.12 * up
    axes = (1.1 * face.eye_distance, 1.5 * face.eye_distance)
    mask = np.zeros(image.shape[:2], np.uint8)
    scale = 16  # cv2 fixed-point: sub-pixel ellipse
    cv2.ellipse(mask, (int(round(centre[0] * scale)), int(round(centre[1] * scale))),
                (int(round(axes[0] * scale)), int(round(axes[1] * scale))), face.roll_deg, 0, 360, 1, -1,
                cv2.LINE_8, 4)
    return Cutout.from_mask(np.asarray(image), mask, feather=feather_fraction * face.eye_distance, anchor=centre)


@OCCLUDERS.register("crowd")
def crowd(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, donors: Optional[DonorPool] = None,
          identity: Excluded = None, side: Optional[str] = None,
          scale_range: Sequence[float] = (0.85, 1.3), rotation_deg: float = 15.0) -> Result:
    """Another person's face from ``donors`` (never of ``identity``: one identity or a list of them) over the face's
    ``side``: left, right or bottom (random when None), scaled by the inter-ocular distances × ``scale_range``."""
    if donors is None:
        raise ValueError("occlusion kind 'crowd' needs donors=DonorPool(...) (faces of other people to cut from)")
    if side is not None and side not in CROWD_SIDES:
        raise ValueError(f"crowd: side must be one of {CROWD_SIDES} or None, got {side!r}")
    low, high = _check_range("crowd: scale_range", scale_range, 0.0)
    donor_image, donor_landmarks = donors.face(donors.draw(rng, identity))
    cutout = face_cutout(donor_image, donor_landmarks)
    donor = FaceGeometry.of(donor_landmarks)
    donor_roll = donor.roll_deg
    if rng.random() < 0.5:
        cutout, donor_roll = cutout.mirrored(), -donor_roll
    if side is None:
        side = CROWD_SIDES[int(rng.integers(len(CROWD_SIDES)))]
    face = FaceGeometry.of(landmarks)
    unit = face.eye_distance
    if side == "bottom":
        offset = np.array([rng.uniform(-0.9, 0.9), rng.uniform(1.4, 2.1)]) * unit
    else:
        offset = np.array([rng.uniform(1.0, 1.7) * (-1.0 if side == "left" else 1.0), rng.uniform(-0.3, 0.5)]) * unit
    centre = face.centre + _rotation(face.roll_deg) @ offset
    scale = unit / donor.eye_distance * rng.uniform(low, high)
    angle = face.roll_deg - donor_roll + rng.uniform(-rotation_deg, rotation_deg)
    gain = lighting_gain(image, face.box, cutout.mean_colour, rng, strength=0.3)
    return paste_cutout(image, cutout, centre, scale, angle, gain)


def describe_objects() -> List[Dict[str, Any]]:
    """Name, variants and patch sizes of the photographed objects (for manifests and figures)."""
    return [{"name": name, "variants": [list(v.rgba.shape[:2]) for v in photo_object(name).variants],
             "size_range": list(photo_object(name).size_range)} for name in PHOTO_OBJECTS]
