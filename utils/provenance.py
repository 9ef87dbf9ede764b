"""Where a cached figure or a reused folder came from, so that neither can go stale.

One place for the digests and checks every cache and every reused folder uses:

* :func:`source_digest` — sha256 over the source files of the modules that produce a result (``"pkg.*"`` = every
  module of a package folder). A cached evaluation is keyed by it, by the weights file's sha256
  (:func:`sha256_file`) and by the device (:func:`device_label`): :func:`provenance_record` + :func:`record_digest`.
* :func:`file_checksums` / :func:`checksums_digest` / :func:`tree_digest` — per-file sha256 of a folder a builder
  writes into its manifest (``tools/align_dataset.py``: ``summary.json``; ``test_protocol/lfw/occluded_set_builder.py``:
  ``manifest.json``), and :func:`verify_checksums` / :func:`verify_folder` — what a reuse checks first: a file that
  is missing or whose bytes changed since the manifest was written is reported by name.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

REPO_ROOT = Path(__file__).resolve().parents[1]
CHUNK = 1 << 20


class StaleFolderError(ValueError):
    """A reused folder does not match its manifest (a file is missing or changed)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes (read in chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def module_files(modules: Iterable[str]) -> Dict[str, Path]:
    """``{module name: source file}`` for dotted names; ``"pkg.*"`` expands to every ``.py`` file directly in the
    package folder. An unknown module is a ``ValueError`` (a digest must never silently skip a file)."""
    found: Dict[str, Path] = {}
    for name in modules:
        package = name[:-2] if name.endswith(".*") else None
        spec = importlib.util.find_spec(package or name)
        if spec is None:
            raise ValueError(f"source digest: module {package or name!r} not found")
        if package is not None:
            if not spec.submodule_search_locations:
                raise ValueError(f"source digest: {package!r} is not a package ({name!r})")
            folder = Path(list(spec.submodule_search_locations)[0])
            for path in sorted(folder.glob("*.py")):
                found[f"{package}.{path.stem}" if path.stem != "__init__" else package] = path
        else:
            if spec.origin is None or not spec.origin.endswith(".py"):
                raise ValueError(f"source digest: module {name!r} has no Python source file ({spec.origin})")
            found[name] = Path(spec.origin)
    return dict(sorted(found.items()))


def source_digest(modules: Iterable[str]) -> str:
    """sha256 over ``name NUL sha256(source)`` of every module (sorted by name): changes with any byte of them."""
    digest = hashlib.sha256()
    for name, path in module_files(modules).items():
        digest.update(f"{name}\0{sha256_file(path)}\n".encode("utf-8"))
    return digest.hexdigest()


def object_modules(objects: Iterable[Any]) -> List[str]:
    """The repository modules defining the classes of ``objects`` (e.g. every sub-module of a model:
    ``object_modules(model.modules())``); library classes (torch, numpy, ...) are left out."""
    names = set()
    for obj in objects:
        name = type(obj).__module__
        spec = importlib.util.find_spec(name) if name and name != "__main__" else None
        origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
        if origin is not None and origin.is_relative_to(REPO_ROOT) and not {"site-packages", ".venv"} & set(
                origin.relative_to(REPO_ROOT).parts):
            names.add(name)
    return sorted(names)


def device_label(device: Any) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H200)``: the device string plus the GPU model when it is a CUDA device."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def provenance_record(modules: Iterable[str], weights: Optional[str | Path] = None, device: Any = None,
                      **extra: Any) -> Dict[str, Any]:
    """What a cached result depends on: the producing code's digest (and its module list), the weights file's
    sha256, the device, the torch version and any ``extra`` (JSON-serialisable) settings."""
    import torch

    modules = sorted(set(modules))
    record: Dict[str, Any] = {"code_sha256": source_digest(modules), "modules": modules,
                              "weights_sha256": sha256_file(weights) if weights is not None else None,
                              "device": device_label(device) if device is not None else None,
                              "torch": torch.__version__}
    record.update(extra)
    return record


def record_digest(record: Mapping[str, Any], length: int = 16) -> str:
    """Short sha256 of a JSON-serialisable record (keys sorted): a cache file name."""
    return sha256_bytes(json.dumps(record, sort_keys=True, default=str).encode("utf-8"))[:length]


def file_checksums(root: str | Path, files: Optional[Iterable[str]] = None, exclude: Sequence[str] = ()
                   ) -> Dict[str, str]:
    """``{relative posix path: sha256}`` of ``files`` under ``root`` (default: every file below it, recursively),
    sorted; ``exclude`` lists relative paths to leave out (e.g. the manifest itself)."""
    root = Path(root)
    if files is None:
        files = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return {name: sha256_file(root / name) for name in sorted(set(files)) if name not in exclude}


def checksums_digest(checksums: Mapping[str, str]) -> str:
    """One sha256 over ``path NUL sha256`` lines (sorted): equals :func:`tree_digest` of the same files."""
    digest = hashlib.sha256()
    for name in sorted(checksums):
        digest.update(f"{name}\0{checksums[name]}\n".encode("utf-8"))
    return digest.hexdigest()


def tree_digest(root: str | Path, exclude: Sequence[str] = ()) -> str:
    """sha256 over every file's relative path and sha256 under ``root`` (sorted; ``exclude`` by relative path)."""
    return checksums_digest(file_checksums(root, exclude=exclude))


def first_few(items: Sequence[str], limit: int = 3) -> str:
    """``a, b, c (and N more)``: the first ``limit`` items of a problem list, for one-line error messages."""
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def verify_checksums(root: str | Path, checksums: Mapping[str, str]) -> List[str]:
    """Problems of ``root`` against recorded ``checksums``: ``"<path>: missing"`` / ``"<path>: changed"``."""
    root = Path(root)
    problems = []
    for name, expected in sorted(checksums.items()):
        path = root / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != expected:
            problems.append(f"{name}: changed")
    return problems


def verify_folder(root: str | Path, checksums: Mapping[str, str], manifest: str = "its manifest") -> None:
    """Raise :class:`StaleFolderError` naming the first files of ``root`` that do not match ``checksums``."""
    problems = verify_checksums(root, checksums)
    if problems:
        raise StaleFolderError(f"{root} does not match {manifest}: {first_few(problems)}")


def read_manifest(path: str | Path) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """``(manifest, None)`` for a readable JSON manifest, else ``(None, why not)`` — for reuse checks."""
    path = Path(path)
    if not path.is_file():
        return None, f"no {path.name}"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except ValueError as error:
        return None, f"{path.name} is not valid JSON ({error})"
