"""insightface RecordIO (.rec/.idx/property) reader and writer: round trip, multi-part records, dataset, errors."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data_processor import DATASETS
from data_processor.record_io import (MAGIC, IndexedRecordReader, IndexedRecordWriter, RecordHeader, encode_record,
                                      pack_record, read_property, read_record_at, unpack_record,
                                      write_insightface_rec)


def six_images():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(6)]
    return images, [2, 0, 1, 0, 2, 1]


def test_round_trip_pixels_labels_and_property(tmp_path):
    images, labels = six_images()
    rec = write_insightface_rec(tmp_path, images, labels, ext=".png")  # lossless, so pixels must match exactly
    assert rec.name == "train.rec" and (tmp_path / "train.idx").is_file()
    assert (tmp_path / "property").read_text() == "3,112,112\n"
    assert read_property(tmp_path / "property") == (3, 112, 112)
    dataset = DATASETS.build({"type": "RecordIODataset", "root": str(tmp_path)})
    assert len(dataset) == 6 and dataset.num_classes == 3 and dataset.landmark_source == "template"
    expected = sorted(zip(labels, range(6)))  # the writer groups images by label, keeping their order
    for index, (label, source) in enumerate(expected):
        sample = dataset[index]
        assert sample["label"].item() == label and sample["index"] == index
        assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 112, 112)
        assert np.array_equal(sample["image"].numpy().transpose(1, 2, 0), images[source])  # RGB, not BGR
        assert sample["landmarks"].shape == (5, 2)
    batch = next(iter(DataLoader(dataset, batch_size=6)))
    assert batch["label"].tolist() == [label for label, _ in expected]


def test_insightface_header_records(tmp_path):
    images, labels = six_images()
    write_insightface_rec(tmp_path, images, labels, ext=".png")
    reader = IndexedRecordReader(tmp_path / "train.rec")
    header, payload = reader.read_header(0)
    assert header.flag == 2 and header.label.tolist() == [7.0, 10.0] and payload == b""
    ranges = [reader.read_header(key)[0].label.tolist() for key in (7, 8, 9)]
    assert ranges == [[1.0, 3.0], [3.0, 5.0], [5.0, 7.0]]  # identity records: (first image key, end key)


def test_header_pack_unpack():
    content = pack_record(RecordHeader(0, 5.0, 11, 0), b"jpeg")
    header, payload = unpack_record(content)
    assert (header.flag, header.label, header.id, payload) == (0, 5.0, 11, b"jpeg")
    header, payload = unpack_record(pack_record(RecordHeader(3, np.array([1, 2, 3.5])), b"x"))
    assert header.flag == 3 and header.label.tolist() == [1.0, 2.0, 3.5] and payload == b"x"
    with pytest.raises(ValueError, match="too short"):
        unpack_record(b"abc", "k")


def test_payload_holding_the_magic_word_is_split_and_restored():
    magic = struct.pack("<I", MAGIC)
    content = b"abcd" + magic + b"efgh" + magic + b"xyz"
    encoded = encode_record(content)
    assert encoded.count(magic) == 3  # three parts, each with its own record header
    assert read_record_at(io.BytesIO(encoded), 0, "t") == content
    assert read_record_at(io.BytesIO(encode_record(b"abc")), 0, "t") == b"abc"


def test_writer_and_reader_with_any_keys(tmp_path):
    with IndexedRecordWriter(tmp_path / "x.rec") as writer:
        for key, content in [(5, b"five"), (9, b"nine!"), (2, b"")]:
            writer.write(key, content)
    reader = IndexedRecordReader(tmp_path / "x.rec")
    assert reader.keys() == [2, 5, 9] and reader.read(9) == b"nine!" and reader.read(2) == b""
    with pytest.raises(KeyError, match="no record with key 3"):
        reader.read(3)


def test_corrupt_files_name_the_problem(tmp_path):
    (tmp_path / "bad.rec").write_bytes(b"\0" * 16)
    (tmp_path / "bad.idx").write_text("0\t0\n")
    with pytest.raises(ValueError, match="bad magic"):
        IndexedRecordReader(tmp_path / "bad.rec").read(0)
    (tmp_path / "bad.idx").write_text("0 zero\n")
    with pytest.raises(ValueError, match=r"bad.idx:1: expected 'key<TAB>offset'"):
        IndexedRecordReader(tmp_path / "bad.rec")
    (tmp_path / "property").write_text("ten,112,112\n")
    with pytest.raises(ValueError, match=r"property:1: expected 'num_classes,height,width'"):
        read_property(tmp_path / "property")


def test_dataset_without_identity_records_reads_header_labels(tmp_path):
    from data_processor.image_io import encode_image

    images, labels = six_images()
    with IndexedRecordWriter(tmp_path / "train.rec") as writer:
        for key, (image, label) in enumerate(zip(images, labels)):
            writer.write(key, pack_record(RecordHeader(0, float(label), key), encode_image(image, ".png")))
    dataset = DATASETS.build({"type": "RecordIODataset", "root": str(tmp_path)})
    assert dataset.labels.tolist() == labels and dataset.num_classes == 3
    assert np.array_equal(dataset[4]["image"].numpy().transpose(1, 2, 0), images[4])
