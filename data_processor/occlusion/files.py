"""Occlude image files deterministically (the per-image step of the test-set builders; picklable for worker pools).

Kept outside ``test_protocol`` so a spawned worker imports only numpy/cv2 and this package.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from data_processor.image_io import encode_image, read_image
from data_processor.occlusion import IDENTITY_KINDS, occlude
from data_processor.occlusion.objects import identity_of_path


@dataclass
class FileOcclusionJob:
    """Shared settings: source/target roots, seed, the kinds to draw from and their options, per-image landmarks.

    Kinds that take the occluded face's ``identity`` (``crowd``: no donor of the same person) get
    ``identities[name]`` (e.g. the image's own identity and those of the images it is paired with), or by default
    the image's identity key (``identity_of_path``: its folder, e.g. ``Name`` of ``Name/Name_0001.jpg``).
    """

    source_root: Path
    target_root: Path
    seed: int
    kinds: Tuple[str, ...]
    kind_params: Mapping[str, Mapping[str, Any]]
    landmarks: Mapping[str, np.ndarray] = field(repr=False)
    identities: Optional[Mapping[str, Tuple[str, ...]]] = field(default=None, repr=False)

    def __call__(self, task: Tuple[int, str, bool]) -> Tuple[str, str]:
        """``(index, relative path, occlude?)`` → ``(relative path, kind or "none")``. The kind and its random
        parameters come from ``default_rng([seed, index])``; images not occluded are copied byte-for-byte."""
        index, name, occluded = task
        source, target = self.source_root / name, self.target_root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not occluded:
            shutil.copyfile(source, target)
            return name, "none"
        rng = np.random.default_rng([self.seed, index])
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        extra = {}
        if kind in IDENTITY_KINDS:
            extra["identity"] = self.identities[name] if self.identities is not None else identity_of_path(name)
        noisy, _ = occlude(read_image(source), self.landmarks[name], kind, rng, **self.kind_params.get(kind, {}),
                           **extra)
        target.write_bytes(encode_image(noisy, target.suffix or ".png"))
        return name, kind


_WORKER_JOB: Dict[str, FileOcclusionJob] = {}


def _init_worker(job: FileOcclusionJob) -> None:
    cv2.setNumThreads(1)
    _WORKER_JOB["job"] = job


def _run_in_worker(task: Tuple[int, str, bool]) -> Tuple[str, str]:
    return _WORKER_JOB["job"](task)


def run_file_occlusion(job: FileOcclusionJob, tasks: Sequence[Tuple[int, str, bool]],
                       workers: int = 1) -> list:
    """Run ``job`` over ``tasks`` (in order), in ``workers`` spawned processes when > 1; same output either way."""
    if workers <= 1:
        return [job(task) for task in tasks]
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers, _init_worker, (job,)) as pool:
        return pool.map(_run_in_worker, tasks, chunksize=max(1, min(64, len(tasks) // (4 * workers))))
