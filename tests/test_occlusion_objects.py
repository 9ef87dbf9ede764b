"""Family ``object``: photographed objects (``object_photo``) and other people's faces (``crowd``) — the occluder
invariants, placement over the face, donors of another identity, no code shared with the training renderer, training
with them, and occluded test sets built with them."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_processor.datasets import ImageFolderDataset
from data_processor.image_io import read_image, write_image
from data_processor.landmarks import ARCFACE_TEMPLATE_112, write_landmark_file
from data_processor.occlusion import PHOTO_OBJECTS, DonorPool, occlude
from data_processor.occlusion import objects as objects_module
from data_processor.occlusion.objects import face_box_mask, identity_of_path, photo_object
from data_processor.train_dataset import OCCLUSION_TYPES, OcclusionTrainDataset
from tests.test_occlusion import FACES, noise_image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def solid_donors() -> DonorPool:
    """One flat-coloured 'face' per identity, so the colour pasted says whose face it was."""
    images = [np.full((112, 112, 3), colour, dtype=np.uint8) for colour in COLOURS.values()]
    return DonorPool([ARCFACE_TEMPLATE_112] * len(images), list(COLOURS), images=images)


def run(kind: str, image: np.ndarray, points: np.ndarray, rng, **params):
    if kind == "crowd":
        params = {"donors": solid_donors(), **params}
    return occlude(image, points, kind, rng, **params)


@pytest.mark.parametrize("kind", ["object_photo", "crowd"])
def test_reproducible_untouched_input_and_exact_visibility(kind):
    image = noise_image(seed=30)
    before = image.copy()
    outputs = set()
    for index, (_, points) in enumerate(FACES):
        for seed in range(4):
            noisy, visibility = run(kind, image, points, (seed, index))
            again, visibility_again = run(kind, image, points, (seed, index))
            assert noisy.tobytes() == again.tobytes() and visibility.tobytes() == visibility_again.tobytes()
            assert np.array_equal(image, before)
            changed = (noisy != image).any(axis=2)
            assert np.array_equal(visibility == 0, changed), "visibility must be 0 exactly where pixels changed"
            hidden = visibility == 0
            assert hidden.any() and (hidden & face_box_mask(image.shape[:2], points)).any(), "misses the face box"
            outputs.add(noisy.tobytes())
    assert len(outputs) == 4 * len(FACES), "different seeds / faces gave identical images"


def test_every_photo_object_appears_and_cutouts_are_deterministic():
    image = noise_image(seed=31)
    for name in PHOTO_OBJECTS:
        item = photo_object(name)
        assert item.variants and all(v.rgba.dtype == np.float32 and v.rgba.shape[2] == 4 for v in item.variants)
        alpha = item.variants[0].rgba[..., 3]
        assert 0.2 < float((alpha > 0.5).mean()) < 0.95, f"{name}: cut-out is almost empty or a full rectangle"
        _, visibility = occlude(image, ARCFACE_TEMPLATE_112, "object_photo", (0, 0), objects=[name])
        assert (visibility == 0).any()
    first = {name: [v.rgba.tobytes() for v in photo_object(name).variants] for name in PHOTO_OBJECTS}
    photo_object.cache_clear()  # segment again from scratch: GrabCut is seeded, so the same bytes come back
    assert first == {name: [v.rgba.tobytes() for v in photo_object(name).variants] for name in PHOTO_OBJECTS}


def test_object_photo_lands_on_real_looking_sizes():
    image = noise_image(seed=32)
    covered = [1 - occlude(image, ARCFACE_TEMPLATE_112, "object_photo", (seed, 0))[1].mean() for seed in range(30)]
    assert 0.03 < float(np.median(covered)) < 0.45, covered


def test_crowd_never_uses_a_donor_of_the_same_identity():
    image = noise_image(seed=33)
    for target in COLOURS:
        for seed in range(15):
            noisy, visibility = run("crowd", image, ARCFACE_TEMPLATE_112, (seed, 0), identity=target)
            hidden = visibility == 0
            opaque = hidden & (np.abs(noisy.astype(int) - image).sum(axis=2) > 0)
            dominant = int(np.argmax(noisy[opaque].astype(np.int64).mean(axis=0)))
            assert list(COLOURS)[dominant] != target, f"crowd pasted {target}'s own face (seed {seed})"
    used = set()
    for seed in range(30):  # without an identity every donor can be drawn
        noisy, visibility = run("crowd", image, ARCFACE_TEMPLATE_112, (seed, 1))
        used.add(int(np.argmax(noisy[visibility == 0].astype(np.int64).mean(axis=0))))
    assert used == {0, 1, 2}


def test_crowd_sides_and_errors():
    image = noise_image(seed=34)
    centre_x = ARCFACE_TEMPLATE_112[:, 0].mean()
    for seed in range(8):
        for side, sign in (("left", -1), ("right", 1)):
            _, visibility = run("crowd", image, ARCFACE_TEMPLATE_112, (seed, 0), side=side)
            columns = np.nonzero(visibility == 0)[1]
            assert sign * (columns.mean() - centre_x) > 10, f"{side}: occluder centred at x={columns.mean():.1f}"
        _, visibility = run("crowd", image, ARCFACE_TEMPLATE_112, (seed, 0), side="bottom")
        rows = np.nonzero(visibility == 0)[0]
        assert rows.mean() > ARCFACE_TEMPLATE_112[2, 1] and rows.min() > ARCFACE_TEMPLATE_112[:2, 1].max()
    with pytest.raises(ValueError, match="needs donors"):
        occlude(image, ARCFACE_TEMPLATE_112, "crowd", 0)
    lonely = DonorPool([ARCFACE_TEMPLATE_112], ["me"], images=[image])
    with pytest.raises(ValueError, match="no face of another identity"):
        occlude(image, ARCFACE_TEMPLATE_112, "crowd", 0, donors=lonely, identity="me")
    with pytest.raises(ValueError, match="side must be"):
        run("crowd", image, ARCFACE_TEMPLATE_112, 0, side="top")
    with pytest.raises(ValueError, match="objects must be names"):
        occlude(image, ARCFACE_TEMPLATE_112, "object_photo", 0, objects=["piano"])


def test_objects_module_shares_no_code_with_the_training_renderer():
    tree = ast.parse(Path(objects_module.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    renderer = {f"data_processor.occlusion.{name}" for name in
                ("render", "shapes", "textures", "occluders", "geometry", "partial_views", "fills", "rgba_occluder")}
    assert not imported & renderer, imported & renderer


def test_donor_pool_from_files_and_identities(tmp_path):
    names = ["Ann/Ann_0001.png", "Bob/Bob_0001.png"]
    for k, name in enumerate(names):
        write_image(tmp_path / name, np.full((112, 112, 3), 60 * (k + 1), dtype=np.uint8))
    pool = DonorPool.from_files(tmp_path, names, {name: ARCFACE_TEMPLATE_112 for name in names})
    assert list(pool.identities) == ["Ann", "Bob"] and len(pool) == 2
    assert pool.draw(np.random.default_rng(0), "Ann") == 1
    assert pool.face(1)[0][0, 0, 0] == 120
    assert identity_of_path("Name/Name_0001.jpg") == "Name" and identity_of_path("Jo_Ann_0002.jpg") == "Jo_Ann"


def test_training_with_object_occluders_takes_donors_from_other_identities(tmp_path):
    for identity, colour in enumerate(COLOURS.values()):
        for k in range(2):
            write_image(tmp_path / f"id{identity}" / f"{k}.png", np.full((112, 112, 3), colour, dtype=np.uint8))
    base = ImageFolderDataset(str(tmp_path))
    dataset = OcclusionTrainDataset(base, mode="synthetic", seed=0, flip_probability=0.0,
                                    probabilities={name: (1.0 if name in ("crowd", "object_photo") else 0.0)
                                                   for name in OCCLUSION_TYPES})
    assert dataset.trained_families == ["object"]
    kinds = set()
    for epoch in range(4):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            sample = dataset[index]
            kind = OCCLUSION_TYPES[int(sample["occlusion_type"])]
            kinds.add(kind)
            changed = (sample["noisy"] != sample["image"]).any(dim=0)
            assert torch.equal(changed, sample["visibility"][0] == 0)
            if kind == "crowd":  # the donor's flat colour is not the sample's own
                own = sample["image"][:, 0, 0].long()
                pasted = sample["noisy"][:, changed].float().mean(dim=1)
                assert int(pasted.argmax()) != int(own.argmax())
    assert kinds == {"crowd", "object_photo"}


# ---- test sets ---------------------------------------------------------------------------------------------------
def synthetic_source(root: Path, identities: int = 4) -> Path:
    """``root/images/sNN/sNN_000k.png`` embedded synthetic faces + their landmarks + an LFW-format pairs file."""
    from data_processor.synthetic_render import render_identity_image

    landmarks = {}
    for identity in range(identities):
        for k in (1, 2):
            image, points = render_identity_image(0, "test", identity, k)
            relative = f"s{identity:02d}/s{identity:02d}_{k:04d}.png"
            write_image(root / "images" / relative, image)
            landmarks[relative] = points
    write_landmark_file(root / "landmarks.txt", landmarks)
    same = [f"s{i:02d}\t1\t2" for i in range(identities)]
    different = [f"s{i:02d}\t1\ts{(i + 1) % identities:02d}\t2" for i in range(identities)]
    (root / "pairs.txt").write_text(f"1\t{identities}\n" + "\n".join(same + different) + "\n", encoding="utf-8")
    return root


def test_builder_makes_object_and_crowd_sets(tmp_path):
    from test_protocol.lfw.occluded_set_builder import BuildConfig, build_occluded_set, ensure_synthetic_occluded
    from utils.provenance import tree_digest

    source = synthetic_source(tmp_path / "synthetic_faces" / "test")
    digests = {}
    for kind in ("object_photo", "crowd"):
        config = dict(source=str(source), pairs=str(source / "pairs.txt"), occlusion=kind, image_ext=".png")
        first = build_occluded_set(BuildConfig(**config), tmp_path / f"{kind}_a")
        second = build_occluded_set(BuildConfig(**config), tmp_path / f"{kind}_b", workers=2)
        digests[kind] = tree_digest(first)
        assert digests[kind] == tree_digest(second)
        manifest = json.loads((first / "manifest.json").read_text())
        assert manifest["kinds"] == [kind] and manifest["counts"]["kinds"] == {kind: 8}
        for name in (source / "images").rglob("*.png"):
            relative = name.relative_to(source / "images")
            assert not np.array_equal(read_image(name), read_image(first / "images" / relative)), relative
    other_seed = build_occluded_set(BuildConfig(source=str(source), pairs=str(source / "pairs.txt"),
                                                occlusion="crowd", image_ext=".png", seed=1), tmp_path / "crowd_c")
    assert tree_digest(other_seed) != digests["crowd"]
    built = ensure_synthetic_occluded(source, tmp_path / "synthetic_occluded", kinds=("object_photo", "crowd"))
    assert [p.name for p in built] == ["object_photo", "crowd"]
    assert (tmp_path / "synthetic_occluded" / "crowd" / "images" / "s00" / "s00_0001.png").is_file()
    assert tree_digest(built[1], exclude=("manifest.json",)) == tree_digest(tmp_path / "crowd_a",
                                                                            exclude=("manifest.json",))
    from test_protocol.lfw import crop_lfw_random

    cli = crop_lfw_random.main(["--source", str(source), "--pairs", str(source / "pairs.txt"), "--image-ext", ".png",
                                "--out", str(tmp_path / "cli"), "--occlusion", "object_photo,crowd"])
    assert set(json.loads((cli / "manifest.json").read_text())["counts"]["kinds"]) == {"object_photo", "crowd"}


def test_builder_crowd_donors_avoid_the_person_and_their_pair_partners(tmp_path):
    from test_protocol.lfw.occluded_set_builder import BuildConfig, build_occluded_set

    names = list(COLOURS)  # identity = colour: a pasted face's colour says whose it was
    landmarks = {}
    for name, colour in COLOURS.items():
        for k in (1, 2):
            relative = f"{name}/{name}_{k:04d}.png"
            write_image(tmp_path / "src" / relative, np.full((112, 112, 3), colour, dtype=np.uint8))
            landmarks[relative] = ARCFACE_TEMPLATE_112
    write_landmark_file(tmp_path / "src" / "landmarks.txt", landmarks)
    same = [f"{name}\t1\t2" for name in names]
    different = [f"{name}\t1\t{names[(i + 1) % 3]}\t2" for i, name in enumerate(names)]
    (tmp_path / "src" / "pairs.txt").write_text("1\t3\n" + "\n".join(same + different) + "\n", encoding="utf-8")
    for seed in range(3):
        out = build_occluded_set(BuildConfig(source=str(tmp_path / "src"), pairs=str(tmp_path / "src" / "pairs.txt"),
                                             occlusion="crowd", image_ext=".png", seed=seed), tmp_path / f"out{seed}")
        for i, name in enumerate(names):
            # name_1 is paired with name_2 and with the next name's _2; name_2 with the previous name's _1
            for k, partner in ((1, names[(i + 1) % 3]), (2, names[(i - 1) % 3])):
                allowed = (set(names) - {name, partner}).pop()
                source = read_image(tmp_path / "src" / name / f"{name}_{k:04d}.png")
                output = read_image(out / "images" / name / f"{name}_{k:04d}.png")
                changed = (output != source).any(axis=2)
                pasted = output[changed].astype(np.int64).mean(axis=0)
                assert names[int(np.argmax(pasted))] == allowed, (name, k, seed, pasted)
