"""insightface ``.bin`` verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...), without mxnet.

A ``.bin`` is a pickle of ``(images, issame)``: ``2·N`` encoded images (JPEG/PNG bytes) and ``N`` booleans, pair
``i`` being images ``2i`` and ``2i+1``. Pickles can run code, so reading uses a restricted unpickler: only bytes,
booleans, numbers, strings, lists and tuples are built, plus the two shapes encoded images appear in in public
copies — Python-2 ``str`` (read as bytes) and uint8 numpy arrays (rebuilt from their raw bytes by this module;
no numpy code is run on the file's data). Any other global in the pickle is refused with an error naming it.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any, List, Sequence, Tuple

import numpy as np

_NUMPY_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}


class _ArrayStub:
    """Stands in for a pickled ``numpy.ndarray``; keeps only shape, dtype and raw bytes."""

    def __init__(self) -> None:
        self.shape: Tuple[int, ...] = ()
        self.dtype: Any = None
        self.raw: Any = None

    def __setstate__(self, state: tuple) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError(f"unexpected ndarray state of length {len(state)}")
        _version, self.shape, self.dtype, _fortran, self.raw = state

    def to_bytes(self, where: str) -> bytes:
        dtype_name = getattr(self.dtype, "name", None)
        size = int(np.prod(self.shape)) if isinstance(self.shape, tuple) else -1
        if dtype_name != "u1" or not isinstance(self.raw, bytes) or size != len(self.raw):
            raise ValueError(f"{where}: only uint8 arrays of encoded image bytes are accepted, got "
                             f"dtype {dtype_name!r} shape {self.shape!r}")
        return self.raw


class _DtypeStub:
    """Stands in for a pickled ``numpy.dtype``; keeps only its type code."""

    def __init__(self, name: Any = None, *_args: Any) -> None:
        self.name = name

    def __setstate__(self, _state: Any) -> None:
        pass


class _ArrayMarker:
    """Stands in for the ``numpy.ndarray`` class argument of ``_reconstruct``."""


def _reconstruct_stub(cls: Any, _shape: Any, _typecode: Any) -> _ArrayStub:
    if cls is not _ArrayMarker:
        raise pickle.UnpicklingError("numpy _reconstruct of something other than ndarray")
    return _ArrayStub()


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """What Python 3 protocol-2 pickles call (``_codecs.encode``) to rebuild a bytes object."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} refused")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, handle: io.BufferedIOBase, source: str) -> None:
        super().__init__(handle, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_RECONSTRUCT:
            return _reconstruct_stub
        if (module, name) == ("numpy", "ndarray"):
            return _ArrayMarker
        if (module, name) == ("numpy", "dtype"):
            return _DtypeStub
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise pickle.UnpicklingError(f"{self.source}: refusing to load global '{module}.{name}' from a .bin file "
                                     "(only bytes, bools, lists and uint8 arrays are allowed)")


def _as_bytes(item: Any, where: str) -> bytes:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, _ArrayStub):
        return item.to_bytes(where)
    raise ValueError(f"{where}: expected encoded image bytes, got {type(item).__name__}")


def _as_bool(item: Any, where: str) -> bool:
    if isinstance(item, (bool, int)) and item in (0, 1):
        return bool(item)
    raise ValueError(f"{where}: expected a boolean, got {item!r}")


def read_verification_bin(path: str | Path) -> Tuple[List[bytes], List[bool]]:
    """Read a ``.bin`` set → (``2·N`` encoded images, ``N`` issame flags); refuses anything but plain data."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f".bin verification set not found: {path}")
    with open(path, "rb") as handle:
        try:
            content = _RestrictedUnpickler(handle, str(path)).load()
        except pickle.UnpicklingError:
            raise
        except Exception as exc:  # a truncated or foreign file: say which one
            raise ValueError(f"{path}: not a readable .bin pickle ({type(exc).__name__}: {exc})") from None
    if not (isinstance(content, (tuple, list)) and len(content) == 2):
        raise ValueError(f"{path}: expected a pickled (images, issame) pair, got {type(content).__name__}")
    raw_images, raw_issame = content
    if not isinstance(raw_images, (list, tuple)) or not isinstance(raw_issame, (list, tuple)):
        raise ValueError(f"{path}: images and issame must be lists")
    images = [_as_bytes(item, f"{path}: image {i}") for i, item in enumerate(raw_images)]
    issame = [_as_bool(item, f"{path}: issame[{i}]") for i, item in enumerate(raw_issame)]
    if len(images) != 2 * len(issame):
        raise ValueError(f"{path}: {len(images)} images for {len(issame)} pairs (expected 2 images per pair)")
    return images, issame


def write_verification_bin(path: str | Path, images: Sequence[bytes], issame: Sequence[bool]) -> None:
    """Write ``(images, issame)`` as a ``.bin`` set (plain bytes and bools; atomic)."""
    images = [bytes(image) for image in images]
    issame = [bool(flag) for flag in issame]
    if len(images) != 2 * len(issame):
        raise ValueError(f"write_verification_bin: {len(images)} images for {len(issame)} pairs")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        pickle.dump((images, issame), handle, protocol=4)
    os.replace(tmp, path)

