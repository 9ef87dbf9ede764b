"""Training data with occlusion: the clean face plus noisy (partial / occluded) view(s) and their visibility masks.

The switch below is the default; ``data.occlusion`` in a config overrides any of its values, e.g.::

    data:
      occlusion: {mode: mixed, probabilities: {clean: 0.1, mask: 0.3}, fill: mean, seed: 0}

``occlusion: true`` (or ``{}``) uses this file's values as they are; ``occlusion: null`` (the base config) trains
on the plain dataset, without noisy views.

Modes: ``clean`` (the noisy view is the clean image), ``partial`` (clean + landmark-guided partial views),
``synthetic`` (clean + drawn occluders / random shapes / user RGBA art), ``mixed`` (all of them). The
probabilities are relative weights per type, renormalised over the types the mode allows; types left out of a
config's ``probabilities`` keep the weights below (set one to 0 to disable it).
"""
from __future__ import annotations

# ---- Occlusion switch: edit here (or set data.occlusion in the config) -----------------------------------------
OCCLUSION_MODE = "mixed"          # clean | partial | synthetic | mixed
OCCLUSION_PROBABILITIES = {       # relative weight of each noisy-view type (renormalised over the mode's types)
    "clean": 0.10,                # the noisy view is the clean image
    "partial_upper": 0.08, "partial_lower": 0.08, "partial_left": 0.05, "partial_right": 0.05,
    "partial_eyes": 0.05, "partial_mouth": 0.05, "partial_central": 0.05, "partial_random": 0.09,
    "mask": 0.08, "eyeglasses": 0.04, "sunglasses": 0.06, "hat": 0.04, "scarf": 0.04, "hand": 0.04,
    "block": 0.04, "ellipse": 0.03, "polygon": 0.03,
    "gfro_box": 0.0,              # GFRO release's white eye/mouth boxes (baseline)
    "rgba": 0.0,                  # user RGBA occluders from rgba_dir (PNG + JSON anchors)
}
OCCLUSION_FILL = "mean"           # partial views: zero | mean | noise | blur | white | random
FLIP_PROBABILITY = 0.5            # horizontal flip, applied jointly to clean, noisy, visibility and landmarks
# -----------------------------------------------------------------------------------------------------------------

import importlib
import logging
import pkgutil
from typing import Any, Dict, Mapping, Optional, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from data_processor import DATASETS
from data_processor.occlusion import PARTIAL_VIEWS, SYNTHETIC_OCCLUDERS, load_rgba_occluders, occlude
from utils.registry import ConfigError, check_kwargs

logger = logging.getLogger(__name__)

OCCLUSION_TYPES: Tuple[str, ...] = ("clean",) + PARTIAL_VIEWS + SYNTHETIC_OCCLUDERS + ("gfro_box", "rgba")
"""Public type ids: ``sample["occlusion_type"]`` indexes this tuple; entry 0 is ``clean``."""
MODE_TYPES: Dict[str, Tuple[str, ...]] = {
    "clean": ("clean",),
    "partial": ("clean",) + PARTIAL_VIEWS,
    "synthetic": ("clean",) + SYNTHETIC_OCCLUDERS + ("gfro_box", "rgba"),
    "mixed": OCCLUSION_TYPES,
}
FLIP_ORDER = [1, 0, 2, 4, 3]  # landmark indices after a horizontal flip (left and right swap)


def single_threaded_opencv() -> None:
    """Give OpenCV one thread in this process, before DataLoader workers are forked.

    Workers are the parallelism of the data pipeline: N workers × M OpenCV threads would only oversubscribe the
    cores. It has to happen in the parent: a worker forked from a process whose OpenCV thread pool exists inherits
    the pool's locks but not its threads, and ``cv2.setNumThreads`` inside the worker then deadlocks (seen in
    tests/test_train_dataset.py). Forked workers inherit the setting.
    """
    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)
        logger.info("OpenCV set to 1 thread (fork-safe DataLoader workers)")


