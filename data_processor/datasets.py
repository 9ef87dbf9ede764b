"""Training datasets. Every dataset yields the same sample dict:

``{"image": uint8 [3,112,112] RGB tensor, "label": int64, "landmarks": float32 [5,2] (image pixels), "index": int}``

and exposes ``num_classes`` (read from the data, never typed in) and ``landmark_source``
(``"file"``, ``"generator"`` or ``"template"``) so a run can say which landmarks it used.

Horizontal flip is a data option of its own (``data.flip``), whether or not occlusion is on: ``FlipDataset`` wraps a
plain dataset, the occlusion wrapper flips its clean/noisy/visibility/landmarks jointly; both call the one
``flip_horizontal`` here.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from data_processor import DATASETS
from data_processor.image_io import read_image
from data_processor.landmarks import ARCFACE_TEMPLATE_112, read_landmark_file
from utils.text_files import read_fields

logger = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FLIP_ORDER = [1, 0, 2, 4, 3]  # landmark indices after a horizontal flip (left and right swap)


def flip_horizontal(arrays: Sequence[np.ndarray], landmarks: np.ndarray,
                    width: int) -> Tuple[List[np.ndarray], np.ndarray]:
    """Mirror ``arrays`` (images, masks: width on the last axis) and their 5 ``landmarks`` together.

    Pixel centres sit at integer x, so x becomes ``width - 1 - x``; the left and right points swap so that point 0
    is still the eye on the image's left. Returns views of the arrays (make them contiguous when needed) and new
    landmarks of the input's dtype.
    """
    flipped = [array[..., ::-1] for array in arrays]
    points = np.asarray(landmarks)[FLIP_ORDER].copy()
    points[:, 0] = width - 1 - points[:, 0]
    return flipped, points


class FaceDataset(Dataset):
    """Base: a list of (relative path, label) plus optional per-image landmarks."""

    def __init__(self, root: str | Path, items: List[Tuple[str, int]], landmarks_file: Optional[str | Path] = None,
                 source: str = "") -> None:
        self.root = Path(root)
        self.items = items
        self.num_classes = (max(label for _, label in items) + 1) if items else 0
        self.landmarks: Optional[Dict[str, np.ndarray]] = None
        self.landmark_source = "template"
        if landmarks_file is not None:
            self.landmarks = read_landmark_file(landmarks_file)
            missing = [path for path, _ in items if path not in self.landmarks]
            if missing:
                raise ValueError(f"{landmarks_file}: no landmarks for {len(missing)} of {len(items)} images "
                                 f"listed in {source or self.root}, first: {missing[:3]}")
            self.landmark_source = "file"
        missing_files = [path for path, _ in items[:1] if not (self.root / path).is_file()]
        if missing_files:
            raise FileNotFoundError(f"{source or self.root}: image {self.root / missing_files[0]} does not exist "
                                    f"(is data.root right?)")

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> Tuple[np.ndarray, int, np.ndarray]:
        """Return (uint8 RGB H×W×3, label, float32 [5,2] landmarks) for ``index``."""
        path, label = self.items[index]
        image = read_image(self.root / path)
        if self.landmarks is not None:
            points = self.landmarks[path]
        else:
            scale = np.array([image.shape[1] / 112.0, image.shape[0] / 112.0], dtype=np.float32)
            points = ARCFACE_TEMPLATE_112 * scale
        return image, label, points.astype(np.float32)

    def __getitem__(self, index: int) -> dict:
        image, label, points = self.load(index)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "label": torch.tensor(label, dtype=torch.long),
            "landmarks": torch.from_numpy(points),
            "index": index,
        }


def read_train_list(list_file: str | Path) -> List[Tuple[str, int]]:
    """Parse a FaceX-Zoo train list (``relative/path label`` per line); errors name the file and line."""
    list_file = Path(list_file)
    items: List[Tuple[str, int]] = []
    for line_no, fields in read_fields(list_file, 2, "'relative/path label'", "train list"):
        try:
            label = int(fields[1])
        except ValueError:
            raise ValueError(f"{list_file}:{line_no}: label must be an integer, got {fields[1]!r}") from None
        if label < 0:
            raise ValueError(f"{list_file}:{line_no}: label must be >= 0, got {label}")
        items.append((fields[0], label))
    if not items:
        raise ValueError(f"{list_file}: the train list is empty")
    return items


@DATASETS.register()
class ImageListDataset(FaceDataset):
    """FaceX-Zoo train list: ``root`` + ``list_file`` of ``relative/path label`` lines."""

    def __init__(self, root: str, list_file: str, landmarks_file: Optional[str] = None,
                 check_files: bool = True) -> None:
        items = read_train_list(list_file)
        super().__init__(root, items, landmarks_file, source=str(list_file))
        if check_files:
            missing = [path for path, _ in items if not (self.root / path).is_file()]
            if missing:
                raise FileNotFoundError(f"{list_file}: {len(missing)} listed image(s) missing under {self.root}, "
                                        f"first: {missing[:3]}")


@DATASETS.register()
class ImageFolderDataset(FaceDataset):
    """``root/<identity>/<image>``; labels follow the sorted identity folder names."""

    def __init__(self, root: str, landmarks_file: Optional[str] = None) -> None:
        root_path = Path(root)
        if not root_path.is_dir():
            raise FileNotFoundError(f"image folder not found: {root_path}")
        identities = sorted(p.name for p in root_path.iterdir() if p.is_dir())
        items = [(f"{identity}/{f.name}", label) for label, identity in enumerate(identities)
                 for f in sorted((root_path / identity).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        if not items:
            raise ValueError(f"{root_path}: no images found in identity sub-folders")
        self.identities = identities
        super().__init__(root, items, landmarks_file, source=str(root_path))


class DatasetWrapper(Dataset):
    """Base of datasets built around another one (``self.base``): the identity count and landmark source are the
    base's, and ``set_epoch`` (the epoch whose random draws ``__getitem__`` returns) reaches the base too."""

    base: Dataset
    epoch: int = 0

    @property
    def num_classes(self) -> int:
        return int(self.base.num_classes)

    @property
    def landmark_source(self) -> str:
        return str(getattr(self.base, "landmark_source", "unknown"))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)


