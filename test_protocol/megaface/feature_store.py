"""Features on disk and chunked similarity search: what makes 1M-distractor protocols fit in memory.

- ``write_store(folder, names, chunks)``: ``features.npy`` (float16, ``[N, D]``, written through a memory map, one
  chunk at a time, each row L2-normalised unless it is all zero) + ``manifest.json`` (``count``, ``dim``,
  ``dtype``, ``names`` in row order, ``sha256`` of the names). ``open_store(folder)`` memory-maps it read-only.
- ``chunked_search(queries, gallery, k, ...)``: cosine (dot product; queries are normalised here, the gallery is
  taken as stored) of every query against the gallery, ``chunk`` gallery rows at a time (a float32 copy of one
  chunk, matmul on ``device`` — the GPU when there is one), keeping per query the top-``k`` scores and indices and,
  optionally, the ``global_k`` largest scores over all (query, gallery) pairs (what TAR at a tiny FAR needs). The
  full ``[Q, N]`` matrix never exists; memory is ``O(Q·chunk + Q·k)``.
"""
from __future__ import annotations

import hashlib
import json
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch

from utils.progress import progress

FEATURES = "features.npy"
MANIFEST = "manifest.json"
DEFAULT_CHUNK = 65536


def peak_memory_mib() -> float:
    """Peak resident memory of this process in MiB (``resource.getrusage``; kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def names_sha256(names: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()[:12]


def normalise_rows(rows: np.ndarray) -> np.ndarray:
    """L2-normalised float32 rows; an all-zero row stays zero (a removed noise image)."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def write_store(folder: Union[str, Path], names: Sequence[str], chunks: Iterable[np.ndarray], dim: int,
                normalise: bool = True, extra: Optional[dict] = None) -> Path:
    """Write ``chunks`` (consecutive row blocks, ``len(names)`` rows in all) as a float16 store; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    features = np.lib.format.open_memmap(folder / FEATURES, mode="w+", dtype=np.float16, shape=(len(names), dim))
    start = 0
    for block in chunks:
        block = normalise_rows(block) if normalise else np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[1] != dim or start + len(block) > len(names):
            raise ValueError(f"{folder}: chunk of shape {block.shape} does not fit [{len(names)}, {dim}] "
                             f"at row {start}")
        features[start:start + len(block)] = block.astype(np.float16)
        start += len(block)
    if start != len(names):
        raise ValueError(f"{folder}: got {start} feature rows for {len(names)} names")
    features.flush()
    del features
    manifest = {"count": len(names), "dim": dim, "dtype": "float16", "normalised": normalise,
                "names_sha256": names_sha256(names), **(extra or {}), "names": list(names)}
    (folder / MANIFEST).write_text(json.dumps(manifest) + "\n", encoding="utf-8")
    return folder


@dataclass
class FeatureStore:
    folder: Path
    features: np.ndarray  # memory-mapped float16 [N, D]
    names: list
    manifest: Optional[dict] = None

    def __len__(self) -> int:
        return len(self.names)


def open_store(folder: Union[str, Path]) -> FeatureStore:
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    features = np.load(folder / FEATURES, mmap_mode="r")
    if features.shape != (manifest["count"], manifest["dim"]) or features.dtype != np.float16:
        raise ValueError(f"{folder}: {FEATURES} is {features.dtype}{list(features.shape)}, the manifest says "
                         f"float16[{manifest['count']}, {manifest['dim']}]")
    if names_sha256(manifest["names"]) != manifest["names_sha256"]:
        raise ValueError(f"{folder}: manifest names do not match their checksum")
    return FeatureStore(folder, features, manifest["names"], {k: v for k, v in manifest.items() if k != "names"})


class Rows:
    """``features[rows]`` without copying it: slicing reads only the selected rows (a distractor list's subset of
    a larger store, e.g. the 10k list out of the 1M store)."""

    def __init__(self, features: np.ndarray, rows: np.ndarray) -> None:
        self.features, self.rows = features, np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: slice) -> np.ndarray:
        return np.asarray(self.features[self.rows[index]])


def store_rows(store: "FeatureStore", names: Sequence[str]) -> np.ndarray:
    """Row of each of ``names`` in ``store``; KeyError naming the count and the first missing names."""
    position = {name: row for row, name in enumerate(store.names)}
    missing = [name for name in names if name not in position]
    if missing:
        raise KeyError(f"{store.folder}: {len(missing)} of {len(names)} images have no stored feature, "
                       f"first: {missing[:3]}")
    return np.asarray([position[name] for name in names], dtype=np.int64)


@dataclass
class SearchResult:
    scores: np.ndarray       # [Q, k] float32, descending
    indices: np.ndarray      # [Q, k] int64 gallery rows
    global_top: np.ndarray   # [global_k] float32, descending: the largest query×gallery scores over all pairs
    seconds: float = 0.0


def chunked_search(queries: Union[np.ndarray, torch.Tensor], gallery: np.ndarray, k: int, global_k: int = 0,
                   chunk: int = DEFAULT_CHUNK, device: Union[str, torch.device] = "cpu", desc: str = "search",
                   zero_rows: Optional[np.ndarray] = None) -> SearchResult:
    """Top-``k`` per query and the ``global_k`` largest scores over ``queries`` × ``gallery`` (see the module doc).

    ``zero_rows``: gallery rows to treat as the zero vector (score 0), e.g. distractor noise, without rewriting the
    store.
    """
    import time

    begin = time.monotonic()
    device = torch.device(device)
    query = torch.nn.functional.normalize(torch.as_tensor(np.asarray(queries, dtype=np.float32)), dim=1).to(device)
    count = len(gallery)
    k = min(k, count)
    best_scores = torch.full((len(query), 0), float("-inf"), device=device)
    best_index = torch.zeros((len(query), 0), dtype=torch.long, device=device)
    top = torch.zeros(0, device=device)
    zero_sorted = np.sort(np.asarray(zero_rows, dtype=np.int64)) if zero_rows is not None else None
    for start in progress(range(0, count, chunk), desc=desc, unit="chunk"):
        stop = min(start + chunk, count)
        block = torch.from_numpy(np.asarray(gallery[start:stop], dtype=np.float32)).to(device)
        if zero_sorted is not None and zero_sorted.size:
            inside = zero_sorted[(zero_sorted >= start) & (zero_sorted < stop)] - start
            block[torch.from_numpy(inside).to(device)] = 0.0
        scores = query @ block.T
        part_scores, part_index = scores.topk(min(k, stop - start), dim=1)
        merged = torch.cat([best_scores, part_scores], dim=1)
        merged_index = torch.cat([best_index, part_index + start], dim=1)
        best_scores, order = merged.topk(min(k, merged.shape[1]), dim=1)
        best_index = merged_index.gather(1, order)
        if global_k > 0:
            flat = scores.reshape(-1)
            top = torch.cat([top, flat.topk(min(global_k, flat.numel())).values]).topk(
                min(global_k, top.numel() + min(global_k, flat.numel()))).values
        del scores, block
    return SearchResult(best_scores.cpu().numpy(), best_index.cpu().numpy(), top.cpu().numpy(),
                        time.monotonic() - begin)
