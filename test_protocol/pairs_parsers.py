"""Pairs-file parsers for the LFW-style protocols. Each returns a ``PairList`` with pairs in fold order.

Registered in ``PAIRS_PARSERS`` and called as ``parser(pairs_file, image_ext=".jpg", num_folds=10)``:

- ``lfw``: official LFW ``pairs.txt`` — header ``folds per_fold``, then per fold ``per_fold`` lines ``name i j``
  (same person) and ``per_fold`` lines ``name1 i name2 j``; images ``name/name_%04d<ext>``. The GFRO LFW-format
  conversions of CALFW/CPLFW/MeGlass use the same layout.
- ``rfw``: the same line forms without the header (RFW's per-race files).
- ``calfw`` / ``cplfw``: the official two-line files — one ``image_name label`` line per image, two lines per pair,
  all positive pairs first (CALFW: any non-zero label; CPLFW: 1), then all negatives (label 0). Fold ``k`` is
  positives ``[k·m, (k+1)·m)`` followed by negatives ``[k·m, (k+1)·m)`` with ``m = pairs / 2 / folds``.
- ``agedb_mat``: AgeDB-30's ``04_FINAL_protocol_30_years.mat`` — ``splits``: 10 folds, each a struct whose first
  field is a 2×600 cell of image names (no extension) and whose second field holds labels ±1.
- ``bin``: an insightface ``.bin`` (images inside the file; pairs ``(2i, 2i+1)`` in file order).
- ``cfp``: the official CFP protocol — ``pairs_file`` is ``<cfp>/Protocol/Split/FF`` or ``.../FP``; its folds
  ``01``..``10`` hold ``same.txt`` / ``diff.txt`` lines ``i,j`` (1-based indices into ``Protocol/Pair_list_F.txt``,
  the second into ``Pair_list_P.txt`` for FP), whose lines are ``index ../Data/Images/<id>/<view>/<k>.jpg``; image
  keys are relative to ``<cfp>`` (``Data/Images/...``), so ``root`` is the data set folder or an aligned copy of it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from data_processor.verification_bin import read_verification_bin
from test_protocol import PAIRS_PARSERS
from utils.text_files import read_fields


@dataclass
class PairList:
    """Pairs in fold order: ``images`` (unique keys, root-relative paths), index arrays and labels."""

    images: List[str]
    first: np.ndarray
    second: np.ndarray
    issame: np.ndarray
    source: str
    num_folds: Optional[int] = None          # folds defined by the file itself (LFW header), if any
    encoded: Optional[List[bytes]] = field(default=None, repr=False)  # .bin: the encoded images, one per key

    def __len__(self) -> int:
        return len(self.issame)


def pair_list_from_names(names: Sequence[Tuple[str, str, bool]], source: str,
                         num_folds: Optional[int] = None) -> PairList:
    """Build a ``PairList`` from ``(path_a, path_b, issame)`` triples, deduplicating images in first-seen order."""
    index: Dict[str, int] = {}
    first, second = [], []
    for path_a, path_b, _ in names:
        first.append(index.setdefault(path_a, len(index)))
        second.append(index.setdefault(path_b, len(index)))
    return PairList(images=list(index), first=np.asarray(first, dtype=np.int64),
                    second=np.asarray(second, dtype=np.int64),
                    issame=np.asarray([same for _, _, same in names], dtype=bool), source=source,
                    num_folds=num_folds)


def _read_lines(path: Path) -> List[Tuple[int, List[str]]]:
    if not path.is_file():
        raise FileNotFoundError(f"pairs file not found: {path}")
    with open(path, "r", encoding="utf-8") as handle:
        return [(line_no, line.split()) for line_no, line in enumerate(handle, 1) if line.strip()]


def _lfw_image(name: str, number: str, ext: str, where: str) -> str:
    if not number.isdigit():
        raise ValueError(f"{where}: image number must be an integer, got {number!r}")
    return f"{name}/{name}_{int(number):04d}{ext}"


def _parse_lfw_lines(lines: List[Tuple[int, List[str]]], path: Path, ext: str) -> List[Tuple[str, str, bool]]:
    pairs = []
    for line_no, fields in lines:
        where = f"{path}:{line_no}"
        if len(fields) == 3:
            pairs.append((_lfw_image(fields[0], fields[1], ext, where), _lfw_image(fields[0], fields[2], ext, where),
                          True))
        elif len(fields) == 4:
            pairs.append((_lfw_image(fields[0], fields[1], ext, where), _lfw_image(fields[2], fields[3], ext, where),
                          False))
        else:
            raise ValueError(f"{where}: expected 'name i j' or 'name1 i name2 j', got {' '.join(fields)!r}")
    if not pairs:
        raise ValueError(f"{path}: no pairs found")
    return pairs


@PAIRS_PARSERS.register("lfw")
def parse_lfw_pairs(pairs_file: str | Path, image_ext: str = ".jpg", num_folds: int = 10) -> PairList:
    """Official LFW ``pairs.txt`` (header ``folds per_fold``); checks the fold layout the header promises."""
    path = Path(pairs_file)
    lines = _read_lines(path)
    if not lines:
        raise ValueError(f"{path}: empty pairs file")
    header_no, header = lines[0]
    if len(header) != 2 or not all(value.isdigit() for value in header):
        raise ValueError(f"{path}:{header_no}: expected the header 'folds pairs_per_fold' (e.g. '10 300'), "
                         f"got {' '.join(header)!r}; use parser 'rfw' for files without a header")
    folds, per_fold = int(header[0]), int(header[1])
    pairs = _parse_lfw_lines(lines[1:], path, image_ext)
    if len(pairs) != folds * 2 * per_fold:
        raise ValueError(f"{path}: header promises {folds} folds x 2 x {per_fold} pairs = {folds * 2 * per_fold}, "
                         f"found {len(pairs)}")
    expected = np.tile(np.repeat([True, False], per_fold), folds)
    bad = np.flatnonzero(expected != np.asarray([same for _, _, same in pairs]))
    if bad.size:
        line_no = lines[1 + bad[0]][0]
        raise ValueError(f"{path}:{line_no}: each fold must list {per_fold} same-person lines, then {per_fold} "
                         f"different-person lines ({bad.size} pairs out of place)")
    return pair_list_from_names(pairs, str(path), num_folds=folds)


@PAIRS_PARSERS.register("rfw")
def parse_rfw_pairs(pairs_file: str | Path, image_ext: str = ".jpg", num_folds: int = 10) -> PairList:
    """RFW per-race pairs: LFW line forms, no header; pairs are taken in file order."""
    path = Path(pairs_file)
    return pair_list_from_names(_parse_lfw_lines(_read_lines(path), path, image_ext), str(path))


def _parse_two_line(path: Path, num_folds: int, positive_label: str) -> PairList:
    lines = _read_lines(path)
    if len(lines) % 2:
        raise ValueError(f"{path}: two lines per pair expected, found an odd number of lines ({len(lines)})")
    pairs = []
    for (line_a, fields_a), (line_b, fields_b) in zip(lines[0::2], lines[1::2]):
        for line_no, fields in ((line_a, fields_a), (line_b, fields_b)):
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                raise ValueError(f"{path}:{line_no}: expected 'image_name label', got {' '.join(fields)!r}")
        label = int(fields_a[1])
        if positive_label == "one" and label not in (0, 1):
            raise ValueError(f"{path}:{line_a}: CPLFW labels are 1 (same) or 0 (different), got {label}")
        pairs.append((fields_a[0], fields_b[0], label != 0))
    half = len(pairs) // 2
    if len(pairs) % (2 * num_folds):
        raise ValueError(f"{path}: {len(pairs)} pairs cannot form {num_folds} folds of equal positives and negatives")
    labels = np.asarray([same for _, _, same in pairs])
    if not (labels[:half].all() and not labels[half:].any()):
        first_bad = int(np.flatnonzero(labels != np.repeat([True, False], half))[0])
        raise ValueError(f"{path}:{lines[2 * first_bad][0]}: the first {half} pairs must be positive and the last "
                         f"{half} negative (official layout)")
    per_fold = half // num_folds
    ordered = []
    for fold in range(num_folds):
        ordered += pairs[fold * per_fold:(fold + 1) * per_fold]
        ordered += pairs[half + fold * per_fold:half + (fold + 1) * per_fold]
    return pair_list_from_names(ordered, str(path), num_folds=num_folds)


@PAIRS_PARSERS.register("calfw")
def parse_calfw_pairs(pairs_file: str | Path, image_ext: str = ".jpg", num_folds: int = 10) -> PairList:
    """Official CALFW two-line file (a non-zero label marks a positive pair); names carry their extension."""
    return _parse_two_line(Path(pairs_file), num_folds, positive_label="nonzero")


@PAIRS_PARSERS.register("cplfw")
def parse_cplfw_pairs(pairs_file: str | Path, image_ext: str = ".jpg", num_folds: int = 10) -> PairList:
    """Official CPLFW two-line file (labels 1/0); names carry their extension."""
    return _parse_two_line(Path(pairs_file), num_folds, positive_label="one")


def _mat_string(value: object, where: str) -> str:
    """Unwrap the nested singleton cells/structs scipy.io.loadmat returns until a string appears."""
    for _ in range(16):
        if isinstance(value, str):
            return value
        if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.size == 1:
            return str(value.reshape(-1)[0])
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.reshape(-1)[0]
        elif isinstance(value, np.void) and len(value) >= 1:
            value = value[0]
        else:
            break
    raise ValueError(f"{where}: expected an image name, got {type(value).__name__}")


def _mat_struct(value: object, where: str) -> np.void:
    for _ in range(16):
        if isinstance(value, np.void) and value.dtype.names and len(value.dtype.names) >= 2:
            return value
        if isinstance(value, np.void) and len(value) == 1:
            value = value[0]
        elif isinstance(value, np.ndarray) and value.size == 1:
            value = value.reshape(-1)[0]
        else:
            break
    raise ValueError(f"{where}: expected a struct with (pairs, labels) fields")


@PAIRS_PARSERS.register("agedb_mat")
def parse_agedb_mat(pairs_file: str | Path, image_ext: str = ".jpg", num_folds: int = 10) -> PairList:
    """AgeDB ``.mat`` protocol: ``splits`` of (2×N name cell, N labels ±1); names get ``image_ext``."""
    import scipy.io

    path = Path(pairs_file)
    if not path.is_file():
        raise FileNotFoundError(f"AgeDB protocol file not found: {path}")
    content = scipy.io.loadmat(str(path))
    if "splits" not in content:
        raise ValueError(f"{path}: no 'splits' variable (found {sorted(k for k in content if not k.startswith('_'))})")
    splits = content["splits"].reshape(-1)
    pairs = []
    for fold, split in enumerate(splits):
        where = f"{path}: splits[{fold}]"
        struct = _mat_struct(split, where)
        names, labels = np.asarray(struct[0]), np.asarray(struct[1]).reshape(-1)
        if names.ndim != 2 or names.shape[0] != 2 or names.shape[1] != labels.size:
            raise ValueError(f"{where}: expected a 2xN name cell and N labels, got {names.shape} and {labels.size}")
        for j in range(labels.size):
            if labels[j] not in (1, -1):
                raise ValueError(f"{where}: label {j} must be 1 or -1, got {labels[j]}")
            pairs.append((_mat_string(names[0, j], f"{where}[0,{j}]") + image_ext,
                          _mat_string(names[1, j], f"{where}[1,{j}]") + image_ext, bool(labels[j] == 1)))
    return pair_list_from_names(pairs, str(path), num_folds=len(splits))


@PAIRS_PARSERS.register("bin")
def parse_verification_bin(pairs_file: str | Path, image_ext: str = ".jpg", num_folds: int = 10) -> PairList:
    """insightface ``.bin``: image keys ``#<index>``; the encoded images travel in ``PairList.encoded``."""
    path = Path(pairs_file)
    images, issame = read_verification_bin(path)
    count = len(issame)
    return PairList(images=[f"#{i}" for i in range(len(images))], first=np.arange(0, 2 * count, 2),
                    second=np.arange(1, 2 * count, 2), issame=np.asarray(issame, dtype=bool), source=str(path),
                    encoded=images)


