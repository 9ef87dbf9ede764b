"""MegaFace / MegaFace-Mask: published list layouts, noise handling, CMC and TAR@FAR in closed form, and the chunked
on-disk search that makes 1M distractors fit."""
import json
import math

import numpy as np
import pytest
import torch

from test_protocol import PROTOCOLS
from test_protocol.megaface.feature_store import chunked_search, open_store, write_store
from test_protocol.megaface.megaface import (
    distractor_list_name,
    evaluate_megaface,
    match_noise,
    read_noise_list,
)
from test_protocol.protocol_base import rate_key

DIM = 64
C, COS = 0.875, 0.75          # hard-distractor weight on the identity axis; cos φ of the "hard" identities
# identity: (images, cos φ of its images, hard distractors)
IDS = {"Alice_A": (3, 1.0, 0), "Bob_B": (4, COS, 2), "Carl_C": (2, COS, 5), "Dana_D": (3, 1.0, 3)}
TRIALS = {name: m * (m - 1) for name, (m, _, _) in IDS.items()}   # 6, 12, 2, 6 → 26
TOTAL = sum(TRIALS.values())
FILLERS = 100


def basis(i):
    v = np.zeros(DIM, dtype=np.float32)
    v[i] = 1.0
    return v


def planted(masked=False):
    """(facescrub paths, ids, clean feats, masked feats, distractor paths, distractor feats, hard rows by id)."""
    dim = iter(range(len(IDS), DIM))
    axis = {name: basis(i) for i, name in enumerate(IDS)}
    paths, ids, clean, mask = [], [], [], []
    hard_dims = {}
    for name, (m, cos, h) in IDS.items():
        for k in range(m):
            paths.append(f"{name}/{name}_{k + 1}.png")
            ids.append(name)
            clean.append(cos * axis[name] + math.sqrt(1 - cos * cos) * basis(next(dim)))
    dist_paths, dist = [], []
    for name, (m, cos, h) in IDS.items():
        hard_dims[name] = []
        for k in range(h):
            d = next(dim)
            hard_dims[name].append(len(dist))
            dist_paths.append(f"{k}/{name}_hard@{k}/{k}.jpg")
            dist.append(C * axis[name] + math.sqrt(1 - C * C) * basis(d))
            if name == "Dana_D" and k == 0:
                dana_hard_dim = d
    for row, name in zip(range(len(paths)), ids):  # masked query: 0.5 on its axis; Dana's pulled to a hard one
        other = dana_hard_dim if name == "Dana_D" else next(dim)
        mask.append(0.5 * axis[name] + math.sqrt(0.75) * basis(other))
    filler_start = next(dim)
    rng = np.random.default_rng(0)
    for k in range(FILLERS):
        v = np.zeros(DIM, dtype=np.float32)
        v[filler_start:] = rng.standard_normal(DIM - filler_start)
        dist_paths.append(f"9/filler@{k}/{k}.jpg")
        dist.append(v / np.linalg.norm(v))
    return paths, ids, np.stack(clean), np.stack(mask), dist_paths, np.stack(dist), hard_dims


def expected_cmc(rank_of):
    return np.array([sum(TRIALS[n] for n in IDS if rank_of[n] <= r) / TOTAL for r in range(1, 11)])


CLEAN_RANKS = {"Alice_A": 1, "Bob_B": 3, "Carl_C": 6, "Dana_D": 1}
MASK_RANKS = {"Alice_A": 1, "Bob_B": 3, "Carl_C": 6, "Dana_D": 2}


def write_published_layout(tmp_path, paths, ids, dist_paths, sizes=(10,)):
    """facescrub_features_list.json, megaface_features_list.json_<N>_1 (N = all and each of ``sizes``), empty
    image files under facescrub/, megaface/ and facescrub_masked/."""
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "facescrub_features_list.json").write_text(json.dumps({"path": paths, "id": ids}))
    for size in (len(dist_paths), *sizes):
        (lists / distractor_list_name(size)).write_text(json.dumps({"path": dist_paths[:size]}))
    for root, names in (("facescrub", paths), ("facescrub_masked", paths), ("megaface", dist_paths)):
        for name in names:
            (tmp_path / root / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / root / name).write_bytes(b"")
    return lists


