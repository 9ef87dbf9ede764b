"""Build an occluded or cropped copy of a pair-verification test set, deterministically from a seed.

Input: an images root, the 5-point landmarks of its images (a landmark file, or a declared template) and a pairs
file. Output folder::

    <out>/images/<same relative paths>   occluded images re-encoded in their own format; the others copied byte-for-byte
    <out>/pairs.txt                      the source pairs file, byte-identical
    <out>/image_list.txt                 every image of the pairs, one relative path per line (sorted)
    <out>/landmarks.txt                  their landmarks (unchanged: occlusion keeps the geometry)
    <out>/occlusions.txt                 ``relative/path kind`` (``none`` = copied unchanged)
    <out>/hidden_fraction.txt            ``relative/path fraction`` per occluded image (see ``hidden_fraction``)
    <out>/manifest.json                  seed, parameters, source checksums, per-pair counts, the sha256 of every
                                         output file (``files``; ``output_sha256`` over them) and of the code
    <out>/examples.png                   a grid of example pairs (source | output, both sides)

Which images are occluded (``side``):
- ``both``: every image of every pair.
- ``none``: no image (a byte-identical copy; a control set).
- ``one``: a pairs file names each image once, so an image cannot be occluded in one pair and clean in another.
  Images are therefore 2-coloured over the graph whose edges are the pairs (breadth-first, then greedy flips), so
  that as many pairs as possible have exactly one occluded image, preferring the *second* image of each pair.
  On a pair graph without odd cycles every pair is mixed; the manifest reports the pairs with 0 / 1 / 2 occluded
  images either way.

Every occluded image ``i`` (position in the sorted image list) uses ``numpy.random.default_rng([seed, i])`` for its
occluder kind and parameters: the same seed gives byte-identical output, whatever the number of workers.

``crowd`` cuts its faces from the other images of the same pairs (``DonorPool.from_files`` over the sorted image
list, identity = the image's folder), never of the occluded person nor of anyone that image is paired with (a
negative pair must not gain a copy of its other face); ``object_photo`` pastes photographed objects
(``data_processor/occlusion/objects.py``) — together the family ``object``, held out of the default training mix.

``art`` (family ``user_art``) pastes the RGBA art drawn in this module (``validation_art_occluders``: a striped
diagonal band and a patterned badge, warped by their 5 anchors): no GFRO preset trains on it and no test set uses it,
so the validation sets built with it (``SYNTH-VAL-ART``) stand in for occluders a model has never seen.

A folder is reused (``ensure_synthetic_occluded``, ``benchmarks.gfro_real_faces``) only when ``reuse_problem`` finds
nothing: the same settings, the same occlusion code (``CODE_MODULES``), every file as its manifest recorded it, and
the source images and landmarks it was built from unchanged.
"""
from __future__ import annotations

import argparse
import inspect
import json
import shutil
import sys
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from data_processor.image_io import encode_image, read_image, write_image
from data_processor.landmarks import TEMPLATES, read_landmark_file, write_landmark_file
from data_processor.occlusion import DRAWN_OCCLUDERS, IDENTITY_KINDS, OCCLUDERS, PARTIAL_VIEWS, DonorPool, occlude
from data_processor.occlusion.files import FileOcclusionJob, run_file_occlusion
from data_processor.occlusion.objects import identity_of_path
from data_processor.occlusion.rgba_occluder import RGBAOccluder
from utils.provenance import (checksums_digest, file_checksums, first_few, read_manifest, sha256_file, source_digest,
                              tree_digest, verify_checksums)

__all__ = ["BuildConfig", "CODE_MODULES", "HIDDEN_FRACTION_FILE", "assign_occluded", "build_occluded_set",
           "crop_cli", "ensure_synthetic_occluded", "face_box", "hidden_fraction", "read_hidden_fractions",
           "reuse_problem", "tree_digest", "validation_art_occluders"]

