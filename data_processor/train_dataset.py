"""Training data with occlusion: the clean face plus noisy (partial / occluded) view(s) and their visibility masks.

The switch below is the default; ``data.occlusion`` in a config overrides any of its values, e.g.::

    data:
      occlusion: {mode: mixed, probabilities: {clean: 0.1, mask: 0.3}, fill: mean, seed: 0}

``occlusion: true`` (or ``{}``) uses this file's values as they are; ``occlusion: null`` (the base config) trains
on the plain dataset, without noisy views.

Every type belongs to an occluder family (``data_processor/occlusion/families.py``: partial, geometric,
upper_accessory, lower_accessory, object, user_art). ``exclude_families: [object, upper_accessory]`` drops whole
families from training, so they can be judged as held out; ``trained_families(data.occlusion)`` (also
``dataset.trained_families``) is what a run records.

Horizontal flip: ``data.flip: 0.5`` (or ``{probability: 0.5, seed: 0}``) flips with or without occlusion; unset,
plain datasets are not flipped and occlusion flips with ``FLIP_PROBABILITY`` (or ``data.occlusion.flip_probability``).

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
    "object_photo": 0.0,          # photographed objects (family `object`: held out by default)
    "crowd": 0.0,                 # other identities' faces from the same training set (family `object`)
}
OCCLUSION_EXCLUDE_FAMILIES = ()   # families never drawn, e.g. ("object", "upper_accessory")
OCCLUSION_FILL = "mean"           # partial views: zero | mean | noise | blur | white | random
FLIP_PROBABILITY = 0.5            # horizontal flip, applied jointly to clean, noisy, visibility and landmarks
# -----------------------------------------------------------------------------------------------------------------

import importlib
import logging
import pkgutil
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from data_processor import DATASETS
from data_processor.datasets import FLIP_ORDER, FlipDataset, flip_horizontal  # noqa: F401 (FLIP_ORDER: re-exported)
from data_processor.device_decode import DECODE_CHOICES, EncodedJPEGDataset
from data_processor.datasets import DatasetWrapper
from data_processor.occlusion import (IDENTITY_KINDS, OBJECT_OCCLUDERS, PARTIAL_VIEWS, SYNTHETIC_OCCLUDERS,
                                      load_rgba_occluders, occlude)
from data_processor.occlusion.families import check_families, family_of
from data_processor.occlusion.objects import DatasetDonors
from utils.registry import ConfigError, check_kwargs

logger = logging.getLogger(__name__)

OCCLUSION_TYPES: Tuple[str, ...] = ("clean",) + PARTIAL_VIEWS + SYNTHETIC_OCCLUDERS + ("gfro_box", "rgba") \
    + OBJECT_OCCLUDERS
"""Public type ids: ``sample["occlusion_type"]`` indexes this tuple; entry 0 is ``clean`` (new types are appended,
so the ids of existing types never change)."""
MODE_TYPES: Dict[str, Tuple[str, ...]] = {
    "clean": ("clean",),
    "partial": ("clean",) + PARTIAL_VIEWS,
    "synthetic": ("clean",) + SYNTHETIC_OCCLUDERS + ("gfro_box", "rgba") + OBJECT_OCCLUDERS,
    "mixed": OCCLUSION_TYPES,
}


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
                          where: str = "data.occlusion",
                          exclude_families: Optional[Sequence[str]] = None) -> Tuple[Tuple[str, ...], np.ndarray]:
    """(types, normalised probabilities) for ``mode``: the file's weights updated with ``probabilities``, without
    the types of ``exclude_families`` (default: the switch's OCCLUSION_EXCLUDE_FAMILIES)."""
    if mode not in MODE_TYPES:
        raise ConfigError(f"{where}.mode: expected one of {tuple(MODE_TYPES)}, got {mode!r}")
    excluded = set(check_families(OCCLUSION_EXCLUDE_FAMILIES if exclude_families is None else exclude_families,
                                  f"{where}.exclude_families"))
    weights = dict(OCCLUSION_PROBABILITIES)
    for name, value in (probabilities or {}).items():
        if name not in OCCLUSION_TYPES:
            raise ConfigError(f"{where}.probabilities: unknown type {name!r}; known: {', '.join(OCCLUSION_TYPES)}")
        if not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{where}.probabilities.{name}: expected a number >= 0, got {value!r}")
        if value > 0 and family_of(name) in excluded:
            raise ConfigError(f"{where}.probabilities.{name}: {value} for a type of family {family_of(name)!r}, "
                              f"which {where}.exclude_families excludes")
        weights[name] = float(value)
    types = tuple(name for name in MODE_TYPES[mode] if weights.get(name, 0.0) > 0 and family_of(name) not in excluded)
    if not types:
        raise ConfigError(f"{where}: mode {mode!r} allows {MODE_TYPES[mode]}, but all their probabilities are 0"
                          + (f" once families {sorted(excluded)} are excluded" if excluded else ""))
    values = np.array([weights[name] for name in types], dtype=np.float64)
    return types, values / values.sum()


def trained_families(occlusion_cfg: Union[None, bool, Mapping[str, Any]]) -> List[str]:
    """The occluder families a run with ``data.occlusion = occlusion_cfg`` draws from (nonzero probability under
    the resolved mode, probabilities and exclude_families), sorted; ``[]`` for ``null`` / ``false`` (no occlusion).

    This is what a run records (results.json, model_meta.json) and what ``seen_or_held_out`` compares a test set's
    occlusion against. ``clean`` belongs to no family.
    """
    if occlusion_cfg is None or occlusion_cfg is False:
        return []
    occlusion = {} if occlusion_cfg is True else occlusion_cfg
    if not isinstance(occlusion, Mapping):
        raise ConfigError(f"data.occlusion: expected a mapping (or true / null), got {occlusion_cfg!r}")
    mode = occlusion.get("mode")
    types, _ = resolve_probabilities(OCCLUSION_MODE if mode is None else mode, occlusion.get("probabilities"),
                                     exclude_families=occlusion.get("exclude_families"))
    return sorted({family for family in map(family_of, types) if family is not None})


def resolved_occlusion(data_cfg: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The occlusion settings a run with data section ``data_cfg`` trains with, every value the config leaves out
    filled in from the switch above: ``mode``, ``probabilities`` (the drawn types, renormalised), ``fill``,
    ``flip_probability`` (``data.flip`` or the switch's), ``exclude_families``, ``seed``, ``num_views``, plus
    ``params`` / ``rgba_dir`` when set; ``None`` when occlusion is off. What a run records next to
    ``trained_families`` (config.yaml, checkpoints, model_meta.json, results.json)."""
    occlusion_cfg = data_cfg.get("occlusion")
    if occlusion_cfg is None or occlusion_cfg is False:
        return None
    occlusion = {} if occlusion_cfg is True else occlusion_cfg
    if not isinstance(occlusion, Mapping):
        raise ConfigError(f"data.occlusion: expected a mapping (or true / null), got {occlusion_cfg!r}")
    mode = OCCLUSION_MODE if occlusion.get("mode") is None else occlusion["mode"]
    exclude = OCCLUSION_EXCLUDE_FAMILIES if occlusion.get("exclude_families") is None else occlusion["exclude_families"]
    types, probabilities = resolve_probabilities(mode, occlusion.get("probabilities"), exclude_families=exclude)
    flip = occlusion.get("flip_probability")
    if flip is None:
        given = resolve_flip(data_cfg.get("flip"))
        flip = FLIP_PROBABILITY if given is None else given[0]
    resolved: Dict[str, Any] = {
        "mode": str(mode),
        "probabilities": {name: float(value) for name, value in zip(types, probabilities)},
        "fill": str(OCCLUSION_FILL if occlusion.get("fill") is None else occlusion["fill"]),
        "flip_probability": float(flip),
        "exclude_families": sorted(check_families(exclude, "data.occlusion.exclude_families")),
        "seed": int(occlusion.get("seed", 0)),
        "num_views": int(occlusion.get("num_views", 1)),
    }
    for key in ("params", "rgba_dir"):
        if occlusion.get(key) is not None:
            resolved[key] = occlusion[key]
    return resolved


def pinned_occlusion_config(resolved: Mapping[str, Any]) -> Dict[str, Any]:
    """``resolved_occlusion``'s values as a ``data.occlusion`` section that trains the same way whatever the switch
    says later: every type gets a probability (0 for the types not drawn)."""
    pinned = dict(resolved)
    pinned["probabilities"] = {name: float(resolved["probabilities"].get(name, 0.0)) for name in OCCLUSION_TYPES}
    return pinned


class OcclusionTrainDataset(DatasetWrapper):
    """Wraps any FaceDataset: each sample is the base sample plus noisy view(s) of its image.

    Sample: the base keys (``image`` = the CLEAN uint8 [3,H,W] RGB tensor, ``label``, ``landmarks`` [5,2],
    ``index``) plus ``noisy`` uint8 [3,H,W], ``visibility`` float32 [1,H,W] (1 = visible), ``occlusion_type``
    (long, index into OCCLUSION_TYPES) and ``flipped`` (bool). With ``num_views > 1`` the three view keys gain a
    leading view dimension. A horizontal flip (``flip_probability``) is applied after occlusion, to everything.
    Reproducible: sample ``index`` of epoch ``e`` depends only on ``(seed, e, index)`` (call ``set_epoch``).
    Building it sets OpenCV to one thread in this process (see ``single_threaded_opencv``).

    ``params`` passes options per type, e.g. ``{"block": {"area_ratio": [0.0, 0.35]}, "mask": {"style": "cloth"}}``;
    ``rgba_dir`` is a folder of user RGBA occluders (``NAME.png`` + ``NAME.json`` anchors) for type ``rgba``.
    ``exclude_families`` drops every type of those families; ``trained_families`` lists the families drawn from.
    Type ``crowd`` takes its donor faces from ``base`` (other identities) unless ``params.crowd.donors`` is set.
    """

    def __init__(self, base: Dataset, mode: Optional[str] = None, probabilities: Optional[Mapping[str, float]] = None,
                 fill: Optional[str] = None, seed: int = 0, flip_probability: Optional[float] = None,
                 num_views: int = 1, params: Optional[Mapping[str, Mapping[str, Any]]] = None,
                 rgba_dir: Optional[str] = None, exclude_families: Optional[Sequence[str]] = None) -> None:
        self.base = base
        self.mode = OCCLUSION_MODE if mode is None else mode
        self.types, self.probabilities = resolve_probabilities(self.mode, probabilities,
                                                               exclude_families=exclude_families)
        self.trained_families: List[str] = sorted({f for f in map(family_of, self.types) if f is not None})
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
        logger.info("occlusion: mode %s, %d types, families %s, fill %s, seed %d, landmarks from %s", self.mode,
                    len(self.types), ", ".join(self.trained_families) or "none", self.fill, self.seed,
                    self.landmark_source)

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
            if name in IDENTITY_KINDS and "identity" in options:
                raise ConfigError(f"data.occlusion.params.{name}.identity: set per sample (its label), "
                                  f"not in the config")
            if name in resolved:
                resolved[name].update(options)
        if "rgba" in resolved:
            if rgba_dir is None:
                raise ConfigError("data.occlusion: type 'rgba' has a non-zero probability but rgba_dir is not set")
            resolved["rgba"]["occluder"] = load_rgba_occluders(rgba_dir)
        if "crowd" in resolved and "donors" not in resolved["crowd"]:
            try:
                resolved["crowd"]["donors"] = DatasetDonors(self.base)
            except ValueError as error:
                raise ConfigError(f"data.occlusion: type 'crowd': {error}") from None
        return resolved

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
            extra = {"identity": int(sample["label"])} if kind in IDENTITY_KINDS else {}
            noisy, visibility = occlude(rgb, landmarks, kind, rng, **self.params[kind], **extra)
            noisy_views.append(noisy)
            visibility_views.append(visibility)
            type_ids.append(self._type_ids[kind])
        noisy_chw = np.stack(noisy_views).transpose(0, 3, 1, 2)
        visibility_1hw = np.stack(visibility_views)[:, None]
        if flip:
            (clean_chw, noisy_chw, visibility_1hw), landmarks = flip_horizontal(
                [clean_chw, noisy_chw, visibility_1hw], landmarks, rgb.shape[1])
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


def resolve_flip(flip: Union[None, float, Mapping[str, Any]]) -> Optional[Tuple[float, Optional[int]]]:
    """``data.flip`` → ``(probability, seed or None)``; None when unset. A number is the probability; a mapping
    holds ``probability`` and optionally ``seed``."""
    if flip is None:
        return None
    if isinstance(flip, Mapping):
        unknown = sorted(set(flip) - {"probability", "seed"})
        if unknown or "probability" not in flip:
            raise ConfigError(f"data.flip: expected a probability or {{probability: p, seed: s}}, got {dict(flip)!r}")
        probability, seed = flip["probability"], flip.get("seed")
    else:
        probability, seed = flip, None
    if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
        raise ConfigError(f"data.flip: expected a probability in [0, 1], got {probability!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"data.flip.seed: expected an integer >= 0, got {seed!r}")
    return float(probability), seed


def build_train_dataset(data_cfg: Mapping[str, Any]) -> Dataset:
    """``data.train`` built through DATASETS, wrapped in OcclusionTrainDataset when ``data.occlusion`` is set, or in
    FlipDataset when only ``data.flip`` is (the occlusion wrapper does the flip itself, on all its views)."""
    if "train" not in data_cfg:
        raise ConfigError("data: missing the 'train' section "
                          "(e.g. {type: ImageListDataset, root: ..., list_file: ...})")
    register_dataset_modules()
    flip = resolve_flip(data_cfg.get("flip"))
    occlusion = data_cfg.get("occlusion")
    if occlusion is True:
        occlusion = {}
    if occlusion is not None and occlusion is not False and not isinstance(occlusion, Mapping):
        raise ConfigError(f"data.occlusion: expected a mapping (or true / null), got {occlusion!r}")
    decode = data_cfg.get("decode", "cpu")
    if decode not in DECODE_CHOICES:
        raise ConfigError(f"data.decode: expected one of {', '.join(DECODE_CHOICES)}, got {decode!r}")
    if decode == "device" and occlusion is not None and occlusion is not False:
        raise ConfigError("data.decode=device decodes JPEG batches where the model runs, but data.occlusion renders "
                          "its views from CPU pixels: use data.decode=cpu with data.occlusion")
    dataset = DATASETS.build(data_cfg["train"], where="data.train")
    if decode == "device":
        return EncodedJPEGDataset(dataset, flip_probability=0.0 if flip is None else flip[0],
                                  seed=0 if flip is None or flip[1] is None else flip[1])
    if occlusion is None or occlusion is False:
        if flip is None or flip[0] == 0.0:
            return dataset
        return FlipDataset(dataset, probability=flip[0], seed=0 if flip[1] is None else flip[1])
    check_kwargs(OcclusionTrainDataset, occlusion, "data.occlusion")
    if flip is not None:
        given = occlusion.get("flip_probability")
        if given is not None and float(given) != flip[0]:
            raise ConfigError(f"data.flip ({flip[0]}) and data.occlusion.flip_probability ({given}) disagree; "
                              f"set one of them")
        if flip[1] is not None:
            raise ConfigError("data.flip.seed: with data.occlusion on, the flip is drawn from data.occlusion.seed "
                              "(one draw per sample decides flip and occluder); drop data.flip.seed")
        occlusion = {**occlusion, "flip_probability": flip[0]}
    return OcclusionTrainDataset(dataset, **occlusion)