def build(tmp_path, lists, count, feats, **kwargs):
    cfg = {"type": "MegaFaceProtocol", "name": "MEGAFACE-T", "facescrub_root": str(tmp_path / "facescrub"),
           "megaface_root": str(tmp_path / "megaface"), "lists_dir": str(lists), "distractors": count,
           "chunk": 7, "device": "cpu", **kwargs}
    protocol = PROTOCOLS.build(cfg)
    paths = protocol.image_paths()
    protocol.process(paths, torch.from_numpy(np.stack([feats[p] for p in paths])))
    return protocol


def feature_map(tmp_path, paths, clean, mask, dist_paths, dist):
    feats = {f"{tmp_path}/facescrub/{p}": v for p, v in zip(paths, clean)}
    feats.update({f"{tmp_path}/facescrub_masked/{p}": v for p, v in zip(paths, mask)})
    feats.update({f"{tmp_path}/megaface/{p}": v for p, v in zip(dist_paths, dist)})
    return feats


def test_cmc_and_tar_closed_form():
    paths, ids, clean, mask, dist_paths, dist, _ = planted()
    labels = np.array([list(IDS).index(i) for i in ids])
    impostors = len(paths) * len(dist)
    fars = (0.5 / impostors, 5 / impostors, 9 / impostors, 27 / impostors)
    metrics = evaluate_megaface(clean, clean, labels, dist.astype(np.float16), fars=fars, chunk=7)
    np.testing.assert_allclose(metrics["cmc"], expected_cmc(CLEAN_RANKS))
    assert metrics["num_trials"] == TOTAL and metrics["num_impostors"] == impostors
    # impostors: 9 at 0.875 (Dana), 18 at 0.65625 (Bob, Carl), the rest 0
    tar = metrics["tar"]
    assert tar[fars[0]] is None                                  # not even one false accept allowed
    assert tar[fars[1]] == pytest.approx(12 / TOTAL)            # threshold 0.875: Alice + Dana (score 1)
    assert tar[fars[2]] == pytest.approx(12 / TOTAL)            # threshold 0.65625
    assert tar[fars[3]] == pytest.approx(1.0)                    # threshold 0


def test_mask_variant_closed_form():
    paths, ids, clean, mask, dist_paths, dist, _ = planted()
    labels = np.array([list(IDS).index(i) for i in ids])
    metrics = evaluate_megaface(mask, clean, labels, dist.astype(np.float16), chunk=5)
    np.testing.assert_allclose(metrics["cmc"], expected_cmc(MASK_RANKS))


def test_protocol_on_published_layout_with_noise_lists(tmp_path):
    paths, ids, clean, mask, dist_paths, dist, hard = planted()
    lists = write_published_layout(tmp_path, paths, ids, dist_paths)
    clean = clean.copy()
    clean[0] = clean[7]  # Carl's first image filed as Alice's first: a FaceScrub noise image
    feats = feature_map(tmp_path, paths, clean, mask, dist_paths, dist)
    noisy = build(tmp_path, lists, len(dist_paths), feats).compute()
    assert noisy["rank1"] != pytest.approx(100.0 * expected_cmc(CLEAN_RANKS)[0])
    noises = tmp_path / "noises"
    noises.mkdir()
    (noises / "facescrub_noises.txt").write_text(f"# FaceScrub noise\n{paths[0].split('/')[-1]}\n")
    carl_hard = [dist_paths[i] for i in hard["Carl_C"]]
    (noises / "megaface_noises.txt").write_text("\n".join(carl_hard + ["not/in/this/set.jpg"]) + "\n")
    row = build(tmp_path, lists, len(dist_paths), feats, noises_dir=str(noises)).compute(checkpoint="ck.pt")
    cleaned = dict(CLEAN_RANKS, Carl_C=1)  # Carl's hard distractors are zeroed; Alice's noise image → centre
    np.testing.assert_allclose([row[f"rank@{r}"] for r in range(1, 11)], 100.0 * expected_cmc(cleaned))
    assert row["rank1"] == row["rank@1"] and row["variant"] == "megaface" and row["checkpoint"] == "ck.pt"
    assert (row["noise_facescrub"], row["noise_megaface"], row["noise_unmatched"]) == (1, 5, 1)
    assert row["num_distractors"] == len(dist_paths) and row["num_pairs"] == TOTAL
    masked = build(tmp_path, lists, len(dist_paths), feats, variant="mask",
                   masked_root=str(tmp_path / "facescrub_masked")).compute()
    assert masked["variant"] == "megaface_mask"
    # Alice's masked query 0 is a clean-vs-masked pair of the fixed (not noise-cleaned) set: only check ranks ≥ 6
    assert masked["rank@10"] <= 100.0


