"""Shallow face data for semi-siamese training: keep N images per identity, and yield pairs of one identity.

``ShallowSubset`` turns any labelled dataset into a shallow one (the paper's MS-Celeb-1M-v1c-r-shallow keeps 2
images per identity); ``SemiSiamesePairs`` is FaceX-Zoo's ``ImageDataset_SST``: one sample per identity, two of its
images (the same image twice when it has only one), each augmented independently. Both take ``base: {type: ...}``
(any DATASETS entry) and may be nested::

    data:
      train:
        type: SemiSiamesePairs
        base: {type: ShallowSubset, images_per_identity: 2, base: {type: SyntheticFaceDataset}}
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from data_processor import DATASETS
from data_processor.datasets import FLIP_ORDER, DatasetWrapper
from utils.registry import ConfigError


def build_base(base: Union[Mapping[str, Any], Dataset], where: str) -> Dataset:
    """``base`` as a dataset: a ``{type: Name, ...}`` mapping is built through DATASETS, a dataset is used as is."""
    if isinstance(base, Dataset):
        return base
    if not isinstance(base, Mapping) or "type" not in base:
        raise ConfigError(f"{where}: expected a dataset mapping such as {{type: SyntheticFaceDataset}}, got {base!r}")
    from data_processor.train_dataset import register_dataset_modules

    register_dataset_modules()
    return DATASETS.build(dict(base), where=where)


def dataset_labels(dataset: Dataset, where: str) -> np.ndarray:
    """Every sample's label without loading images: from ``labels`` (RecordIODataset), ``items`` (image lists) or,
    for a wrapper, its ``base``."""
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return np.asarray(labels, dtype=np.int64)
    items = getattr(dataset, "items", None)
    if items is not None:
        return np.asarray([label for _, label in items], dtype=np.int64)
    base = getattr(dataset, "base", None)
    if base is not None:
        return dataset_labels(base, where)
    raise ConfigError(f"{where}: {type(dataset).__name__} exposes no labels ('labels' or 'items'); "
                      f"use an image-list, folder, synthetic or .rec dataset")


def indices_by_identity(labels: np.ndarray) -> Dict[int, List[int]]:
    """{label: sorted sample indices}, labels in increasing order."""
    groups: Dict[int, List[int]] = {}
    for index in np.argsort(labels, kind="stable"):
        groups.setdefault(int(labels[index]), []).append(int(index))
    return groups


@DATASETS.register()
class ShallowSubset(DatasetWrapper):
    """``base`` with at most ``images_per_identity`` images per identity (shallow data), chosen deterministically:
    per identity, a ``numpy.random.default_rng([seed, label])`` choice without replacement (``seed: null`` keeps the
    first ones in the base's order). Labels and ``num_classes`` are the base's (no identity disappears). Samples are
    the base's, with ``index`` renumbered."""

    def __init__(self, base: Union[Mapping[str, Any], Dataset], images_per_identity: int = 2,
                 seed: int | None = 0) -> None:
        if isinstance(images_per_identity, bool) or not isinstance(images_per_identity, int) \
                or images_per_identity < 1:
            raise ConfigError(f"data.train.images_per_identity: expected an integer >= 1, got {images_per_identity!r}")
        self.base = build_base(base, "data.train.base")
        self.images_per_identity = images_per_identity
        labels = dataset_labels(self.base, "data.train.base")
        kept: List[int] = []
        for label, indices in indices_by_identity(labels).items():
            if len(indices) > images_per_identity:
                if seed is None:
                    indices = indices[:images_per_identity]
                else:
                    rng = np.random.default_rng([int(seed), label])
                    indices = sorted(rng.choice(indices, size=images_per_identity, replace=False).tolist())
            kept.extend(indices)
        self.kept = np.asarray(sorted(kept), dtype=np.int64)
        self.labels = labels[self.kept]  # per sample, like RecordIODataset.labels

    def __len__(self) -> int:
        return int(self.kept.size)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        sample = dict(self.base[int(self.kept[index])])
        sample["index"] = int(index)
        return sample


def augmentation_matrix(rng: np.random.Generator, size: Sequence[int], flip_probability: float,
                        crop_probability: float, crop_pixels: int, rotation_probability: float,
                        max_rotation: float) -> tuple:
    """(2×3 affine matrix, flipped) of one random view: crop of up to ``crop_pixels`` resized back (p
    ``crop_probability``), rotation in ±``max_rotation`` degrees about the centre (p ``rotation_probability``),
    horizontal flip (p ``flip_probability``), composed in that order."""
    height, width = size
    matrix = np.eye(3)
    if rng.random() < crop_probability:
        crop_h, crop_w = height - crop_pixels, width - crop_pixels
        top, left = rng.integers(0, crop_pixels + 1), rng.integers(0, crop_pixels + 1)
        matrix = np.array([[width / crop_w, 0, -left * width / crop_w],
                           [0, height / crop_h, -top * height / crop_h], [0, 0, 1]]) @ matrix
    if rng.random() < rotation_probability:
        angle = rng.uniform(-max_rotation, max_rotation)
        rotation = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), angle, 1.0)
        matrix = np.vstack([rotation, [0, 0, 1]]) @ matrix
    flipped = bool(rng.random() < flip_probability)
    if flipped:
        matrix = np.array([[-1.0, 0, width - 1], [0, 1, 0], [0, 0, 1]]) @ matrix
    return matrix[:2], flipped