def resolve_probabilities(mode: str, probabilities: Optional[Mapping[str, float]],
                          where: str = "data.occlusion") -> Tuple[Tuple[str, ...], np.ndarray]:
    """(types, normalised probabilities) for ``mode``: the file's weights updated with ``probabilities``."""
    if mode not in MODE_TYPES:
        raise ConfigError(f"{where}.mode: expected one of {tuple(MODE_TYPES)}, got {mode!r}")
    weights = dict(OCCLUSION_PROBABILITIES)
    for name, value in (probabilities or {}).items():
        if name not in OCCLUSION_TYPES:
            raise ConfigError(f"{where}.probabilities: unknown type {name!r}; known: {', '.join(OCCLUSION_TYPES)}")
        if not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{where}.probabilities.{name}: expected a number >= 0, got {value!r}")
        weights[name] = float(value)
    types = tuple(name for name in MODE_TYPES[mode] if weights.get(name, 0.0) > 0)
    if not types:
        raise ConfigError(f"{where}: mode {mode!r} allows {MODE_TYPES[mode]}, but all their probabilities are 0")
    values = np.array([weights[name] for name in types], dtype=np.float64)
    return types, values / values.sum()


class OcclusionTrainDataset(Dataset):
    """Wraps any FaceDataset: each sample is the base sample plus noisy view(s) of its image.

    Sample: the base keys (``image`` = the CLEAN uint8 [3,H,W] RGB tensor, ``label``, ``landmarks`` [5,2],
    ``index``) plus ``noisy`` uint8 [3,H,W], ``visibility`` float32 [1,H,W] (1 = visible), ``occlusion_type``
    (long, index into OCCLUSION_TYPES) and ``flipped`` (bool). With ``num_views > 1`` the three view keys gain a
    leading view dimension. A horizontal flip (``flip_probability``) is applied after occlusion, to everything.
    Reproducible: sample ``index`` of epoch ``e`` depends only on ``(seed, e, index)`` (call ``set_epoch``).
    Building it sets OpenCV to one thread in this process (see ``single_threaded_opencv``).

    ``params`` passes options per type, e.g. ``{"block": {"area_ratio": [0.0, 0.35]}, "mask": {"style": "cloth"}}``;
    ``rgba_dir`` is a folder of user RGBA occluders (``NAME.png`` + ``NAME.json`` anchors) for type ``rgba``.
    """

    def __init__(self, base: Dataset, mode: Optional[str] = None, probabilities: Optional[Mapping[str, float]] = None,
                 fill: Optional[str] = None, seed: int = 0, flip_probability: Optional[float] = None,
                 num_views: int = 1, params: Optional[Mapping[str, Mapping[str, Any]]] = None,
                 rgba_dir: Optional[str] = None) -> None:
        self.base = base
        self.mode = OCCLUSION_MODE if mode is None else mode
        self.types, self.probabilities = resolve_probabilities(self.mode, probabilities)
        self._cumulative = np.cumsum(self.probabilities)
        self._type_ids = {name: OCCLUSION_TYPES.index(name) for name in self.types}
        self.fill = OCCLUSION_FILL if fill is None else fill
        self.seed = int(seed)
        self.flip_probability = FLIP_PROBABILITY if flip_probability is None else float(flip_probability)
        if not 0.0 <= self.flip_probability <= 1.0:
            raise ConfigError(f"data.occlusion.flip_probability: expected a value in [0, 1], got {flip_probability}")
        if int(num_views) < 1:
            raise ConfigError(f"data.occlusion.num_views: expected >= 1, got {num_views}")
        self.num_views = int(num_views)
        self.epoch = 0
        self.params = self._type_params(params or {}, rgba_dir)
        single_threaded_opencv()
        logger.info("occlusion: mode %s, %d types, fill %s, seed %d, landmarks from %s", self.mode, len(self.types),
                    self.fill, self.seed, self.landmark_source)

    def _type_params(self, params: Mapping[str, Mapping[str, Any]],
                     rgba_dir: Optional[str]) -> Dict[str, Dict[str, Any]]:
        from data_processor.occlusion import OCCLUDERS

        resolved: Dict[str, Dict[str, Any]] = {name: {} for name in self.types}
        for name in PARTIAL_VIEWS:
            if name in resolved:
                resolved[name]["fill"] = self.fill
        for name, options in params.items():
            if name not in OCCLUSION_TYPES:
                raise ConfigError(f"data.occlusion.params: unknown type {name!r}; known: {', '.join(OCCLUSION_TYPES)}")
            if not isinstance(options, Mapping):
                raise ConfigError(f"data.occlusion.params.{name}: expected a mapping of options, got {options!r}")
            check_kwargs(OCCLUDERS.get(name), options, f"data.occlusion.params.{name}")
            if name in resolved:
                resolved[name].update(options)
        if "rgba" in resolved:
            if rgba_dir is None:
                raise ConfigError("data.occlusion: type 'rgba' has a non-zero probability but rgba_dir is not set")
            resolved["rgba"]["occluder"] = load_rgba_occluders(rgba_dir)
        return resolved

    @property
    def num_classes(self) -> int:
        return int(self.base.num_classes)

    @property
    def landmark_source(self) -> str:
        return str(getattr(self.base, "landmark_source", "unknown"))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random views ``__getitem__`` returns (the Trainer calls this every epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def _draw_type(self, rng: np.random.Generator) -> str:
        position = int(np.searchsorted(self._cumulative, rng.random() * self._cumulative[-1], side="right"))
        return self.types[min(position, len(self.types) - 1)]

    def __getitem__(self, index: int) -> Dict[str, Any]:
        # numpy throughout, tensors only at the end: tiny torch ops are slow when torch's thread pool is busy
        sample = dict(self.base[index])
        clean_chw = sample["image"].numpy()
        rgb = cv2.merge([np.ascontiguousarray(plane) for plane in clean_chw])  # HWC copy, faster than numpy's
        landmarks = sample["landmarks"].numpy().astype(np.float32)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        flip = bool(rng.random() < self.flip_probability)
        noisy_views, visibility_views, type_ids = [], [], []
        for _ in range(self.num_views):
            kind = self._draw_type(rng)
            noisy, visibility = occlude(rgb, landmarks, kind, rng, **self.params[kind])
            noisy_views.append(noisy)
            visibility_views.append(visibility)
            type_ids.append(self._type_ids[kind])
        noisy_chw = np.stack(noisy_views).transpose(0, 3, 1, 2)
        visibility_1hw = np.stack(visibility_views)[:, None]
        if flip:
            clean_chw, noisy_chw, visibility_1hw = clean_chw[..., ::-1], noisy_chw[..., ::-1], visibility_1hw[..., ::-1]
            landmarks = landmarks[FLIP_ORDER]
            landmarks[:, 0] = rgb.shape[1] - 1 - landmarks[:, 0]
            sample["image"] = torch.from_numpy(np.ascontiguousarray(clean_chw))
        noisy_t = torch.from_numpy(np.ascontiguousarray(noisy_chw))
        visibility_t = torch.from_numpy(visibility_1hw.astype(np.float32))
        single = self.num_views == 1
        sample.update({
            "landmarks": torch.from_numpy(np.ascontiguousarray(landmarks)),
            "noisy": noisy_t[0] if single else noisy_t,
            "visibility": visibility_t[0] if single else visibility_t,
            "occlusion_type": torch.tensor(type_ids[0] if single else type_ids, dtype=torch.long),
            "flipped": torch.tensor(flip),
        })
        return sample


def register_dataset_modules() -> None:
    """Import every module of ``data_processor`` so all dataset formats are in DATASETS (they self-register)."""
    import data_processor

    for module in pkgutil.iter_modules(data_processor.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"data_processor.{module.name}")


def build_train_dataset(data_cfg: Mapping[str, Any]) -> Dataset:
    """``data.train`` built through DATASETS, wrapped in OcclusionTrainDataset when ``data.occlusion`` is set."""
    if "train" not in data_cfg:
        raise ConfigError("data: missing the 'train' section "
                          "(e.g. {type: ImageListDataset, root: ..., list_file: ...})")
    register_dataset_modules()
    dataset = DATASETS.build(data_cfg["train"], where="data.train")
    occlusion = data_cfg.get("occlusion")
    if occlusion is None or occlusion is False:
        return dataset
    if occlusion is True:
        occlusion = {}
    if not isinstance(occlusion, Mapping):
        raise ConfigError(f"data.occlusion: expected a mapping (or true / null), got {occlusion!r}")
    check_kwargs(OcclusionTrainDataset, occlusion, "data.occlusion")
    return OcclusionTrainDataset(dataset, **occlusion)