def draws_flip(seed: int, epoch: int, index: int, probability: float) -> bool:
    """Whether sample ``index`` of ``epoch`` is mirrored: ``default_rng([seed, epoch, index]).random() < p``."""
    return bool(np.random.default_rng([seed, epoch, int(index)]).random() < probability)


class FlipDataset(DatasetWrapper):
    """Any dataset whose samples are mirrored (image and landmarks) with ``probability``, reproducibly: sample
    ``index`` of epoch ``e`` flips iff ``default_rng([seed, e, index]).random() < probability`` (call ``set_epoch``).
    Samples gain ``flipped`` (bool tensor). Built by ``build_train_dataset`` for ``data.flip`` when occlusion is off
    (with occlusion on, the occlusion wrapper applies the same flip to all of its views)."""

    def __init__(self, base: Dataset, probability: float = 0.5, seed: int = 0) -> None:
        if not 0.0 <= float(probability) <= 1.0:
            raise ValueError(f"data.flip: expected a probability in [0, 1], got {probability}")
        self.base = base
        self.probability = float(probability)
        self.seed = int(seed)
        self.epoch = 0
        self.trained_families: List[str] = []  # no occlusion: no occluder family seen in training

    def __getattr__(self, name: str) -> Any:  # items, labels, ... of the wrapped dataset
        if name == "base" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        sample = dict(self.base[index])
        flip = draws_flip(self.seed, self.epoch, index, self.probability)
        if flip:
            image = sample["image"].numpy()
            (image,), points = flip_horizontal([image], sample["landmarks"].numpy(), image.shape[-1])
            sample["image"] = torch.from_numpy(np.ascontiguousarray(image))
            sample["landmarks"] = torch.from_numpy(points)
        sample["flipped"] = torch.tensor(flip)
        return sample