def test_distractor_size_selects_published_list(tmp_path):
    paths, ids, clean, mask, dist_paths, dist, _ = planted()
    lists = write_published_layout(tmp_path, paths, ids, dist_paths, sizes=(3,))
    feats = feature_map(tmp_path, paths, clean, mask, dist_paths, dist)
    row = build(tmp_path, lists, 3, feats).compute()  # the first 3 distractors: Bob's 2 hard + Carl's 1
    assert row["num_distractors"] == 3
    assert row["rank1"] == pytest.approx(100.0 * (6 + 6) / TOTAL)
    assert row["rank@2"] == pytest.approx(100.0 * (6 + 6 + 2) / TOTAL)   # Carl: one hard distractor → rank 2
    assert row["rank@3"] == pytest.approx(100.0)
    # the same through an on-disk store of all distractors (the 3-image list is looked up in it by name)
    write_store(tmp_path / "store", dist_paths[::-1], [dist[::-1]], DIM, extra={"model": "planted"})
    cfg = {"type": "MegaFaceProtocol", "name": "MEGAFACE-T", "facescrub_root": str(tmp_path / "facescrub"),
           "megaface_root": str(tmp_path / "nowhere"), "lists_dir": str(lists), "distractors": 3, "chunk": 2,
           "device": "cpu", "distractor_features": str(tmp_path / "store")}
    stored = PROTOCOLS.build(cfg)
    assert len(stored.image_paths()) == len(paths)          # only FaceScrub is embedded
    stored.process(stored.image_paths(), torch.from_numpy(np.stack([feats[p] for p in stored.image_paths()])))
    stored_row = stored.compute()
    assert [stored_row[f"rank@{r}"] for r in range(1, 11)] == [row[f"rank@{r}"] for r in range(1, 11)]
    assert stored_row["distractor_features"]["model"] == "planted"


def test_missing_data_is_not_available(tmp_path):
    from test_protocol.evaluate import build_protocols

    rows = build_protocols([{"type": "MegaFaceProtocol", "name": "MEGAFACE-1M", "facescrub_root": str(tmp_path / "x"),
                             "megaface_root": str(tmp_path / "y"), "lists_dir": str(tmp_path / "z")}])
    assert rows[0]["status"].startswith("not available")


def test_noise_matching_by_path_suffix_or_name():
    index, unmatched = match_noise(["b/c.jpg", "z.jpg", "a/b/d.jpg", "q.jpg"], ["a/b/c.jpg", "a/b/d.jpg", "x/z.jpg"])
    assert index.tolist() == [0, 1, 2] and unmatched == 1


