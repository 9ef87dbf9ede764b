"""Occlusion synthesis: visibility masks match the changed pixels, seeding, input safety, and occluders landing on
the right landmarks (template, rotated/scaled/shifted faces, non-square images)."""
from __future__ import annotations

import numpy as np
import pytest

from data_processor.landmarks import ARCFACE_TEMPLATE_112
from data_processor.occlusion import (DRAWN_OCCLUDERS, OBJECT_OCCLUDERS, OCCLUDERS, PARTIAL_VIEWS, RANDOM_SHAPES,
                                      SYNTHETIC_OCCLUDERS, DonorPool, occlude)
from utils.registry import ConfigError

KINDS = [name for name in OCCLUDERS.names() if name != "rgba"]  # rgba needs an occluder: tests/test_occlusion_rgba.py
LEFT_EYE, RIGHT_EYE, NOSE, LEFT_MOUTH, RIGHT_MOUTH = range(5)


def noise_image(height: int = 112, width: int = 112, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


NOISE_DONORS = DonorPool([ARCFACE_TEMPLATE_112] * 3, ["d0", "d1", "d2"],
                         images=[noise_image(seed=100 + k) for k in range(3)])


def kind_params(kind: str, donors: DonorPool = NOISE_DONORS) -> dict:
    """What a kind needs besides the image: crowd takes faces from a donor pool (tests/test_occlusion_objects.py)."""
    return {"donors": donors} if kind == "crowd" else {}


def similarity_landmarks(seed: int, size: int = 112) -> np.ndarray:
    """The template under a random rotation (±20°), scale (0.8-1.1) and shift (±6 px) about the image centre."""
    rng = np.random.default_rng(seed)
    angle, scale = np.deg2rad(rng.uniform(-20, 20)), rng.uniform(0.8, 1.1)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([size / 2, size / 2])
    return ((ARCFACE_TEMPLATE_112 - 56.0) @ rotation.T + centre + rng.uniform(-6, 6, 2)).astype(np.float32)


FACES = [("template", ARCFACE_TEMPLATE_112)] + [(f"similarity{s}", similarity_landmarks(s)) for s in range(4)]


def visible_at(visibility: np.ndarray, points: np.ndarray) -> np.ndarray:
    rows = np.clip(np.round(points[:, 1]).astype(int), 0, visibility.shape[0] - 1)
    cols = np.clip(np.round(points[:, 0]).astype(int), 0, visibility.shape[1] - 1)
    return visibility[rows, cols].astype(bool)


def test_registry_lists_every_family():
    assert set(PARTIAL_VIEWS) | set(SYNTHETIC_OCCLUDERS) | set(OBJECT_OCCLUDERS) | {"clean", "gfro_box", "rgba"} \
        == set(OCCLUDERS.names())
    assert SYNTHETIC_OCCLUDERS == DRAWN_OCCLUDERS + RANDOM_SHAPES


@pytest.mark.parametrize("kind", KINDS)
def test_visibility_marks_exactly_the_changed_pixels(kind):
    image = noise_image()
    for index, (_, points) in enumerate(FACES):
        noisy, visibility = occlude(image, points, kind, (0, index), **kind_params(kind))
        assert noisy.dtype == np.uint8 and noisy.shape == image.shape
        assert visibility.dtype == np.uint8 and visibility.shape == image.shape[:2]
        assert set(np.unique(visibility)) <= {0, 1}
        changed = (noisy != image).any(axis=2)
        hidden = visibility == 0
        assert not (changed & ~hidden).any(), f"{kind}: pixels changed outside the occluded region"
        if kind != "clean":
            assert hidden.any(), f"{kind}: nothing occluded"
            # On a noise image almost every occluded pixel differs from the original.
            assert changed[hidden].mean() > 0.95, f"{kind}: occluded pixels that did not change"


@pytest.mark.parametrize("fill", ["zero", "mean", "noise", "blur", "white", "random"])
def test_partial_view_fills_keep_the_mask_exact(fill):
    image = noise_image(seed=3)
    for kind in PARTIAL_VIEWS:
        noisy, visibility = occlude(image, ARCFACE_TEMPLATE_112, kind, (5, 1), fill=fill)
        changed = (noisy != image).any(axis=2)
        assert not (changed & (visibility == 1)).any()
        if fill == "zero":
            assert (noisy[visibility == 0] == 0).all()
        if fill == "white":
            assert (noisy[visibility == 0] == 255).all()


@pytest.mark.parametrize("kind", KINDS)
def test_input_array_is_never_modified(kind):
    image = noise_image(seed=1)
    before = image.copy()
    noisy, visibility = occlude(image, ARCFACE_TEMPLATE_112, kind, (0, 3), **kind_params(kind))
    assert np.array_equal(image, before)
    assert image.flags.writeable
    assert not np.shares_memory(noisy, image) and not np.shares_memory(visibility, image)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_bytes_other_seed_differs(kind):
    image = noise_image(seed=2)
    differing = 0
    for index in range(5):
        first = occlude(image, ARCFACE_TEMPLATE_112, kind, (7, index), **kind_params(kind))
        again = occlude(image, ARCFACE_TEMPLATE_112, kind, (7, index), **kind_params(kind))
        other = occlude(image, ARCFACE_TEMPLATE_112, kind, (8, index), **kind_params(kind))
        assert first[0].tobytes() == again[0].tobytes() and first[1].tobytes() == again[1].tobytes()
        differing += first[0].tobytes() != other[0].tobytes()
    if kind not in ("clean", "gfro_box"):  # gfro_box: two fixed boxes, only the choice is random (tested below)
        assert differing >= 4, f"{kind}: another seed gave the same image {5 - differing} times out of 5"


def test_result_depends_only_on_seed_and_index_not_on_order():
    image = noise_image(seed=4)
    direct = occlude(image, ARCFACE_TEMPLATE_112, "mask", (3, 11))[0]
    for index in range(5):  # unrelated draws first
        occlude(image, ARCFACE_TEMPLATE_112, "hand", (3, index))
    assert np.array_equal(direct, occlude(image, ARCFACE_TEMPLATE_112, "mask", (3, 11))[0])
    generator = np.random.default_rng([3, 11])
    assert np.array_equal(direct, occlude(image, ARCFACE_TEMPLATE_112, "mask", generator)[0])


# ---- occluders land on the right landmarks -------------------------------------------------------------------
EXPECTED_VISIBLE = {  # kind -> (landmarks that must be hidden, landmarks that must stay visible)
    "mask": ((NOSE, LEFT_MOUTH, RIGHT_MOUTH), (LEFT_EYE, RIGHT_EYE)),
    "sunglasses": ((LEFT_EYE, RIGHT_EYE), (NOSE, LEFT_MOUTH, RIGHT_MOUTH)),
    "eyeglasses": ((), (LEFT_EYE, RIGHT_EYE, NOSE, LEFT_MOUTH, RIGHT_MOUTH)),
    "hat": ((), (LEFT_EYE, RIGHT_EYE, NOSE, LEFT_MOUTH, RIGHT_MOUTH)),
    "scarf": ((LEFT_MOUTH, RIGHT_MOUTH), (LEFT_EYE, RIGHT_EYE, NOSE)),
    "partial_upper": ((NOSE, LEFT_MOUTH, RIGHT_MOUTH), (LEFT_EYE, RIGHT_EYE)),
    "partial_lower": ((LEFT_EYE, RIGHT_EYE), (NOSE, LEFT_MOUTH, RIGHT_MOUTH)),
    "partial_left": ((RIGHT_EYE, RIGHT_MOUTH), (LEFT_EYE, LEFT_MOUTH)),
    "partial_right": ((LEFT_EYE, LEFT_MOUTH), (RIGHT_EYE, RIGHT_MOUTH)),
    "partial_eyes": ((NOSE, LEFT_MOUTH, RIGHT_MOUTH), (LEFT_EYE, RIGHT_EYE)),
    "partial_mouth": ((LEFT_EYE, RIGHT_EYE, NOSE), (LEFT_MOUTH, RIGHT_MOUTH)),
    "partial_central": ((), (LEFT_EYE, RIGHT_EYE, NOSE, LEFT_MOUTH, RIGHT_MOUTH)),
}


def check_landmark_coverage(kind: str, image: np.ndarray, points: np.ndarray, seeds: range) -> None:
    hidden_ids, visible_ids = EXPECTED_VISIBLE[kind]
    for seed in seeds:
        _, visibility = occlude(image, points, kind, (seed, 0))
        visible = visible_at(visibility, points)
        for i in hidden_ids:
            assert not visible[i], f"{kind} (seed {seed}): landmark {i} should be hidden"
        for i in visible_ids:
            assert visible[i], f"{kind} (seed {seed}): landmark {i} should stay visible"


@pytest.mark.parametrize("kind", sorted(EXPECTED_VISIBLE))
@pytest.mark.parametrize("face", FACES, ids=[name for name, _ in FACES])
def test_occluders_land_on_the_right_landmarks(kind, face):
    check_landmark_coverage(kind, noise_image(seed=5), face[1], range(12))


@pytest.mark.parametrize("kind", ["mask", "sunglasses", "scarf", "partial_upper", "partial_left"])
def test_placement_follows_landmarks_on_a_non_square_image(kind):
    points = ARCFACE_TEMPLATE_112 * np.array([150 / 112, 130 / 112], dtype=np.float32) + [10, 20]
    image = noise_image(170, 180, seed=6)
    check_landmark_coverage(kind, image, points, range(6))


def test_eyeglasses_mark_only_the_frame():
    image = noise_image(seed=7)
    for seed in range(10):
        _, visibility = occlude(image, ARCFACE_TEMPLATE_112, "eyeglasses", (seed, 0))
        hidden = visibility == 0
        assert 0.01 < hidden.mean() < 0.15
        # frame pixels surround each eye: hidden pixels within one eye distance, above and below it
        for eye in ARCFACE_TEMPLATE_112[:2]:
            x, y = int(round(eye[0])), int(round(eye[1]))
            assert hidden[y - 16:y, x - 3:x + 4].any() and hidden[y:y + 16, x - 3:x + 4].any()


def test_hat_covers_the_top_of_the_head_and_hand_covers_its_anchor():
    image = noise_image(seed=8)
    for seed in range(10):
        _, hat = occlude(image, ARCFACE_TEMPLATE_112, "hat", (seed, 0))
        assert (hat[:20, 20:92] == 0).all()
    anchors = {"left_eye": ARCFACE_TEMPLATE_112[0], "right_eye": ARCFACE_TEMPLATE_112[1],
               "nose": ARCFACE_TEMPLATE_112[2], "mouth": ARCFACE_TEMPLATE_112[3:].mean(axis=0)}
    for anchor, point in anchors.items():
        for seed in range(5):
            _, hand = occlude(image, ARCFACE_TEMPLATE_112, "hand", (seed, 0), anchor=anchor)
            assert not visible_at(hand, point[None])[0], f"hand over {anchor} (seed {seed}) left it visible"


def test_partial_random_keeps_at_least_one_landmark_group():
    groups = [(LEFT_EYE, RIGHT_EYE), (LEFT_EYE,), (RIGHT_EYE,), (NOSE,), (LEFT_MOUTH, RIGHT_MOUTH),
              (LEFT_EYE, LEFT_MOUTH), (RIGHT_EYE, RIGHT_MOUTH)]
    image = noise_image(seed=9)
    for _, points in FACES:
        for seed in range(20):
            _, visibility = occlude(image, points, "partial_random", (seed, 1))
            visible = visible_at(visibility, points)
            assert any(all(visible[i] for i in group) for group in groups)
            assert 0 < visibility.mean() < 1


def test_gfro_box_covers_eyes_or_mouth():
    image = noise_image(seed=10)
    _, eyes = occlude(image, ARCFACE_TEMPLATE_112, "gfro_box", 0, region="eyes")
    assert not visible_at(eyes, ARCFACE_TEMPLATE_112)[:2].any() and visible_at(eyes, ARCFACE_TEMPLATE_112)[2:].all()
    _, mouth = occlude(image, ARCFACE_TEMPLATE_112, "gfro_box", 0, region="mouth")
    assert not visible_at(mouth, ARCFACE_TEMPLATE_112)[3:].any()
    regions = {occlude(image, ARCFACE_TEMPLATE_112, "gfro_box", (seed, 0))[1].tobytes() for seed in range(10)}
    assert regions == {eyes.tobytes(), mouth.tobytes()}
    _, release = occlude(image, ARCFACE_TEMPLATE_112, "gfro_box", 0, region="eyes", placement="release")
    # the release's fixed box: rows 34..53, columns 38..73 (ImageDataset_Crop, 112x112)
    rows, cols = np.nonzero(release == 0)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (34, 53, 38, 73)


@pytest.mark.parametrize("kind,ratio", [("block", 0.2), ("ellipse", 0.3), ("polygon", 0.15)])
def test_random_shapes_cover_the_requested_area(kind, ratio):
    image = noise_image(seed=11)
    for seed in range(10):
        _, visibility = occlude(image, ARCFACE_TEMPLATE_112, kind, (seed, 0), area_ratio=(ratio, ratio),
                                fill="zero")
        assert abs((1 - visibility.mean()) - ratio) < 0.03, f"{kind}: covered {1 - visibility.mean():.3f}"


def test_block_anchored_on_a_landmark_covers_it():
    image = noise_image(seed=12)
    for seed in range(10):
        _, visibility = occlude(image, ARCFACE_TEMPLATE_112, "block", (seed, 0), area_ratio=(0.1, 0.1),
                                aspect=(1, 1), anchor="landmark")
        assert not visible_at(visibility, ARCFACE_TEMPLATE_112).all()


def test_bad_inputs_raise_clear_errors():
    image = noise_image()
    with pytest.raises(ValueError, match="uint8 H×W×3"):
        occlude(image.astype(np.float32), ARCFACE_TEMPLATE_112, "mask", 0)
    with pytest.raises(ValueError, match="uint8 H×W×3"):
        occlude(image[..., 0], ARCFACE_TEMPLATE_112, "mask", 0)
    with pytest.raises(ValueError, match=r"shape \(5, 2\)"):
        occlude(image, ARCFACE_TEMPLATE_112[:4], "mask", 0)
    with pytest.raises(ValueError, match="degenerate"):
        occlude(image, np.full((5, 2), 50.0), "mask", 0)
    with pytest.raises(ConfigError, match="unknown occluder type 'helmet'"):
        occlude(image, ARCFACE_TEMPLATE_112, "helmet", 0)
    with pytest.raises(ConfigError, match="unknown config key"):
        occlude(image, ARCFACE_TEMPLATE_112, "mask", 0, colour="red")
    with pytest.raises(ValueError, match="fill must be one of"):
        occlude(image, ARCFACE_TEMPLATE_112, "partial_upper", 0, fill="purple")
    with pytest.raises(ValueError, match="mask style"):
        occlude(image, ARCFACE_TEMPLATE_112, "mask", 0, style="n95")
    with pytest.raises(ValueError, match="area_ratio"):
        occlude(image, ARCFACE_TEMPLATE_112, "block", 0, area_ratio=(0.5, 0.2))
    with pytest.raises(TypeError, match="rng must be"):
        occlude(image, ARCFACE_TEMPLATE_112, "mask", "seed")
    with pytest.raises(ValueError, match="needs occluder"):
        occlude(image, ARCFACE_TEMPLATE_112, "rgba", 0)


def test_non_contiguous_input_is_accepted_and_left_alone():
    base = noise_image(seed=13)
    view = base[:, ::-1]  # negative stride, as from a flip
    before = view.copy()
    noisy, visibility = occlude(view, ARCFACE_TEMPLATE_112, "sunglasses", (1, 1))
    assert np.array_equal(view, before)
    assert not (((noisy != before).any(axis=2)) & (visibility == 1)).any()
