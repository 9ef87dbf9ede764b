"""Train-list / image-folder datasets, landmark files and the preprocessing contract."""
import numpy as np
import pytest
import torch

from data_processor.datasets import ImageFolderDataset, ImageListDataset
from data_processor.image_io import read_image, write_image
from data_processor.landmarks import ARCFACE_TEMPLATE_112, read_landmark_file, write_landmark_file
from data_processor.preprocess import PreprocessSpec, preprocess


@pytest.fixture
def tiny_folder(tmp_path):
    rng = np.random.default_rng(0)
    for identity in ("alice", "bob"):
        for k in range(2):
            write_image(tmp_path / "images" / identity / f"{k}.png", rng.integers(0, 255, (112, 112, 3), np.uint8))
    (tmp_path / "list.txt").write_text("alice/0.png 0\nalice/1.png 0\nbob/0.png 1\nbob/1.png 1\n")
    return tmp_path


def test_image_list_sample_contract(tiny_folder):
    dataset = ImageListDataset(str(tiny_folder / "images"), str(tiny_folder / "list.txt"))
    sample = dataset[2]
    assert dataset.num_classes == 2 and dataset.landmark_source == "template"
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 112, 112)
    assert int(sample["label"]) == 1
    assert np.allclose(sample["landmarks"].numpy(), ARCFACE_TEMPLATE_112)
    expected = read_image(tiny_folder / "images" / "bob" / "0.png")
    assert np.array_equal(sample["image"].permute(1, 2, 0).numpy(), expected)


def test_image_folder_labels_follow_sorted_names(tiny_folder):
    dataset = ImageFolderDataset(str(tiny_folder / "images"))
    assert dataset.identities == ["alice", "bob"] and len(dataset) == 4 and dataset.num_classes == 2


def test_missing_image_names_file(tiny_folder):
    (tiny_folder / "list.txt").write_text("alice/0.png 0\nalice/9.png 0\n")
    with pytest.raises(FileNotFoundError, match=r"list.txt: 1 listed image\(s\) missing.*alice/9.png"):
        ImageListDataset(str(tiny_folder / "images"), str(tiny_folder / "list.txt"))


def test_bad_list_line_names_file_and_line(tiny_folder):
    (tiny_folder / "list.txt").write_text("alice/0.png 0\nalice/1.png zero\n")
    with pytest.raises(ValueError, match=r"list.txt:2: label must be an integer"):
        ImageListDataset(str(tiny_folder / "images"), str(tiny_folder / "list.txt"))


def test_landmark_file_round_trip_and_errors(tiny_folder):
    points = {"alice/0.png": ARCFACE_TEMPLATE_112 + 1, "alice/1.png": ARCFACE_TEMPLATE_112,
              "bob/0.png": ARCFACE_TEMPLATE_112, "bob/1.png": ARCFACE_TEMPLATE_112}
    write_landmark_file(tiny_folder / "lmk.txt", points)
    dataset = ImageListDataset(str(tiny_folder / "images"), str(tiny_folder / "list.txt"), str(tiny_folder / "lmk.txt"))
    assert dataset.landmark_source == "file"
    assert np.allclose(dataset[0]["landmarks"].numpy(), ARCFACE_TEMPLATE_112 + 1, atol=0.01)
    (tiny_folder / "lmk.txt").write_text("alice/0.png 1 2 3\n")
    with pytest.raises(ValueError, match=r"lmk.txt:1: expected 'path x1 y1 ... x5 y5'"):
        read_landmark_file(tiny_folder / "lmk.txt")
    write_landmark_file(tiny_folder / "lmk.txt", {"alice/0.png": ARCFACE_TEMPLATE_112})
    with pytest.raises(ValueError, match="no landmarks for 3 of 4 images"):
        ImageListDataset(str(tiny_folder / "images"), str(tiny_folder / "list.txt"), str(tiny_folder / "lmk.txt"))


def test_preprocess_channel_order_and_normalisation():
    images = torch.zeros(1, 3, 112, 112, dtype=torch.uint8)
    images[:, 0] = 255  # pure red in RGB
    bgr = preprocess(images, PreprocessSpec("BGR", (127.5,) * 3, (128.0,) * 3))
    rgb = preprocess(images, PreprocessSpec("RGB", (127.5,) * 3, (127.5,) * 3))
    assert bgr[0, 2].mean().item() == pytest.approx((255 - 127.5) / 128) and bgr[0, 0].mean().item() < 0
    assert rgb[0, 0].mean().item() == pytest.approx(1.0) and rgb[0, 2].mean().item() == pytest.approx(-1.0)
    assert preprocess(images, PreprocessSpec(input_size=(112, 96))).shape == (1, 3, 112, 96)
    with pytest.raises(ValueError, match="channel_order"):
        PreprocessSpec(channel_order="RBG")
    with pytest.raises(ValueError, match="expects"):
        preprocess(images[0], PreprocessSpec())