def _cfp_image_list(path: Path) -> Dict[int, str]:
    """``Pair_list_F.txt`` / ``Pair_list_P.txt``: 1-based index → path relative to the data set folder."""
    images: Dict[int, str] = {}
    for line_no, fields in read_fields(path, 2, "'index ../Data/Images/<id>/<view>/<k>.jpg'", "CFP pair list"):
        if not fields[0].isdigit():
            raise ValueError(f"{path}:{line_no}: the index must be a positive integer, got {fields[0]!r}")
        relative = fields[1].replace("\\", "/")
        images[int(fields[0])] = relative[3:] if relative.startswith("../") else relative
    return images


def _cfp_pairs(path: Path, first: Dict[int, str], second: Dict[int, str], same: bool) -> List[Tuple[str, str, bool]]:
    pairs = []
    for line_no, fields in read_fields(path, 1, "'i,j'", "CFP split file"):
        parts = fields[0].split(",")
        if len(parts) != 2 or not all(part.isdigit() for part in parts):
            raise ValueError(f"{path}:{line_no}: expected 'i,j' (two 1-based indices), got {fields[0]!r}")
        i, j = int(parts[0]), int(parts[1])
        for index, images, name in ((i, first, "first"), (j, second, "second")):
            if index not in images:
                raise ValueError(f"{path}:{line_no}: {name} index {index} is not in the CFP pair list")
        pairs.append((first[i], second[j], same))
    return pairs