@DATASETS.register()
class SemiSiamesePairs(DatasetWrapper):
    """One sample per identity of ``base``: two of its images (drawn without replacement, in random order; the
    same image twice when the identity has one), each augmented independently.

    Sample: ``image`` (view 1, uint8 [3,H,W] RGB), ``image2`` (view 2), ``label``, ``landmarks`` / ``landmarks2``
    (moved with their view), ``index`` (the sample's position), ``flipped`` / ``flipped2``.
    ``num_classes`` is the base's. Reproducible: identity ``index`` of epoch ``e`` depends only on
    ``(seed, e, index)`` (the Trainer calls ``set_epoch``).

    Augmentation, per view: FaceX-Zoo's SST ``transform()`` is a random crop of up to 9 px resized back (p 0.5),
    horizontal flip (p 0.5), grayscale (p 0.2) and rotation ±10° (p 0.5); here they are the defaults, with crop,
    rotation and flip applied as ONE affine warp (bilinear, edge pixels replicated) that also moves the landmarks.
    Set ``data.flip`` to null with this dataset: its own ``flip_probability`` flips each view (``data.flip`` would
    flip view 1 only).

    ``passes_per_epoch`` k makes an epoch k passes over the identities (sample ``index`` is identity
    ``index % identities``, with a pairing of its own): the public code's epoch is one pass (k = 1, default); the
    embedded preset uses k > 1 only to save fewer per-epoch checkpoints of a tiny data set.

    Departure: the public dataset leaves out, each epoch, the identities still in the prototype queue; here every
    epoch has all identities and the head masks same-identity queue entries instead (see head/sst_prototype.py).
    """

    def __init__(self, base: Union[Mapping[str, Any], Dataset], seed: int = 0, flip_probability: float = 0.5,
                 crop_probability: float = 0.5, crop_pixels: int = 9, grayscale_probability: float = 0.2,
                 rotation_probability: float = 0.5, max_rotation: float = 10.0, passes_per_epoch: int = 1) -> None:
        for key, value in (("flip_probability", flip_probability), ("crop_probability", crop_probability),
                           ("grayscale_probability", grayscale_probability),
                           ("rotation_probability", rotation_probability)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"data.train.{key}: expected a probability in [0, 1], got {value!r}")
        if isinstance(crop_pixels, bool) or not isinstance(crop_pixels, int) or crop_pixels < 0:
            raise ConfigError(f"data.train.crop_pixels: expected an integer >= 0, got {crop_pixels!r}")
        if not isinstance(max_rotation, (int, float)) or not 0.0 <= max_rotation < 180.0:
            raise ConfigError(f"data.train.max_rotation: expected degrees in [0, 180), got {max_rotation!r}")
        if isinstance(passes_per_epoch, bool) or not isinstance(passes_per_epoch, int) or passes_per_epoch < 1:
            raise ConfigError(f"data.train.passes_per_epoch: expected an integer >= 1, got {passes_per_epoch!r}")
        self.passes_per_epoch = passes_per_epoch
        self.base = build_base(base, "data.train.base")
        self.groups = list(indices_by_identity(dataset_labels(self.base, "data.train.base")).values())
        if not self.groups:
            raise ConfigError("data.train.base: the dataset is empty")
        self.seed = int(seed)
        self.flip_probability = float(flip_probability)
        self.crop_probability = float(crop_probability)
        self.crop_pixels = crop_pixels
        self.grayscale_probability = float(grayscale_probability)
        self.rotation_probability = float(rotation_probability)
        self.max_rotation = float(max_rotation)
        self.epoch = 0
        self.trained_families: List[str] = []  # no occlusion

    def __len__(self) -> int:
        return len(self.groups) * self.passes_per_epoch

    def augment(self, image: torch.Tensor, landmarks: torch.Tensor, rng: np.random.Generator) -> tuple:
        """(uint8 [3,H,W] view, [5,2] landmarks, flipped) of one image."""
        hwc = np.ascontiguousarray(image.numpy().transpose(1, 2, 0))
        height, width = hwc.shape[:2]
        crop_pixels = min(self.crop_pixels, min(height, width) - 1)
        matrix, flipped = augmentation_matrix(rng, (height, width), self.flip_probability, self.crop_probability,
                                              crop_pixels, self.rotation_probability, self.max_rotation)
        points = landmarks.numpy().astype(np.float64)
        if not np.allclose(matrix, np.eye(3)[:2]):
            hwc = cv2.warpAffine(hwc, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
            points = points @ matrix[:, :2].T + matrix[:, 2]
        if flipped:
            points = points[FLIP_ORDER]
        if rng.random() < self.grayscale_probability:
            gray = cv2.cvtColor(hwc, cv2.COLOR_RGB2GRAY)
            hwc = np.repeat(gray[:, :, None], 3, axis=2)
        chw = torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)))
        return chw, torch.from_numpy(points.astype(np.float32)), flipped

    def __getitem__(self, index: int) -> Dict[str, Any]:
        group = self.groups[index % len(self.groups)]
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        if len(group) == 1:
            first, second = group[0], group[0]
        else:
            first, second = (int(i) for i in rng.choice(group, size=2, replace=False))
        sample1, sample2 = self.base[first], self.base[second]
        image1, landmarks1, flipped1 = self.augment(sample1["image"], sample1["landmarks"], rng)
        image2, landmarks2, flipped2 = self.augment(sample2["image"], sample2["landmarks"], rng)
        return {"image": image1, "image2": image2, "label": torch.as_tensor(sample1["label"], dtype=torch.long),
                "landmarks": landmarks1, "landmarks2": landmarks2, "index": int(index),
                "flipped": torch.tensor(flipped1), "flipped2": torch.tensor(flipped2)}

