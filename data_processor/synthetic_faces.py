"""The embedded default data set: deterministic synthetic faces written like a real one.

No public face data set can be downloaded by the demo, so ``bash run.sh`` trains and verifies on procedurally drawn
faces (data_processor/synthetic_render.py). The set is laid out like the real formats the toolbox reads::

    root/train/images/<id:05d>/<k:03d>.png     root/train/train_list.txt   (FaceX-Zoo: relative/path label)
    root/train/landmarks.txt                   (5 points per image, keys = train_list paths)
    root/test/images/<NAME>/<NAME>_<k:04d>.png root/test/test_list.txt     root/test/landmarks.txt
    root/test/pairs.txt                        (official LFW View-2 format, 10 folds, disjoint identities per fold)
    root/val/images/<NAME>/<NAME>_<k:04d>.png  root/val/val_list.txt  root/val/landmarks.txt  root/val/pairs.txt
    root/manifest.json                         (generator version, seed, parameters, counts, sha256 of all files)

Test identities (``synth_00000`` ...) are drawn from a different random stream than training identities, so the two
never share a person. Validation identities (``val_00000`` ..., the only split where settings may be chosen) have
streams of their own too: identity ``i`` of ``val`` is drawn from the seed sequence
``[seed, 1, VAL_STREAM_OFFSET + i]`` (the test split code with indices no test identity reaches:
``num_test_identities < VAL_STREAM_OFFSET`` is enforced), and its pairs from ``[seed, 3]``; the train and test bytes
are those of generator version 1. The output is a pure function of the parameters: byte-identical for a seed,
whatever ``workers`` is.

    python -m data_processor.synthetic_faces --out data_cache/synthetic_faces [--seed 0] [--workers 2]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from data_processor import DATASETS
from data_processor.datasets import ImageListDataset, read_train_list
from data_processor.image_io import read_image, write_image
from data_processor.landmarks import read_landmark_file, write_landmark_file
from data_processor.synthetic_identity import Difficulty
from data_processor.synthetic_render import write_identity_images_job
from utils.cli import run_cli

GENERATOR_NAME = "synthetic_faces"
GENERATOR_VERSION = 2  # 2: the val split (train and test bytes unchanged)
DEFAULT_ROOT = "data_cache/synthetic_faces"
NUM_FOLDS = 10
TEST_NAME_PREFIX = "synth_"
VAL_NAME_PREFIX = "val_"
VAL_STREAM_OFFSET = 1 << 20  # val identity i renders from the stream of test index VAL_STREAM_OFFSET + i
SPLITS = ("train", "test", "val")
DEFAULT_SIZES = {
    "num_train_identities": 200,
    "images_per_train_identity": 20,
    "num_test_identities": 100,
    "images_per_test_identity": 10,
    "pairs_per_fold": 60,
    "num_val_identities": 60,
    "images_per_val_identity": 10,
    "val_pairs_per_fold": 30,
}

PairFold = Tuple[List[Tuple[str, int, int]], List[Tuple[str, int, str, int]]]


def make_difficulty(overrides: Optional[Mapping[str, Any]] = None) -> Difficulty:
    """:class:`Difficulty` with ``overrides`` applied; unknown keys or non-numbers raise a ValueError naming them."""
    overrides = dict(overrides or {})
    known = {f.name for f in fields(Difficulty)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"synthetic faces difficulty: unknown key(s) {unknown}; accepted: {sorted(known)}")
    for key, value in overrides.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"synthetic faces difficulty.{key}: expected a number, got {value!r}")
    return Difficulty(**{key: float(value) for key, value in overrides.items()})


def generator_parameters(num_train_identities: int = DEFAULT_SIZES["num_train_identities"],
                         images_per_train_identity: int = DEFAULT_SIZES["images_per_train_identity"],
                         num_test_identities: int = DEFAULT_SIZES["num_test_identities"],
                         images_per_test_identity: int = DEFAULT_SIZES["images_per_test_identity"],
                         pairs_per_fold: int = DEFAULT_SIZES["pairs_per_fold"], seed: int = 0,
                         difficulty: Optional[Mapping[str, Any]] = None,
                         num_val_identities: int = DEFAULT_SIZES["num_val_identities"],
                         images_per_val_identity: int = DEFAULT_SIZES["images_per_val_identity"],
                         val_pairs_per_fold: int = DEFAULT_SIZES["val_pairs_per_fold"]) -> Dict[str, Any]:
    """Validated, JSON-ready parameters that fully determine the data set (what the manifest records).
    ``num_val_identities=0`` writes no val split."""
    sizes = {"num_train_identities": num_train_identities, "images_per_train_identity": images_per_train_identity,
             "num_test_identities": num_test_identities, "images_per_test_identity": images_per_test_identity,
             "pairs_per_fold": pairs_per_fold, "seed": seed, "num_val_identities": num_val_identities,
             "images_per_val_identity": images_per_val_identity, "val_pairs_per_fold": val_pairs_per_fold}
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"synthetic faces {key}: expected a non-negative integer, got {value!r}")
    minimums = {"num_train_identities": 1, "images_per_train_identity": 1, "num_test_identities": 2 * NUM_FOLDS,
                "images_per_test_identity": 2, "pairs_per_fold": 1}
    if sizes["num_val_identities"]:
        minimums.update(num_val_identities=2 * NUM_FOLDS, images_per_val_identity=2, val_pairs_per_fold=1)
    if sizes["num_test_identities"] >= VAL_STREAM_OFFSET:
        raise ValueError(f"synthetic faces num_test_identities: at most {VAL_STREAM_OFFSET - 1} (higher indices are "
                         f"the val split's random streams), got {sizes['num_test_identities']}")
    for key, minimum in minimums.items():
        if sizes[key] < minimum:
            raise ValueError(f"synthetic faces {key}: must be at least {minimum} (each of the {NUM_FOLDS} folds needs "
                             f"two identities with two images), got {sizes[key]}")
    params: Dict[str, Any] = {key: int(value) for key, value in sizes.items()}
    params["difficulty"] = asdict(make_difficulty(difficulty))
    return params


def train_name(index: int) -> str:
    return f"{index:05d}"


def test_name(index: int) -> str:
    return f"{TEST_NAME_PREFIX}{index:05d}"


def val_name(index: int) -> str:
    return f"{VAL_NAME_PREFIX}{index:05d}"


def _render_all(jobs: List[tuple], workers: int) -> List[Tuple[str, List[float], str]]:
    """Run the per-identity jobs in order, in ``workers`` spawned processes (OpenCV is not fork-safe)."""
    if workers <= 1 or len(jobs) <= 1:
        return [row for job in jobs for row in write_identity_images_job(job)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(jobs))) as pool:
        return [row for rows in pool.imap(write_identity_images_job, jobs, chunksize=4) for row in rows]


def make_lfw_pairs(images_per_name: Mapping[str, int], pairs_per_fold: int, rng: np.random.Generator,
                   num_folds: int = NUM_FOLDS) -> List[PairFold]:
    """LFW View-2 style folds: identities are split into ``num_folds`` disjoint groups; each fold samples
    ``pairs_per_fold`` distinct positive pairs ``(name, i, j)`` (i < j) and as many distinct negative pairs
    ``(name1, i, name2, j)`` (name1 < name2) within its group. Image numbers start at 1, like LFW."""
    names = sorted(images_per_name)
    order = rng.permutation(len(names))
    folds: List[PairFold] = []
    for fold, members in enumerate(np.array_split(order, num_folds)):
        group = sorted(names[i] for i in members)
        positives = [(name, i, j) for name in group for i in range(1, images_per_name[name] + 1)
                     for j in range(i + 1, images_per_name[name] + 1)]
        possible_negatives = sum(images_per_name[a] * images_per_name[b] for k, a in enumerate(group)
                                 for b in group[k + 1:])
        if len(positives) < pairs_per_fold or possible_negatives < pairs_per_fold:
            raise ValueError(f"fold {fold + 1}: {len(group)} identities allow only {len(positives)} positive / "
                             f"{possible_negatives} negative pairs, {pairs_per_fold} requested per fold; use more "
                             f"test identities or images per identity")
        chosen = rng.choice(len(positives), size=pairs_per_fold, replace=False)
        fold_positives = sorted(positives[i] for i in chosen)
        folds.append((fold_positives, _sample_negatives(group, images_per_name, pairs_per_fold, possible_negatives,
                                                        rng)))
    return folds


def _sample_negatives(group: List[str], images_per_name: Mapping[str, int], count: int, possible: int,
                      rng: np.random.Generator) -> List[Tuple[str, int, str, int]]:
    """``count`` distinct ``(name1, i, name2, j)`` with name1 < name2: rejection sampling, or drawing from the full
    list when most of it is needed."""
    if 2 * count > possible:
        every = [(a, i, b, j) for k, a in enumerate(group) for b in group[k + 1:]
                 for i in range(1, images_per_name[a] + 1) for j in range(1, images_per_name[b] + 1)]
        return sorted(every[i] for i in rng.choice(len(every), size=count, replace=False))
    negatives: set = set()
    while len(negatives) < count:
        first, second = sorted(rng.choice(len(group), size=2, replace=False))
        name1, name2 = group[first], group[second]
        negatives.add((name1, int(rng.integers(1, images_per_name[name1] + 1)),
                       name2, int(rng.integers(1, images_per_name[name2] + 1))))
    return sorted(negatives)


def write_lfw_pairs(path: Path, folds: Sequence[PairFold]) -> None:
    """Write folds in the official LFW ``pairs.txt`` format (header ``<folds>\\t<n>``, tab-separated)."""
    per_fold = len(folds[0][0])
    lines = [f"{len(folds)}\t{per_fold}"]
    for positives, negatives in folds:
        lines += [f"{name}\t{i}\t{j}" for name, i, j in positives]
        lines += [f"{a}\t{i}\t{b}\t{j}" for a, i, b, j in negatives]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _combined_digest(file_hashes: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for relative in sorted(file_hashes):
        digest.update(f"{relative}\0{file_hashes[relative]}\n".encode("utf-8"))
    return digest.hexdigest()


def _write_split(root: Path, split: str, names: List[str], count: int, first_image: int, name_pattern: str,
                 params: Dict[str, Any], workers: int, file_hashes: Dict[str, str]) -> int:
    """Render one split into ``root/<split>`` (images, <split>_list.txt, landmarks.txt); returns the image count.
    ``val`` renders with the test split's code at identity indices from ``VAL_STREAM_OFFSET`` (module docstring)."""
    images_dir = root / split / "images"
    stream_split, first_stream = ("test", VAL_STREAM_OFFSET) if split == "val" else (split, 0)
    jobs = []
    for identity, name in enumerate(names):
        files = [(k, f"{name}/{name_pattern.format(name=name, k=k + first_image)}") for k in range(count)]
        jobs.append((params["seed"], stream_split, first_stream + identity, params["difficulty"], str(images_dir),
                     files))
    rows = _render_all(jobs, workers)
    landmarks = {relative: np.array(points, dtype=np.float32).reshape(5, 2) for relative, points, _ in rows}
    for relative, _, digest in rows:
        file_hashes[f"{split}/images/{relative}"] = digest
    labels = {name: label for label, name in enumerate(names)}
    list_file = root / split / f"{split}_list.txt"
    list_file.write_text("".join(f"{relative} {labels[relative.split('/')[0]]}\n" for relative, _, _ in rows),
                         encoding="utf-8")
    write_landmark_file(root / split / "landmarks.txt", landmarks)
    for extra in (list_file, root / split / "landmarks.txt"):
        file_hashes[extra.relative_to(root).as_posix()] = _file_digest(extra)
    return len(rows)