def test_store_and_chunked_search_match_brute_force(tmp_path):
    rng = np.random.default_rng(3)
    gallery = rng.standard_normal((1003, 32)).astype(np.float32)
    names = [f"g/{i}.jpg" for i in range(len(gallery))]
    write_store(tmp_path / "store", names, (gallery[s:s + 100] for s in range(0, len(gallery), 100)), 32)
    store = open_store(tmp_path / "store")
    assert store.features.dtype == np.float16 and isinstance(store.features, np.memmap) and store.names == names
    queries = rng.standard_normal((11, 32)).astype(np.float32)
    zero = np.array([5, 500, 1002])
    result = chunked_search(queries, store.features, k=10, global_k=30, chunk=97, zero_rows=zero)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    full = q @ store.features.astype(np.float32).T
    full[:, zero] = 0.0
    np.testing.assert_allclose(result.scores, -np.sort(-full, axis=1)[:, :10], atol=1e-5)
    np.testing.assert_allclose(result.global_top, -np.sort(-full.ravel())[:30], atol=1e-5)
    np.testing.assert_allclose(full[np.arange(11)[:, None], result.indices], result.scores, atol=1e-6)
    assert read_noise_list  # imported API


def test_end_to_end_on_embedded_synthetic_faces_through_the_cli(tmp_path):
    """FaceScrub = 6 synthetic test identities, distractors = one image of 40 others, masked copy by our occlusion
    module; test_megaface.sh on a tiny random MobileFaceNet export; the rows equal a brute-force full-matrix count
    on the same embeddings."""
    import subprocess
    from pathlib import Path

    import yaml

    from data_processor.synthetic_faces import ensure_synthetic_faces
    from test_protocol.data_conf import REPO_ROOT, data_roots
    from test_protocol.extract import extract_embeddings
    from test_protocol.megaface.megaface import build_masked_facescrub
    from test_protocol.model_loading import load_for_evaluation

    synth = data_roots()["FACE_DATA_ROOT"] / "synthetic_faces"
    ensure_synthetic_faces(synth)
    images = synth / "test" / "images"
    listed = [line.split()[0] for line in (synth / "test" / "test_list.txt").read_text().splitlines() if line]
    by_id = {}
    for path in listed:
        by_id.setdefault(path.split("/")[0], []).append(path)
    names = sorted(by_id)
    probes = [p for n in names[:6] for p in by_id[n][:3]]
    distractors = [by_id[n][0] for n in names[6:46]]
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "facescrub_features_list.json").write_text(json.dumps({"path": probes,
                                                                     "id": [p.split("/")[0] for p in probes]}))
    (lists / distractor_list_name(len(distractors))).write_text(json.dumps({"path": distractors}))
    from test_protocol.megaface.build_masked import main as build_masked_main

    assert build_masked_main(["--source", str(images), "--landmarks", str(synth / "test" / "landmarks.txt"),
                              "--out", str(tmp_path / "masked"), "--list",
                              str(lists / "facescrub_features_list.json")]) == 0
    first = tmp_path / "masked" / probes[0]
    build_masked_facescrub(images, synth / "test" / "landmarks.txt", tmp_path / "again", "mask", 0, probes)
    assert first.read_bytes() == (tmp_path / "again" / probes[0]).read_bytes()  # (seed, index): reproducible
    common = {"type": "MegaFaceProtocol", "facescrub_root": str(images), "megaface_root": str(images),
              "lists_dir": str(lists), "distractors": len(distractors), "chunk": 50, "device": "cpu",
              "fars": [1e-2, 5e-2]}
    export = calibrated_export(tmp_path / "export", [str(images / p) for p in probes + distractors])
    from test_protocol.megaface.extract_distractors import main as extract_main

    assert extract_main(["--export", str(export), "--list", str(lists / distractor_list_name(len(distractors))),
                         "--root", str(images), "--out", str(tmp_path / "store"), "--block", "7",
                         "--device", "cpu"]) == 0
    conf = {"sets": {"MEGAFACE-SYNTH": dict(common),
                     "MEGAFACE-SYNTH-STORE": {**common, "distractor_features": str(tmp_path / "store")},
                     "MEGAFACE-SYNTH-MASK": {**common, "variant": "mask", "masked_root": str(tmp_path / "masked")}}}
    (tmp_path / "data_conf.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    out = tmp_path / "rows.json"
    result = subprocess.run(["bash", "test_protocol/test_megaface.sh", "--export", str(export), "--data-conf",
                             str(tmp_path / "data_conf.yaml"),
                             "--sets", "MEGAFACE-SYNTH,MEGAFACE-SYNTH-MASK,MEGAFACE-SYNTH-STORE",
                             "--device", "cpu", "--json", str(out)], cwd=REPO_ROOT, capture_output=True, text=True,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {row["set"]: row for row in json.loads(out.read_text())["rows"]}
    assert "MEGAFACE-SYNTH" in result.stdout and rows["MEGAFACE-SYNTH-MASK"]["variant"] == "megaface_mask"
    assert 0 < rows["MEGAFACE-SYNTH"]["rank@10"] and rows["MEGAFACE-SYNTH"]["rank1"] < 100  # not degenerate
    ranks = lambda row: np.array([row[f"rank@{r}"] for r in range(1, 11)])
    # float16 distractors from the store: equal up to a trial flipped by rounding
    np.testing.assert_allclose(ranks(rows["MEGAFACE-SYNTH-STORE"]), ranks(rows["MEGAFACE-SYNTH"]),
                               atol=100 / 36 + 1e-9)

    loaded = load_for_evaluation(None, str(export), "work_dirs", None)
    embed = lambda root, paths: torch.nn.functional.normalize(
        extract_embeddings(loaded.model, [str(Path(root) / p) for p in paths], loaded.spec, "cpu"), dim=1).numpy()
    clean, dist = embed(images, probes).astype(np.float64), embed(images, distractors).astype(np.float64)
    masked = embed(tmp_path / "masked", probes).astype(np.float64)
    labels = np.array([names.index(p.split("/")[0]) for p in probes])
    for set_name, query in (("MEGAFACE-SYNTH", clean), ("MEGAFACE-SYNTH-MASK", masked)):
        full = query @ dist.T                             # brute force: the whole [queries, distractors] matrix
        topk = -np.sort(-full, axis=1)[:, :10]
        genuine, hits = [], np.zeros(10)
        for j in range(len(probes)):
            for i in range(len(probes)):
                if i != j and labels[i] == labels[j]:
                    s = float(clean[i] @ query[j])
                    genuine.append(s)
                    hits += s >= topk[j]
        row = rows[set_name]
        np.testing.assert_allclose([row[f"rank@{r}"] for r in range(1, 11)], 100.0 * hits / len(genuine), atol=1e-6)
        impostor = np.sort(full.ravel())[::-1]
        for far in (1e-2, 5e-2):
            allowed = int(np.floor(far * impostor.size + 1e-9))
            expected = 100.0 * np.mean(np.array(genuine) > impostor[allowed])
            assert row[rate_key(far)] == pytest.approx(expected, abs=1e-6)


def calibrated_export(folder, paths):
    """The tiny random MobileFaceNet of test_protocol_cli with its embedding BatchNorm set to the statistics of
    ``paths``: a random-projection embedding whose cosines spread over [-1, 1] (the raw random net maps every face
    to nearly the same direction, where float rounding decides ranks)."""
    from data_processor.preprocess import PreprocessSpec
    from test_protocol.extract import extract_embeddings
    from tests.test_protocol_cli import BACKBONE, PREPROCESS, make_model
    from utils.checkpoint import export_backbone

    model = make_model()
    outputs = []
    hook = model.neck.fc.register_forward_hook(lambda module, inputs, output: outputs.append(output.detach()))
    extract_embeddings(model, paths, PreprocessSpec(), "cpu")
    hook.remove()
    stacked = torch.cat(outputs)
    model.neck.bn_embedding.running_mean.copy_(stacked.mean(0))
    model.neck.bn_embedding.running_var.copy_(stacked.var(0))
    backbone_cfg = dict(BACKBONE)
    meta = {"arch": backbone_cfg.pop("type"), "kwargs": backbone_cfg, "embedding_dim": 32, "preprocess": PREPROCESS}
    return export_backbone(model, meta, folder)
