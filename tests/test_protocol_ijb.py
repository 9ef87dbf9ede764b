"""IJB-B / IJB-C: published metadata layouts, media → template pooling, 1:1 TAR@FAR and 1:N TPIR@FPIR / rank-1 in
closed form, the masked variant and 'not available'."""
import math

import numpy as np
import pytest
import torch

from test_protocol import PROTOCOLS
from test_protocol.evaluate import build_protocols
from test_protocol.ijb.ijb import identification_1toN, pool_templates, read_1n_csv, verification_1to1

DIM = 32


def unit(weights):
    """Vector with the given {axis: weight}; the rest of the unit norm on its own fresh axis (``'u'`` key)."""
    v = np.zeros(DIM, dtype=np.float32)
    rest = 1.0
    for axis, w in weights.items():
        if axis != "u":
            v[axis] = w
            rest -= w * w
    if rest > 1e-9:
        v[weights["u"]] = math.sqrt(rest)
    return v


def touch(root, names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_pooling_media_mean_then_template_sum_with_detector_weights():
    feats = np.stack([unit({0: 1.0}), unit({1: 1.0}), unit({2: 1.0}), unit({3: 1.0})])
    templates, medias = np.array([7, 7, 7, 9]), np.array([10, 10, 11, 12])
    ids, pooled = pool_templates(feats * 3.0, templates, medias)  # image features are normalised first
    assert ids.tolist() == [7, 9]
    np.testing.assert_allclose(pooled[0, :3], np.array([0.5, 0.5, 1.0]) / math.sqrt(1.5), atol=1e-6)
    np.testing.assert_allclose(pooled[1, 3], 1.0)
    _, weighted = pool_templates(feats, templates, medias, weights=np.array([1.0, 0.0, 1.0, 0.5]))
    np.testing.assert_allclose(weighted[0, :3], np.array([0.5, 0.0, 1.0]) / math.sqrt(1.25), atol=1e-6)


GENUINE = [0.9] * 8 + [0.3] * 2
IMPOSTOR = [0.95] + [0.5] * 9 + [0.35] * 5 + [0.0] * 985
EXPECTED_TAR = {"tar@far=1e-6": None, "tar@far=1e-5": None, "tar@far=1e-4": None, "tar@far=1e-3": 80.0,
                "tar@far=1e-2": 80.0, "tar@far=1e-1": 100.0}


def pair_vectors():
    scores = GENUINE + IMPOSTOR
    first = np.stack([unit({0: 1.0})] * len(scores))
    second = np.stack([unit({0: s, "u": 1}) for s in scores])
    return first, second, np.array([True] * len(GENUINE) + [False] * len(IMPOSTOR))


def test_1to1_tar_at_far_closed_form():
    first, second, issame = pair_vectors()
    columns, scores = verification_1to1(first, second, issame)
    for key, value in EXPECTED_TAR.items():
        assert columns[key] == (None if value is None else pytest.approx(value)), key
    assert columns["far_floor"] == pytest.approx(1e-3)


def write_ijbc_1to1(tmp_path, prefix="ijbc"):
    """``<prefix>_face_tid_mid.txt`` + ``<prefix>_template_pair_label.txt`` + ``<prefix>_name_5pts_score.txt``:
    every pair has its own two one-image templates; returns (meta, root, {path: feature})."""
    first, second, issame = pair_vectors()
    meta, root = tmp_path / "meta", tmp_path / "loose_crop"
    meta.mkdir()
    tid_mid, pairs, score_lines, feats = [], [], [], {}
    for k, (a, b, same) in enumerate(zip(first, second, issame)):
        t1, t2 = 2 * k + 1, 2 * k + 2
        for t, vector in ((t1, a), (t2, b)):
            image = f"{t}.jpg"
            tid_mid.append(f"{image} {t} {t + 50000}")
            score_lines.append(f"{image} " + " ".join(["1.0"] * 10) + " 0.9")
            feats[image] = vector
        pairs.append(f"{t1} {t2} {int(same)}")
    (meta / f"{prefix}_face_tid_mid.txt").write_text("\n".join(tid_mid) + "\n")
    (meta / f"{prefix}_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    (meta / f"{prefix}_name_5pts_score.txt").write_text("\n".join(score_lines) + "\n")
    touch(root, feats)
    return meta, root, feats


def run(protocol, feats_by_key):
    paths = protocol.image_paths()
    protocol.process(paths, torch.from_numpy(np.stack([feats_by_key[p] for p in paths])))
    return protocol.compute(checkpoint="ck.pt")


@pytest.mark.parametrize("dataset", ["IJBC", "IJBB"])
def test_1to1_protocol_on_published_layout(tmp_path, dataset):
    meta, root, feats = write_ijbc_1to1(tmp_path, prefix=dataset.lower())
    protocol = PROTOCOLS.build({"type": "IJBProtocol", "name": f"{dataset}-1:1", "root": str(root),
                                "meta_dir": str(meta), "dataset": dataset, "task": "1:1", "detector_score": True})
    row = run(protocol, {f"{root}/{name}": v for name, v in feats.items()})
    for key, value in EXPECTED_TAR.items():
        assert row[key] == (None if value is None else pytest.approx(value)), key
    assert row["variant"] == "ijb_1to1" and row["num_pairs"] == 1010 and row["checkpoint"] == "ck.pt"
    fpr, tpr = protocol.roc_curve()
    assert fpr[-1] == 1.0 and tpr[-1] == 1.0


# 1:N: gallery subjects 1-4 (one 2-image template each); mixed probes = mated subjects 1-4 + non-mated 5-14
NONMATED = [0.95, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
MATED = {1: {1: 1.0}, 2: {2: 0.75, "u": 20}, 3: {3: 0.65, "u": 21}, 4: {1: 0.9, "u": 22}}  # 4 is mis-identified


def write_1n(tmp_path, prefix="ijbc", gallery="G1"):
    meta, root, masked = tmp_path / "meta", tmp_path / "img", tmp_path / "masked"
    meta.mkdir(exist_ok=True)
    gallery_rows, probe_rows = ["TEMPLATE_ID,SUBJECT_ID,FILENAME,MEDIA_ID"], ["TEMPLATE_ID,SUBJECT_ID,FILENAME"]
    feats = {}
    for s in range(1, 5):
        for k in range(2):
            name = f"img/g{s}_{k}.jpg"
            gallery_rows.append(f"{100 + s},{s},{name},{1000 + s}")
            feats[f"{root}/{name}"] = unit({s: 1.0})
    probes = [(s, unit(w)) for s, w in MATED.items()]
    probes += [(5 + k, unit({1: a, "u": 24 + k % 8})) for k, a in enumerate(NONMATED)]
    for t, (s, vector) in enumerate(probes):
        name = f"frames/p{t}.jpg"
        probe_rows.append(f"{200 + t},{s},{name}")
        feats[f"{root}/{name}"] = vector
        # masked copy: subject 2's probe drops to 0.55 on its axis, the rest are unchanged
        feats[f"{masked}/{name}"] = unit({2: 0.55, "u": 20}) if s == 2 else vector
    (meta / f"{prefix}_1N_gallery_{gallery}.csv").write_text("\n".join(gallery_rows) + "\n")
    (meta / f"{prefix}_1N_probe_mixed.csv").write_text("\n".join(probe_rows) + "\n")
    names = [p[len(str(root)) + 1:] for p in feats if p.startswith(str(root) + "/")]
    touch(root, names)
    touch(masked, [n for n in names if n.startswith("frames/")])
    return meta, root, masked, feats


def test_1toN_closed_form(tmp_path):
    meta, root, masked, feats = write_1n(tmp_path)
    g = read_1n_csv(meta / "ijbc_1N_gallery_G1.csv")
    assert g["template"].tolist()[:2] == [101, 101] and g["media"].tolist()[:2] == [1001, 1001]
    protocol = PROTOCOLS.build({"type": "IJBProtocol", "name": "IJBC-1:N-G1", "root": str(root),
                                "meta_dir": str(meta), "task": "1:N", "gallery": "G1",
                                "fpirs": [0.01, 0.1, 0.3]})
    row = run(protocol, feats)
    assert row["rank1"] == pytest.approx(75.0)
    assert row["tpir@fpir=1e-2"] is None                         # 10 non-mated probes: no false alarm allowed
    assert row["tpir@fpir=1e-1"] == pytest.approx(25.0)          # threshold 0.8: only subject 1 (score 1.0)
    assert row["tpir@fpir=3e-1"] == pytest.approx(75.0)          # threshold 0.6: subjects 1, 2, 3
    assert (row["num_mated"], row["num_nonmated"], row["num_gallery"]) == (4, 10, 4)
    assert row["variant"] == "ijb_1toN_G1"
    masked_row = run(PROTOCOLS.build({"type": "IJBProtocol", "name": "IJBC-MASK-1:N-G1", "root": str(root),
                                      "meta_dir": str(meta), "task": "1:N", "gallery": "G1", "variant": "mask",
                                      "masked_root": str(masked), "fpirs": [0.3]}), feats)
    assert masked_row["variant"] == "ijb_1toN_G1_mask"
    assert masked_row["tpir@fpir=3e-1"] == pytest.approx(50.0)   # subject 2's masked probe: 0.55 < 0.6
    assert masked_row["rank1"] == pytest.approx(75.0)


def test_identification_function_matches_direct_counting():
    rng = np.random.default_rng(1)
    gallery = rng.standard_normal((5, 8))
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    probe = gallery[[0, 1, 2]] + 0.01
    probe = np.vstack([probe, rng.standard_normal((20, 8)) * 0.1])
    subjects = np.r_[0, 1, 2, np.arange(100, 120)]
    out = identification_1toN(probe, subjects, gallery, np.arange(5), fpirs=(0.05,))
    assert out["rank1"] == pytest.approx(100.0) and out["num_nonmated"] == 20


def test_missing_data_is_not_available(tmp_path):
    rows = build_protocols([{"type": "IJBProtocol", "name": "IJBC", "root": str(tmp_path / "a"),
                             "meta_dir": str(tmp_path / "b")}])
    assert rows[0]["status"].startswith("not available")


def test_end_to_end_on_embedded_synthetic_faces_through_the_cli(tmp_path):
    """IJB-C layout from the synthetic test faces (2 two-image templates per identity), test_ijbc.sh on a tiny
    calibrated random MobileFaceNet; 1:1 TAR, 1:N rank-1 / TPIR and the masked 1:1 equal a direct count on the
    same embeddings pooled by hand."""
    import json
    import os
    import subprocess
    from pathlib import Path

    import yaml

    from data_processor.synthetic_faces import ensure_synthetic_faces
    from test_protocol.data_conf import REPO_ROOT, data_roots
    from test_protocol.extract import extract_embeddings
    from test_protocol.megaface.megaface import build_masked_facescrub
    from test_protocol.model_loading import load_for_evaluation
    from tests.test_protocol_megaface import calibrated_export

    synth = data_roots()["FACE_DATA_ROOT"] / "synthetic_faces"
    ensure_synthetic_faces(synth)
    images = synth / "test" / "images"
    by_id = {}
    for line in (synth / "test" / "test_list.txt").read_text().splitlines():
        if line:
            by_id.setdefault(line.split()[0].split("/")[0], []).append(line.split()[0])
    names = [n for n in sorted(by_id) if len(by_id[n]) >= 4][:10]
    assert len(names) == 10
    meta = tmp_path / "meta"
    meta.mkdir()
    tid_mid, templates, used = [], {}, []
    for s, name in enumerate(names):
        for half in (0, 1):
            t = 10 * s + half + 1
            templates[t] = (s, by_id[name][2 * half:2 * half + 2])
            for k, image in enumerate(templates[t][1]):
                tid_mid.append(f"{image} {t} {t * 10 + (0 if half else k)}")  # the second template: one media
                used.append(image)
    pairs = [(10 * a + 1, 10 * b + 2, int(a == b)) for a in range(10) for b in range(10)]
    (meta / "ijbc_face_tid_mid.txt").write_text("\n".join(tid_mid) + "\n")
    (meta / "ijbc_template_pair_label.txt").write_text("\n".join(f"{a} {b} {c}" for a, b, c in pairs) + "\n")
    header = "TEMPLATE_ID,SUBJECT_ID,FILENAME\n"
    (meta / "ijbc_1N_gallery_G1.csv").write_text(header + "".join(
        f"{t},{templates[t][0]},{i}\n" for t in templates if t % 10 == 1 and templates[t][0] < 5
        for i in templates[t][1]))
    (meta / "ijbc_1N_probe_mixed.csv").write_text(header + "".join(
        f"{t},{templates[t][0]},{i}\n" for t in templates if t % 10 == 2 for i in templates[t][1]))
    build_masked_facescrub(images, synth / "test" / "landmarks.txt", tmp_path / "masked", "mask", 0, used)
    common = {"type": "IJBProtocol", "dataset": "IJBC", "root": str(images), "meta_dir": str(meta)}
    conf = {"sets": {"S-1:1": {**common, "task": "1:1"},
                     "S-1:N": {**common, "task": "1:N", "gallery": "G1", "fpirs": [0.2, 0.4]},
                     "S-MASK-1:1": {**common, "task": "1:1", "variant": "mask",
                                    "masked_root": str(tmp_path / "masked")}}}
    (tmp_path / "data_conf.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    export = calibrated_export(tmp_path / "export", [str(images / i) for i in used])
    out = tmp_path / "rows.json"
    result = subprocess.run(["bash", "test_protocol/test_ijbc.sh", "--export", str(export), "--data-conf",
                             str(tmp_path / "data_conf.yaml"), "--sets", "S-1:1,S-1:N,S-MASK-1:1", "--device", "cpu",
                             "--json", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {row["set"]: row for row in json.loads(out.read_text())["rows"]}

    loaded = load_for_evaluation(None, str(export), "work_dirs", None)

    def template(root, t):
        feats = torch.nn.functional.normalize(extract_embeddings(
            loaded.model, [str(Path(root) / i) for i in templates[t][1]], loaded.spec, "cpu"), dim=1).double()
        pooled = feats.mean(0) if t % 10 == 2 else feats.sum(0)   # one media (mean) vs two single-image media (sum)
        return (pooled / pooled.norm()).numpy()

    clean = {t: template(images, t) for t in templates}
    masked = {t: template(tmp_path / "masked", t) for t in templates}
    for set_name, second in (("S-1:1", clean), ("S-MASK-1:1", masked)):
        scores = np.array([clean[a] @ second[b] for a, b, _ in pairs])
        same = np.array([c for _, _, c in pairs], dtype=bool)
        impostor = np.sort(scores[~same])[::-1]
        assert rows[set_name]["tar@far=1e-1"] == pytest.approx(100 * np.mean(scores[same] > impostor[9]), abs=1e-6)
        assert rows[set_name]["tar@far=1e-2"] is None                      # 90 impostor pairs
    gallery = [t for t in templates if t % 10 == 1 and templates[t][0] < 5]
    probes = [t for t in templates if t % 10 == 2]
    sim = np.array([[clean[p] @ clean[g] for g in gallery] for p in probes])
    best = np.array([templates[gallery[i]][0] for i in sim.argmax(1)])
    subject = np.array([templates[p][0] for p in probes])
    mated = subject < 5
    top1 = sim.max(1)
    nonmated = np.sort(top1[~mated])[::-1]
    row = rows["S-1:N"]
    assert row["rank1"] == pytest.approx(100 * np.mean(best[mated] == subject[mated]))
    for fpir, allowed in ((0.2, 1), (0.4, 2)):
        expected = 100 * np.mean((best[mated] == subject[mated]) & (top1[mated] > nonmated[allowed]))
        assert row[f"tpir@fpir={fpir:.0e}".replace("e-0", "e-")] == pytest.approx(expected)