@PAIRS_PARSERS.register("cfp")
def parse_cfp_pairs(pairs_file: str | Path, image_ext: str = ".jpg", num_folds: int = 10) -> PairList:
    """Official CFP-FF / CFP-FP protocol (``Protocol/Split/FF`` or ``FP``): fold k = split k, same then diff."""
    split = Path(pairs_file)
    mode = split.name.upper()
    if mode not in ("FF", "FP") or not split.is_dir():
        raise FileNotFoundError(f"CFP split folder not found or not FF/FP: {split} (expected <cfp>/Protocol/Split/FF "
                                f"or .../FP)")
    protocol = split.parent.parent
    frontal = _cfp_image_list(protocol / "Pair_list_F.txt")
    second = frontal if mode == "FF" else _cfp_image_list(protocol / "Pair_list_P.txt")
    ordered: List[Tuple[str, str, bool]] = []
    for fold in range(1, num_folds + 1):
        folder = split / f"{fold:02d}"
        same = _cfp_pairs(folder / "same.txt", frontal, second, True)
        diff = _cfp_pairs(folder / "diff.txt", frontal, second, False)
        if not same or len(same) != len(diff):
            raise ValueError(f"{folder}: expected as many same as diff pairs (350 each officially), got "
                             f"{len(same)} and {len(diff)}")
        ordered += same + diff
    return pair_list_from_names(ordered, str(split), num_folds=num_folds)