def _read_manifest(root: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads((Path(root) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_generated(root: Path) -> bool:
    manifest = _read_manifest(root)
    return isinstance(manifest, dict) and manifest.get("generator") == GENERATOR_NAME


def _build_into(staging: Path, params: Dict[str, Any], workers: int) -> Dict[str, Any]:
    """Write the whole set into ``staging`` and return its manifest."""
    file_hashes: Dict[str, str] = {}
    train_names = [train_name(i) for i in range(params["num_train_identities"])]
    test_names = [test_name(i) for i in range(params["num_test_identities"])]
    folds = make_lfw_pairs({name: params["images_per_test_identity"] for name in test_names},
                           params["pairs_per_fold"], np.random.default_rng([params["seed"], 2]))
    train_images = _write_split(staging, "train", train_names, params["images_per_train_identity"], 0, "{k:03d}.png",
                                params, workers, file_hashes)
    test_images = _write_split(staging, "test", test_names, params["images_per_test_identity"], 1,
                               "{name}_{k:04d}.png", params, workers, file_hashes)
    (staging / "test").mkdir(parents=True, exist_ok=True)
    write_lfw_pairs(staging / "test" / "pairs.txt", folds)
    file_hashes["test/pairs.txt"] = _file_digest(staging / "test" / "pairs.txt")
    val_names = [val_name(i) for i in range(params["num_val_identities"])]
    val_images = 0
    if val_names:
        val_folds = make_lfw_pairs({name: params["images_per_val_identity"] for name in val_names},
                                   params["val_pairs_per_fold"], np.random.default_rng([params["seed"], 3]))
        val_images = _write_split(staging, "val", val_names, params["images_per_val_identity"], 1,
                                  "{name}_{k:04d}.png", params, workers, file_hashes)
        write_lfw_pairs(staging / "val" / "pairs.txt", val_folds)
        file_hashes["val/pairs.txt"] = _file_digest(staging / "val" / "pairs.txt")
    manifest = {
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "seed": params["seed"],
        "parameters": params,
        "counts": {"train_identities": len(train_names), "train_images": train_images,
                   "test_identities": len(test_names), "test_images": test_images,
                   "folds": NUM_FOLDS, "pairs_per_fold": params["pairs_per_fold"],
                   "pairs": 2 * NUM_FOLDS * params["pairs_per_fold"],
                   "val_identities": len(val_names), "val_images": val_images,
                   "val_pairs": 2 * NUM_FOLDS * params["val_pairs_per_fold"] if val_names else 0,
                   "files": len(file_hashes)},
        "sha256": _combined_digest(file_hashes),
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def build_synthetic_faces(root: str | Path, num_train_identities: int = DEFAULT_SIZES["num_train_identities"],
                          images_per_train_identity: int = DEFAULT_SIZES["images_per_train_identity"],
                          num_test_identities: int = DEFAULT_SIZES["num_test_identities"],
                          images_per_test_identity: int = DEFAULT_SIZES["images_per_test_identity"],
                          pairs_per_fold: int = DEFAULT_SIZES["pairs_per_fold"], seed: int = 0, workers: int = 1,
                          difficulty: Optional[Mapping[str, Any]] = None,
                          num_val_identities: int = DEFAULT_SIZES["num_val_identities"],
                          images_per_val_identity: int = DEFAULT_SIZES["images_per_val_identity"],
                          val_pairs_per_fold: int = DEFAULT_SIZES["val_pairs_per_fold"]) -> Dict[str, Any]:
    """Render the whole set into ``root`` (replacing an earlier synthetic set there) and return its manifest.

    Built in a sibling temporary folder and moved into place at the end, so ``root`` is never half-written.
    ``difficulty``: overrides of :class:`~data_processor.synthetic_identity.Difficulty` fields.
    """
    params = generator_parameters(num_train_identities, images_per_train_identity, num_test_identities,
                                  images_per_test_identity, pairs_per_fold, seed, difficulty, num_val_identities,
                                  images_per_val_identity, val_pairs_per_fold)
    root = Path(root)
    if root.exists() and any(root.iterdir()) and not _is_generated(root):
        raise FileExistsError(f"{root}: exists and is not a synthetic-faces folder (no manifest.json from "
                              f"{GENERATOR_NAME}); refusing to overwrite it")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.building-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        manifest = _build_into(staging, params, workers)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _move_into_place(staging, root, manifest)
    return manifest


def _move_into_place(staging: Path, root: Path, manifest: Dict[str, Any]) -> None:
    """Replace ``root`` by ``staging``; a concurrent builder that already wrote the same set wins."""
    existing = _read_manifest(root) if root.exists() else None
    if existing is not None and existing.get("sha256") == manifest["sha256"]:
        shutil.rmtree(staging)
        return
    retired = root.parent / f".{root.name}.old-{os.getpid()}"
    if root.exists():
        os.replace(root, retired)
    os.replace(staging, root)
    if retired.exists():
        shutil.rmtree(retired)


def ensure_synthetic_faces(root: str | Path = DEFAULT_ROOT, workers: int = 1, **kwargs: Any) -> Dict[str, Any]:
    """Return the manifest of the set in ``root``, building it first when it is missing or was made with other
    parameters (``kwargs`` as for :func:`build_synthetic_faces`)."""
    wanted = generator_parameters(**kwargs)
    manifest = _read_manifest(Path(root)) if _is_generated(Path(root)) else None
    if manifest and manifest.get("generator_version") == GENERATOR_VERSION and manifest.get("parameters") == wanted:
        return manifest
    return build_synthetic_faces(root, workers=workers, **kwargs)


@DATASETS.register()
class SyntheticFaceDataset(ImageListDataset):
    """The embedded synthetic faces as an ``ImageListDataset`` (built on first use, landmarks from the generator).

    ``split="train"`` is the training set; ``split="test"`` (or ``"val"``, the validation identities) lists the
    verification images (labels = identities), whose pairs are in ``pairs_file``.
    """

    def __init__(self, root: str = DEFAULT_ROOT, split: str = "train",
                 num_train_identities: int = DEFAULT_SIZES["num_train_identities"],
                 images_per_train_identity: int = DEFAULT_SIZES["images_per_train_identity"],
                 num_test_identities: int = DEFAULT_SIZES["num_test_identities"],
                 images_per_test_identity: int = DEFAULT_SIZES["images_per_test_identity"],
                 pairs_per_fold: int = DEFAULT_SIZES["pairs_per_fold"], seed: int = 0, workers: int = 1,
                 difficulty: Optional[Mapping[str, Any]] = None,
                 num_val_identities: int = DEFAULT_SIZES["num_val_identities"],
                 images_per_val_identity: int = DEFAULT_SIZES["images_per_val_identity"],
                 val_pairs_per_fold: int = DEFAULT_SIZES["val_pairs_per_fold"]) -> None:
        if split not in SPLITS:
            raise ValueError(f"SyntheticFaceDataset: split must be one of {SPLITS}, got {split!r}")
        if split == "val" and not num_val_identities:
            raise ValueError("SyntheticFaceDataset: split 'val' needs num_val_identities > 0")
        self.manifest = ensure_synthetic_faces(
            root, workers=workers, num_train_identities=num_train_identities,
            images_per_train_identity=images_per_train_identity, num_test_identities=num_test_identities,
            images_per_test_identity=images_per_test_identity, pairs_per_fold=pairs_per_fold, seed=seed,
            difficulty=difficulty, num_val_identities=num_val_identities,
            images_per_val_identity=images_per_val_identity, val_pairs_per_fold=val_pairs_per_fold)
        split_dir = Path(root) / split
        super().__init__(str(split_dir / "images"), str(split_dir / f"{split}_list.txt"),
                         landmarks_file=str(split_dir / "landmarks.txt"))
        self.landmark_source = "generator"
        self.pairs_file = Path(root) / ("val" if split == "val" else "test") / "pairs.txt"


def render_preview(root: str | Path, out_png: str | Path, n_identities: int = 8, n_images: int = 6,
                   draw_landmarks: bool = True, split: str = "train") -> Path:
    """Tile ``n_images`` images of the first ``n_identities`` identities of ``split`` (one row per identity) into
    ``out_png``; landmarks as green dots when ``draw_landmarks``."""
    split_dir = Path(root) / split
    items = _list_by_identity(split_dir / f"{split}_list.txt")
    landmarks = read_landmark_file(split_dir / "landmarks.txt") if draw_landmarks else {}
    labels = sorted(items)[:n_identities]
    if not labels:
        raise ValueError(f"{split_dir}: no images to preview")
    tile = 112
    grid = np.full((tile * len(labels), tile * n_images, 3), 255, dtype=np.uint8)
    for row, label in enumerate(labels):
        for col, relative in enumerate(items[label][:n_images]):
            image = read_image(split_dir / "images" / relative)
            if image.shape[:2] != (tile, tile):
                image = cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA)
            image = np.ascontiguousarray(image)
            for x, y in landmarks.get(relative, []):
                cv2.circle(image, (int(round(float(x) * 4)), int(round(float(y) * 4))), 4, (0, 255, 0), -1,
                           cv2.LINE_AA, 2)
            grid[row * tile:(row + 1) * tile, col * tile:(col + 1) * tile] = image
    out_png = Path(out_png)
    write_image(out_png, grid)
    return out_png


def _list_by_identity(list_file: Path) -> Dict[int, List[str]]:
    grouped: Dict[int, List[str]] = {}
    for relative, label in read_train_list(list_file):
        grouped.setdefault(label, []).append(relative)
    return grouped


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Build the embedded synthetic face data set.")
    parser.add_argument("--out", default=DEFAULT_ROOT, help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-identities", type=int, default=DEFAULT_SIZES["num_train_identities"])
    parser.add_argument("--train-images", type=int, default=DEFAULT_SIZES["images_per_train_identity"])
    parser.add_argument("--test-identities", type=int, default=DEFAULT_SIZES["num_test_identities"])
    parser.add_argument("--test-images", type=int, default=DEFAULT_SIZES["images_per_test_identity"])
    parser.add_argument("--pairs-per-fold", type=int, default=DEFAULT_SIZES["pairs_per_fold"])
    parser.add_argument("--val-identities", type=int, default=DEFAULT_SIZES["num_val_identities"],
                        help="validation identities (0: no val split; default: %(default)s)")
    parser.add_argument("--val-images", type=int, default=DEFAULT_SIZES["images_per_val_identity"])
    parser.add_argument("--val-pairs-per-fold", type=int, default=DEFAULT_SIZES["val_pairs_per_fold"])
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--difficulty", default="{}", help="JSON overrides of Difficulty, e.g. '{\"yaw_deg\": 20}'")
    parser.add_argument("--force", action="store_true", help="rebuild even when the manifest matches")
    parser.add_argument("--preview", help="also write a preview grid PNG here")
    args = parser.parse_args(argv)
    try:
        difficulty = json.loads(args.difficulty)
    except ValueError as error:
        parser.error(f"--difficulty: not valid JSON ({error})")
    kwargs = dict(num_train_identities=args.train_identities, images_per_train_identity=args.train_images,
                  num_test_identities=args.test_identities, images_per_test_identity=args.test_images,
                  pairs_per_fold=args.pairs_per_fold, seed=args.seed, difficulty=difficulty,
                  num_val_identities=args.val_identities, images_per_val_identity=args.val_images,
                  val_pairs_per_fold=args.val_pairs_per_fold)
    start = time.perf_counter()
    if args.force:
        manifest = build_synthetic_faces(args.out, workers=args.workers, **kwargs)
    else:
        manifest = ensure_synthetic_faces(args.out, workers=args.workers, **kwargs)
    seconds = time.perf_counter() - start
    counts = manifest["counts"]
    print(f"{args.out}: {counts['train_identities']} train identities / {counts['train_images']} images, "
          f"{counts['test_identities']} test identities / {counts['test_images']} images, "
          f"{counts['folds']} folds x ({counts['pairs_per_fold']} + {counts['pairs_per_fold']}) pairs, "
          f"{counts.get('val_identities', 0)} val identities / {counts.get('val_images', 0)} images; "
          f"sha256 {manifest['sha256'][:16]}; {seconds:.1f} s with {args.workers} worker(s)")
    if args.preview:
        print(f"preview: {render_preview(args.out, args.preview)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
