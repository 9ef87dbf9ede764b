"""insightface RecordIO training sets (``train.rec`` + ``train.idx`` + ``property``) in pure Python, no mxnet.

File layout (MXNet/dmlc RecordIO):
- ``.rec``: records, each ``magic (uint32 0xced7230a) | lrec (uint32) | payload | zero padding to 4 bytes``.
  ``lrec``'s low 29 bits are the payload length and its top 3 bits a continuation flag: 0 = whole record,
  1/2/3 = first/middle/last part of a record that was split where its payload held the magic word (the magic
  itself is dropped between parts and restored when reading).
- ``.idx``: text lines ``key<TAB>byte offset of the record``.
- payload: the "IRHeader" ``flag (uint32) | label (float32) | id (uint64) | id2 (uint64)``; when ``flag > 0``,
  ``flag`` float32 labels follow and the ``label`` field is unused. The rest is the encoded image.
- insightface layout: record 0 has labels ``(a, b)``: images are keys ``1 … a-1``, and keys ``a … b-1`` hold one
  record per identity with labels ``(first image key, end image key)``. ``property`` is ``num_classes,H,W``.
Decoded images are RGB (``image_io.decode_image``).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from data_processor import DATASETS
from data_processor.datasets import FaceDataset
from data_processor.image_io import decode_image, encode_image
from data_processor.landmarks import ARCFACE_TEMPLATE_112

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_MASK = (1 << 29) - 1
_HEADER = struct.Struct("<IfQQ")


@dataclass
class RecordHeader:
    """The IRHeader: ``label`` is a float, or a float32 array when ``flag > 0``."""

    flag: int
    label: Union[float, np.ndarray]
    id: int = 0
    id2: int = 0


def pack_record(header: RecordHeader, payload: bytes = b"") -> bytes:
    """IRHeader + optional extra labels + payload (the record's content)."""
    if isinstance(header.label, (float, int)):
        return _HEADER.pack(0, float(header.label), header.id, header.id2) + payload
    labels = np.asarray(header.label, dtype=np.float32).reshape(-1)
    return _HEADER.pack(labels.size, 0.0, header.id, header.id2) + labels.tobytes() + payload


def unpack_record(content: bytes, where: str = "record") -> Tuple[RecordHeader, bytes]:
    """Inverse of ``pack_record``."""
    if len(content) < _HEADER.size:
        raise ValueError(f"{where}: {len(content)} bytes, too short for the {_HEADER.size}-byte IRHeader")
    flag, label, id1, id2 = _HEADER.unpack_from(content)
    payload = content[_HEADER.size:]
    if flag > 0:
        if len(payload) < 4 * flag:
            raise ValueError(f"{where}: header announces {flag} labels but the record is too short")
        labels = np.frombuffer(payload[:4 * flag], dtype=np.float32).copy()
        return RecordHeader(flag, labels, id1, id2), payload[4 * flag:]
    return RecordHeader(0, float(label), id1, id2), payload


def _read_exact(handle: BinaryIO, count: int, where: str) -> bytes:
    data = handle.read(count)
    if len(data) != count:
        raise ValueError(f"{where}: truncated record ({len(data)} of {count} bytes)")
    return data


def read_record_at(handle: BinaryIO, offset: int, where: str) -> bytes:
    """Read one (possibly multi-part) record starting at ``offset``."""
    handle.seek(offset)
    parts: List[bytes] = []
    while True:
        magic, lrec = struct.unpack("<II", _read_exact(handle, 8, where))
        if magic != MAGIC:
            raise ValueError(f"{where}: bad magic 0x{magic:08x} at byte {handle.tell() - 8} (not a RecordIO file?)")
        flag, length = lrec >> 29, lrec & _LENGTH_MASK
        parts.append(_read_exact(handle, length, where))
        handle.read((4 - length % 4) % 4)
        if flag in (0, 3):
            return _MAGIC_BYTES.join(parts)
        if flag not in (1, 2):
            raise ValueError(f"{where}: invalid continuation flag {flag}")


def encode_record(content: bytes) -> bytes:
    """Bytes of one record as written to the ``.rec`` (split at 4-byte aligned occurrences of the magic word)."""
    cuts = [i for i in range(0, len(content) - 3, 4) if content[i:i + 4] == _MAGIC_BYTES]
    pieces, start = [], 0
    for number, cut in enumerate(cuts):
        pieces.append((1 if number == 0 else 2, content[start:cut]))
        start = cut + 4
    pieces.append((3 if cuts else 0, content[start:]))
    out = bytearray()
    for flag, piece in pieces:
        out += struct.pack("<II", MAGIC, (flag << 29) | len(piece)) + piece + b"\0" * ((4 - len(piece) % 4) % 4)
    return bytes(out)


def read_index(idx_path: Path) -> Dict[int, int]:
    """``.idx`` → {key: offset}; errors name the file and line."""
    if not idx_path.is_file():
        raise FileNotFoundError(f"RecordIO index not found: {idx_path}")
    index: Dict[int, int] = {}
    with open(idx_path, "r", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not all(f.isdigit() for f in fields):
                raise ValueError(f"{idx_path}:{line_no}: expected 'key<TAB>offset', got {line.strip()!r}")
            index[int(fields[0])] = int(fields[1])
    return index


class IndexedRecordReader:
    """Random access to the records of a ``.rec`` through its ``.idx``; reopens the file in each process."""

    def __init__(self, rec_path: str | Path, idx_path: Optional[str | Path] = None) -> None:
        self.rec_path = Path(rec_path)
        if not self.rec_path.is_file():
            raise FileNotFoundError(f"RecordIO file not found: {self.rec_path}")
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        self.index = read_index(self.idx_path)
        self._handle: Optional[BinaryIO] = None
        self._pid = -1

    def keys(self) -> List[int]:
        return sorted(self.index)

    def read(self, key: int) -> bytes:
        if key not in self.index:
            raise KeyError(f"{self.idx_path}: no record with key {key}")
        if self._handle is None or self._pid != os.getpid():  # DataLoader workers get their own handle
            self._handle, self._pid = open(self.rec_path, "rb"), os.getpid()
        return read_record_at(self._handle, self.index[key], f"{self.rec_path} key {key}")

    def read_header(self, key: int) -> Tuple[RecordHeader, bytes]:
        return unpack_record(self.read(key), f"{self.rec_path} key {key}")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None, "_pid": -1}


class IndexedRecordWriter:
    """Appends records to a ``.rec`` and their offsets to the ``.idx`` (both written atomically on close)."""

    def __init__(self, rec_path: str | Path, idx_path: Optional[str | Path] = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        self.rec_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_rec = self.rec_path.with_name(self.rec_path.name + ".tmp")
        self._rec = open(self._tmp_rec, "wb")
        self._index: List[Tuple[int, int]] = []

    def write(self, key: int, content: bytes) -> None:
        self._index.append((key, self._rec.tell()))
        self._rec.write(encode_record(content))

    def close(self) -> None:
        self._rec.close()
        os.replace(self._tmp_rec, self.rec_path)
        tmp_idx = self.idx_path.with_name(self.idx_path.name + ".tmp")
        tmp_idx.write_text("".join(f"{key}\t{offset}\n" for key, offset in self._index), encoding="utf-8")
        os.replace(tmp_idx, self.idx_path)

    def __enter__(self) -> "IndexedRecordWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_property(path: Path) -> Tuple[int, int, int]:
    """``property`` → (num_classes, height, width)."""
    if not path.is_file():
        raise FileNotFoundError(f"RecordIO property file not found: {path}")
    first = path.read_text(encoding="utf-8").splitlines()[:1]
    fields = first[0].strip().split(",") if first else []
    if len(fields) != 3 or not all(f.strip().isdigit() for f in fields):
        raise ValueError(f"{path}:1: expected 'num_classes,height,width', got {first[0] if first else ''!r}")
    num_classes, height, width = (int(f) for f in fields)
    return num_classes, height, width


def write_insightface_rec(folder: str | Path, images: Sequence[np.ndarray], labels: Sequence[int],
                          ext: str = ".jpg", prefix: str = "train") -> Path:
    """Write uint8 RGB ``images`` with integer ``labels`` in the insightface layout (images grouped by label).

    Returns the ``.rec`` path; ``.idx`` and ``property`` (``num_classes,H,W``) are written next to it.
    """
    if len(images) != len(labels) or not images:
        raise ValueError(f"write_insightface_rec: {len(images)} images for {len(labels)} labels")
    order = sorted(range(len(labels)), key=lambda i: int(labels[i]))
    classes = sorted({int(label) for label in labels})
    if classes != list(range(len(classes))):
        raise ValueError(f"write_insightface_rec: labels must be 0..C-1 with no gaps, got {classes[:10]}")
    folder = Path(folder)
    rec_path = folder / f"{prefix}.rec"
    first_identity_key = len(images) + 1
    with IndexedRecordWriter(rec_path) as writer:
        writer.write(0, pack_record(RecordHeader(2, np.array([first_identity_key,
                                                               first_identity_key + len(classes)]))))
        starts: Dict[int, List[int]] = {}
        for key, source in enumerate(order, start=1):
            label = int(labels[source])
            starts.setdefault(label, []).append(key)
            writer.write(key, pack_record(RecordHeader(0, float(label), key), encode_image(images[source], ext)))
        for offset, label in enumerate(classes):
            keys = starts[label]
            writer.write(first_identity_key + offset,
                         pack_record(RecordHeader(2, np.array([keys[0], keys[-1] + 1]))))
    height, width = images[0].shape[:2]
    (folder / "property").write_text(f"{len(classes)},{height},{width}\n", encoding="utf-8")
    return rec_path


@DATASETS.register()
class RecordIODataset(FaceDataset):
    """insightface ``train.rec`` / ``train.idx`` / ``property`` folder as a training dataset (images RGB).

    The label of a sample is its record's header label (as arcface_torch reads it); ``labels`` (all of them, for
    samplers and ``num_classes``) comes from the identity records when present, else from every image header.
    Landmarks are the ArcFace template scaled to the image size (``landmark_source == "template"``).
    """

    def __init__(self, root: str, rec_name: str = "train") -> None:
        self.root = Path(root)
        self.reader = IndexedRecordReader(self.root / f"{rec_name}.rec", self.root / f"{rec_name}.idx")
        header, _ = self.reader.read_header(0)
        if header.flag > 0:
            first_identity, end_identity = int(header.label[0]), int(header.label[1])
            self.keys = np.arange(1, first_identity, dtype=np.int64)
            self.labels = np.full(self.keys.size, -1, dtype=np.int64)
            for class_index, key in enumerate(range(first_identity, end_identity)):
                identity, _ = self.reader.read_header(key)
                start, end = int(identity.label[0]), int(identity.label[1])
                self.labels[start - 1:end - 1] = class_index
            if (self.labels < 0).any():
                raise ValueError(f"{self.reader.rec_path}: {(self.labels < 0).sum()} images belong to no identity "
                                 "record")
        else:
            self.keys = np.asarray(self.reader.keys(), dtype=np.int64)
            self.labels = np.asarray([int(self._label(self.reader.read_header(int(k))[0])) for k in self.keys])
        property_path = self.root / "property"
        self.num_classes = read_property(property_path)[0] if property_path.is_file() else int(self.labels.max()) + 1
        if self.labels.max() >= self.num_classes:
            raise ValueError(f"{property_path}: num_classes {self.num_classes} but labels reach {self.labels.max()}")
        self.landmarks = None
        self.landmark_source = "template"

    @staticmethod
    def _label(header: RecordHeader) -> float:
        return float(header.label) if header.flag == 0 else float(np.asarray(header.label)[0])

    def __len__(self) -> int:
        return int(self.keys.size)

    def load(self, index: int) -> Tuple[np.ndarray, int, np.ndarray]:
        key = int(self.keys[index])
        header, payload = self.reader.read_header(key)
        label = int(self._label(header))
        if label != self.labels[index]:
            raise ValueError(f"{self.reader.rec_path} key {key}: header label {label} disagrees with its identity "
                             f"record ({self.labels[index]})")
        image = decode_image(payload, f"{self.reader.rec_path} key {key}")
        scale = np.array([image.shape[1] / 112.0, image.shape[0] / 112.0], dtype=np.float32)
        return image, label, ARCFACE_TEMPLATE_112 * scale