SIDES = ("one", "both", "none")
OCCLUSION_ALIASES: Dict[str, Tuple[str, ...]] = {
    "crop": PARTIAL_VIEWS,                                  # a random landmark-guided partial view per image
    "synthetic": DRAWN_OCCLUDERS,                           # a random drawn occluder per image
    "gfro_mix": ("mask", "eyeglasses", "sunglasses"),       # GFRO's test-set generator: uniform over these three
    "art": ("rgba",),                                       # this module's RGBA art (validation_art_occluders)
}
HIDDEN_FRACTION_FILE = "hidden_fraction.txt"
MANIFEST_VERSION = 2  # 2: per-file checksums ("files") and the code digest ("code_sha256")
# the code an occluded set depends on (its digest is recorded in manifest.json; a change means a rebuild)
CODE_MODULES = ("test_protocol.lfw.occluded_set_builder", "test_protocol.pairs_parsers", "data_processor.occlusion.*",
                "data_processor.landmarks", "data_processor.image_io")
SYNTHETIC_KINDS = ("mask", "sunglasses", "crop")
FACE_BOX_EXPAND = (0.5, 0.5, 0.8, 0.4)  # left, right, top, bottom: fractions of the landmarks' box width / height


def face_box(landmarks: np.ndarray, shape: Tuple[int, ...]) -> Tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` pixel slice bounds of the face region of an image of ``shape`` with 5 ``landmarks``.

    The box spanned by the 5 landmarks (width ``w`` = max − min x, height ``h`` = max − min y, i.e. eyes to mouth)
    is expanded to the face: ``0.5 w`` to the left and to the right, ``0.8 h`` up (brows, forehead) and ``0.4 h``
    down (chin); the bounds are floored / ceiled to whole pixels and clipped to the image. On the 112×112 ArcFace
    template this is x 20..92, y 18..109 — the face, without the background corners.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    (x_min, y_min), (x_max, y_max) = points.min(axis=0), points.max(axis=0)
    width, height = max(x_max - x_min, 1.0), max(y_max - y_min, 1.0)
    left, right, top, bottom = FACE_BOX_EXPAND
    x0 = int(np.clip(np.floor(x_min - left * width), 0, shape[1]))
    x1 = int(np.clip(np.ceil(x_max + right * width), 0, shape[1]))
    y0 = int(np.clip(np.floor(y_min - top * height), 0, shape[0]))
    y1 = int(np.clip(np.ceil(y_max + bottom * height), 0, shape[0]))
    return x0, y0, x1, y1


def hidden_fraction(visibility: np.ndarray, landmarks: np.ndarray) -> float:
    """Fraction of the face region hidden by an occluder: ``1 − mean(visibility > 0)`` over the pixels of
    :func:`face_box` (``visibility``: the occluder's H×W mask, 1 = visible). 0 for an unoccluded image; a box that
    falls outside the image counts as fully visible (0)."""
    x0, y0, x1, y1 = face_box(landmarks, visibility.shape)
    region = np.asarray(visibility)[y0:y1, x0:x1]
    return float(1.0 - np.count_nonzero(region) / region.size) if region.size else 0.0


def read_hidden_fractions(path: str | Path) -> Dict[str, float]:
    """``hidden_fraction.txt`` → ``{relative/path: fraction}`` (images it does not list are unoccluded: 0)."""
    table: Dict[str, float] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            name, _, value = line.rpartition(" ")
            if not name:
                raise ValueError(f"{path}:{number}: expected 'relative/path fraction', got {line!r}")
            table[name] = float(value)
    return table


def _art_canvas(draw: Any) -> RGBAOccluder:
    """An RGBA art drawn at 2× the 112×112 ArcFace template, anchored on the template's 5 points."""
    from data_processor.landmarks import ARCFACE_TEMPLATE_112

    colour = np.zeros((224, 224, 3), dtype=np.uint8)
    alpha = np.zeros((224, 224), dtype=np.uint8)
    name = draw(colour, alpha)
    art = np.dstack([colour, alpha])
    return RGBAOccluder(art, np.asarray(ARCFACE_TEMPLATE_112, dtype=np.float64) * 2.0, name=name)


def _draw_band(colour: np.ndarray, alpha: np.ndarray) -> str:
    band = np.array([[20, 70], [70, 40], [210, 170], [170, 205]], dtype=np.int32)  # forehead-left to chin-right
    cv2.fillPoly(alpha, [band], 245)
    colour[:] = (40, 120, 200)
    for offset in range(-224, 224, 14):  # diagonal stripes
        cv2.line(colour, (offset, 0), (offset + 224, 224), (235, 235, 90), 4)
    return "val_band"


def _draw_badge(colour: np.ndarray, alpha: np.ndarray) -> str:
    centre = (150, 125)  # over the right eye and cheek
    cv2.circle(alpha, centre, 52, 240, -1)
    colour[:] = (150, 40, 150)
    for radius, shade in ((52, (150, 40, 150)), (38, (250, 250, 250)), (24, (30, 160, 60)), (10, (250, 200, 0))):
        cv2.circle(colour, centre, radius, shade, -1)
    return "val_badge"


def validation_art_occluders() -> List[RGBAOccluder]:
    """The in-repo RGBA art of kind ``art`` (family ``user_art``): a striped diagonal band and a patterned
    badge. Drawn here (not files), so a validation set built from them depends on this module's code only."""
    return [_art_canvas(_draw_band), _art_canvas(_draw_badge)]


@dataclass
class HiddenFractionJob(FileOcclusionJob):
    """:class:`FileOcclusionJob` that also returns each image's :func:`hidden_fraction` (same pixels, same
    random draws): ``(index, name, occlude?)`` → ``(name, kind or "none", fraction)``."""

    def __call__(self, task: Tuple[int, str, bool]) -> Tuple[str, str, float]:  # type: ignore[override]
        index, name, occluded = task
        source, target = self.source_root / name, self.target_root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not occluded:
            shutil.copyfile(source, target)
            return name, "none", 0.0
        rng = np.random.default_rng([self.seed, index])
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        extra = {}
        if kind in IDENTITY_KINDS:
            extra["identity"] = self.identities[name] if self.identities is not None else identity_of_path(name)
        noisy, visibility = occlude(read_image(source), self.landmarks[name], kind, rng,
                                    **self.kind_params.get(kind, {}), **extra)
        target.write_bytes(encode_image(noisy, target.suffix or ".png"))
        return name, kind, hidden_fraction(visibility, self.landmarks[name])


@dataclass
class BuildConfig:
    """Everything that determines the output (recorded in the manifest)."""

    source: str
    pairs: str
    occlusion: str
    side: str = "both"
    seed: int = 0
    fill: str = "zero"
    pairs_format: str = "lfw"
    image_ext: str = ".jpg"
    landmarks: Optional[str] = None
    template: Optional[str] = None
    params: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    examples: int = 8


def resolve_kinds(occlusion: str) -> Tuple[str, ...]:
    """An alias (crop, synthetic, gfro_mix), one OCCLUDERS name, or a comma-separated list of names."""
    if occlusion in OCCLUSION_ALIASES:
        return OCCLUSION_ALIASES[occlusion]
    kinds = tuple(name.strip() for name in occlusion.split(",") if name.strip())
    unknown = [name for name in kinds if name not in OCCLUDERS or name in ("clean", "rgba")]
    if not kinds or unknown:
        raise ValueError(f"--occlusion: unknown kind(s) {unknown or [occlusion]}; use an alias "
                         f"({', '.join(OCCLUSION_ALIASES)}) or names from: "
                         f"{', '.join(n for n in OCCLUDERS.names() if n not in ('clean', 'rgba'))}")
    return kinds


def images_root(source: Path) -> Path:
    """``<source>/images`` when it exists (synthetic-faces layout), else ``source`` itself (aligned-LFW layout)."""
    return source / "images" if (source / "images").is_dir() else source


def read_pairs(pairs_file: Path, pairs_format: str, image_ext: str) -> Any:
    """The pairs file through the protocol's registered parser (``PAIRS_PARSERS``)."""
    from test_protocol import PAIRS_PARSERS

    return PAIRS_PARSERS.get(pairs_format)(pairs_file, image_ext=image_ext)


def load_landmarks(config: BuildConfig, root: Path, images: Sequence[str]) -> Dict[str, np.ndarray]:
    """Landmarks of every image: from the landmark file (keys relative to the images root, optionally prefixed
    ``images/``), or the declared template scaled to each image's size."""
    if config.template is not None:
        if config.template not in TEMPLATES:
            raise ValueError(f"--template: unknown template {config.template!r}; known: {', '.join(TEMPLATES)}")
        template = TEMPLATES[config.template]
        template_height, template_width = (float(v) for v in config.template.rsplit("_", 1)[1].split("x"))
        result = {}
        for name in images:
            height, width = read_image(root / name).shape[:2]
            result[name] = template * np.array([width / template_width, height / template_height], dtype=np.float32)
        return result
    path = Path(config.landmarks) if config.landmarks else Path(config.source) / "landmarks.txt"
    if not path.is_file():
        raise FileNotFoundError(f"landmark file not found: {path} (pass --landmarks FILE, or --template NAME to "
                                f"declare a template for aligned faces)")
    table = read_landmark_file(path)
    result, missing = {}, []
    for name in images:
        points = table.get(name, table.get(f"images/{name}"))
        if points is None:
            missing.append(name)
        else:
            result[name] = points
    if missing:
        raise ValueError(f"{path}: no landmarks for {len(missing)} image(s) of the pairs, first: {missing[:3]}")
    return result


def assign_occluded(first: np.ndarray, second: np.ndarray, num_images: int, side: str) -> np.ndarray:
    """Boolean per image: is it occluded? (see the module docstring for the ``one`` policy)."""
    if side not in SIDES:
        raise ValueError(f"--side must be one of {SIDES}, got {side!r}")
    if side == "both":
        return np.ones(num_images, dtype=bool)
    if side == "none":
        return np.zeros(num_images, dtype=bool)
    neighbours: List[List[int]] = [[] for _ in range(num_images)]
    for a, b in zip(first.tolist(), second.tolist()):
        if a != b:
            neighbours[a].append(b)
            neighbours[b].append(a)
    colour = np.full(num_images, -1, dtype=np.int64)
    component = np.full(num_images, -1, dtype=np.int64)
    for start in range(num_images):  # breadth-first 2-colouring, components in first-seen order
        if colour[start] >= 0:
            continue
        colour[start], component[start] = 0, start
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for other in neighbours[node]:
                if colour[other] < 0:
                    colour[other], component[other] = 1 - colour[node], start
                    queue.append(other)
    for _ in range(100):  # greedy flips repair odd cycles: flip a node when more of its pairs become mixed
        changed = False
        for node in range(num_images):
            same = sum(colour[other] == colour[node] for other in neighbours[node])
            if 2 * same > len(neighbours[node]):
                colour[node] = 1 - colour[node]
                changed = True
        if not changed:
            break
    # Per component, occlude the colour that sits on the second side of more mixed pairs.
    votes = Counter()
    for a, b in zip(first.tolist(), second.tolist()):
        if colour[a] != colour[b]:
            votes[component[b]] += 1 if colour[b] == 1 else -1
    flip = np.array([votes[c] < 0 for c in component.tolist()], dtype=bool)
    return (colour == 1) ^ flip


def _images_digest(root: Path, images: Sequence[str]) -> str:
    return checksums_digest(file_checksums(root, images))


def _kind_params(kind: str, fill: str, params: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    options: Dict[str, Any] = {}
    if "fill" in inspect.signature(OCCLUDERS.get(kind)).parameters:
        options["fill"] = fill
    options.update(params.get(kind, {}))
    return options


def _paired_identities(pairs: Any) -> Dict[str, Tuple[str, ...]]:
    """Per image: its own identity and those of every image it is paired with (crowd donors avoid them all)."""
    linked: Dict[str, set] = {name: {identity_of_path(name)} for name in pairs.images}
    for a, b in zip(pairs.first.tolist(), pairs.second.tolist()):
        first, second = pairs.images[a], pairs.images[b]
        linked[first].add(identity_of_path(second))
        linked[second].add(identity_of_path(first))
    return {name: tuple(sorted(identities)) for name, identities in linked.items()}


def _examples_figure(pairs: Any, occluded: np.ndarray, root: Path, out_images: Path, count: int) -> np.ndarray:
    from data_processor.occlusion.grid import image_grid

    order = [i for i in range(len(pairs)) if occluded[pairs.first[i]] or occluded[pairs.second[i]]]
    order = order or list(range(len(pairs)))
    order = order[::max(1, len(order) // max(1, count))][:max(1, count)]  # spread over folds, same and different
    rows = []
    for i in order:
        a, b = pairs.images[pairs.first[i]], pairs.images[pairs.second[i]]
        rows.append([read_image(root / a), read_image(out_images / a), read_image(root / b),
                     read_image(out_images / b)])
    labels = [f"pair {i + 1} {'same' if pairs.issame[i] else 'diff'}" for i in order]
    return image_grid(rows, labels, ["source A", "output A", "source B", "output B"])


def build_occluded_set(config: BuildConfig, out: str | Path, workers: int = 1, overwrite: bool = False) -> Path:
    """Build the set described by ``config`` into ``out`` (written to a temporary sibling, then renamed)."""
    out = Path(out)
    kinds = resolve_kinds(config.occlusion)
    for kind in config.params:
        if kind not in kinds:
            raise ValueError(f"--params: kind {kind!r} is not one of the occlusion kinds {kinds}")
    source, pairs_file = Path(config.source), Path(config.pairs)
    root = images_root(source)
    pairs = read_pairs(pairs_file, config.pairs_format, config.image_ext)
    missing = [name for name in pairs.images if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{pairs_file}: {len(missing)} image(s) of the pairs are missing under {root}, "
                                f"first: {missing[:3]}")
    images = sorted(pairs.images)
    landmarks = load_landmarks(config, root, images)
    occluded_by_pair_index = assign_occluded(pairs.first, pairs.second, len(pairs.images), config.side)
    occluded = {pairs.images[i]: bool(flag) for i, flag in enumerate(occluded_by_pair_index)}
    if out.exists() and any(out.iterdir()):
        if not overwrite or not (out / "manifest.json").is_file():
            raise FileExistsError(f"{out} exists and is not empty (pass --overwrite to replace a previous build; "
                                  f"only folders holding a manifest.json are replaced)")
    staging = out.with_name(out.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    out_images = staging / "images"
    out_images.mkdir(parents=True)
    kind_params = {k: _kind_params(k, config.fill, config.params) for k in kinds}
    if "crowd" in kind_params:  # donors: the other images of this set, read when drawn
        kind_params["crowd"]["donors"] = DonorPool.from_files(root, images, landmarks)
    if "rgba" in kind_params and "occluder" not in kind_params["rgba"]:  # the module's own art (kind "art")
        kind_params["rgba"]["occluder"] = validation_art_occluders()
    job = HiddenFractionJob(source_root=root, target_root=out_images, seed=int(config.seed), kinds=kinds,
                            kind_params=kind_params, landmarks=landmarks, identities=_paired_identities(pairs))
    tasks = [(index, name, occluded[name]) for index, name in enumerate(images)]
    results = run_file_occlusion(job, tasks, workers)
    fractions = [(name, fraction) for name, kind, fraction in results if kind != "none"]
    results = [(name, kind) for name, kind, _ in results]
    shutil.copyfile(pairs_file, staging / "pairs.txt")
    (staging / "image_list.txt").write_text("".join(f"{name}\n" for name in images), encoding="utf-8")
    (staging / "occlusions.txt").write_text("".join(f"{name} {kind}\n" for name, kind in results), encoding="utf-8")
    (staging / HIDDEN_FRACTION_FILE).write_text("".join(f"{name} {fraction:.6f}\n" for name, fraction in fractions),
                                                encoding="utf-8")
    write_landmark_file(staging / "landmarks.txt", {name: landmarks[name] for name in images})
    write_image(staging / "examples.png", _examples_figure(pairs, occluded_by_pair_index, root, out_images,
                                                             config.examples))
    per_pair = Counter(int(occluded_by_pair_index[a]) + int(occluded_by_pair_index[b])
                       for a, b in zip(pairs.first.tolist(), pairs.second.tolist()))
    manifest = {
        "version": MANIFEST_VERSION,
        "config": asdict(config),
        "kinds": list(kinds),
        "source": {"pairs_sha256": sha256_file(pairs_file), "images_sha256": _images_digest(root, images),
                   "landmarks_sha256": (sha256_file(Path(config.landmarks or source / "landmarks.txt"))
                                        if config.template is None else None)},
        "counts": {"pairs": len(pairs), "images": len(images),
                   "occluded_images": int(sum(kind != "none" for _, kind in results)),
                   "pairs_by_occluded_sides": {str(k): per_pair.get(k, 0) for k in (0, 1, 2)},
                   "kinds": dict(sorted(Counter(kind for _, kind in results).items()))},
        "hidden_fraction": {"file": HIDDEN_FRACTION_FILE, "images": len(fractions),
                            "mean": round(float(np.mean([f for _, f in fractions])), 6) if fractions else 0.0},
        "libraries": {"numpy": np.__version__, "opencv": cv2.__version__},
        "code_sha256": source_digest(CODE_MODULES),
    }
    files = file_checksums(staging, exclude=("manifest.json",))
    manifest.update(output_sha256=checksums_digest(files), files=files)
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def reuse_problem(out: str | Path, config: BuildConfig, needed: Optional[Sequence[str]] = None,
                  keys: Optional[Sequence[str]] = None) -> Optional[str]:
    """Why the build in ``out`` cannot stand for ``config`` (None: it can be reused). Checked in this order: a
    manifest, the same settings (``keys`` of the config, default all), the same occlusion code, every output file as
    the manifest recorded it, the source images (``config.source``) and landmarks it was built from unchanged, and
    every image of ``needed`` (default: the manifest's own image list) present."""
    out = Path(out)
    manifest, problem = read_manifest(out / "manifest.json")
    if manifest is None:
        return problem
    recorded, wanted = manifest.get("config", {}), json.loads(json.dumps(asdict(config)))
    changed = [key for key in (keys or list(wanted)) if recorded.get(key) != wanted[key]]
    if changed:
        return "other settings: " + ", ".join(f"{key} {recorded.get(key)!r} (wanted {wanted[key]!r})"
                                              for key in changed)
    if "files" not in manifest or "code_sha256" not in manifest:
        return "manifest.json has no per-file checksums or code digest (written by an older version)"
    if manifest["code_sha256"] != source_digest(CODE_MODULES):
        return f"the occlusion code changed since it was built ({', '.join(CODE_MODULES)})"
    problems = verify_checksums(out, manifest["files"])
    if problems:
        return f"does not match its manifest.json: {first_few(problems)}"
    source = Path(config.source)
    root = images_root(source)
    listed = (out / "image_list.txt").read_text(encoding="utf-8").split()
    missing = [name for name in listed if not (root / name).is_file()]
    if missing:
        return f"{len(missing)} of its source images are missing under {root}, first: {missing[:3]}"
    if _images_digest(root, listed) != manifest.get("source", {}).get("images_sha256"):
        return f"its source images under {root} changed since it was built"
    if config.template is None:
        landmarks = Path(config.landmarks or source / "landmarks.txt")
        if not landmarks.is_file() or sha256_file(landmarks) != manifest["source"].get("landmarks_sha256"):
            return f"its source landmarks {landmarks} changed since it was built"
    absent = [name for name in (needed or ()) if not (out / "images" / name).is_file()]
    if absent:
        return f"{len(absent)} image(s) of the scored pairs are not in it, first: {absent[:3]}"
    return None


def ensure_synthetic_occluded(source: str | Path, out_root: str | Path, kinds: Sequence[str] = SYNTHETIC_KINDS,
                              seed: int = 0, side: str = "both") -> List[Path]:
    """Build ``<out_root>/<kind>`` from the embedded synthetic test (or val) faces (``images/``, ``landmarks.txt``,
    ``pairs.txt`` under ``source``) for every kind whose folder cannot be reused (``reuse_problem``)."""
    source, out_root = Path(source), Path(out_root)
    built = []
    for kind in kinds:
        config = BuildConfig(source=str(source), pairs=str(source / "pairs.txt"), occlusion=kind, side=side,
                             seed=seed, image_ext=".png")
        out = out_root / kind
        problem = reuse_problem(out, config)
        if problem is None:
            built.append(out)
            continue
        if out.exists():
            print(f"rebuilding {out}: {problem}", file=sys.stderr, flush=True)
        built.append(build_occluded_set(config, out, overwrite=True))
    return built


def parse_args(argv: Optional[Sequence[str]], description: str, defaults: Mapping[str, Any]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True,
                        help="aligned images root (or a folder holding images/ and landmarks.txt)")
    parser.add_argument("--pairs", required=True, help="the source pairs file")
    parser.add_argument("--out", required=True, help="output folder (images/, pairs.txt, manifest.json, ...)")
    parser.add_argument("--occlusion", default=defaults.get("occlusion", "mask"),
                        help=f"occluder kind (e.g. mask, object_photo, crowd), comma list, or alias "
                             f"({', '.join(OCCLUSION_ALIASES)})")
    parser.add_argument("--side", choices=SIDES, default=defaults.get("side", "both"),
                        help="which images of the pairs are occluded (see the module docstring)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fill", default=defaults.get("fill", "zero"),
                        help="fill of partial views / shapes: zero | mean | noise | blur | white | random")
    parser.add_argument("--pairs-format", default=defaults.get("pairs_format", "lfw"),
                        help="pairs parser name (test_protocol.PAIRS_PARSERS: lfw, rfw, calfw, cplfw, ...)")
    parser.add_argument("--image-ext", default=defaults.get("image_ext", ".jpg"),
                        help="image extension the LFW-style pairs names get")
    parser.add_argument("--landmarks", help="landmark file (default: <source>/landmarks.txt)")
    parser.add_argument("--template", choices=sorted(TEMPLATES),
                        help="declare that the faces are aligned to this template (instead of a landmark file)")
    parser.add_argument("--params", default="{}", help='per-kind occluder options as JSON, e.g. '
                                                       '\'{"block": {"area_ratio": [0.2, 0.3]}}\'')
    parser.add_argument("--examples", type=int, default=8, help="pairs shown in examples.png")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true", help="replace a previous build in --out")
    return parser.parse_args(argv)


def crop_cli(argv: Optional[Sequence[str]], description: str, **defaults: Any) -> Path:
    """Command line shared by crop_lfw_random / crop_calfw_random / crop_cplfw_random (their ``main``)."""
    args = parse_args(argv, description, defaults)
    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as error:
        raise ValueError(f"--params: not valid JSON ({error})") from None
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise ValueError('--params: expected a JSON object of {kind: {option: value}}')
    config = BuildConfig(source=args.source, pairs=args.pairs, occlusion=args.occlusion, side=args.side,
                         seed=args.seed, fill=args.fill, pairs_format=args.pairs_format, image_ext=args.image_ext,
                         landmarks=args.landmarks, template=args.template, params=params, examples=args.examples)
    out = build_occluded_set(config, args.out, workers=args.workers, overwrite=args.overwrite)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    counts = manifest["counts"]
    print(f"wrote {out}: {counts['images']} images ({counts['occluded_images']} occluded: {counts['kinds']}), "
          f"{counts['pairs']} pairs by occluded sides {counts['pairs_by_occluded_sides']}, "
          f"sha256 {manifest['output_sha256'][:16]}")
    return out
