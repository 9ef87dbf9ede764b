"""Pairs parsers on tiny fixtures (one per format), their error messages, and the real files in ../shared."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from data_processor.verification_bin import read_verification_bin, write_verification_bin
from test_protocol import PAIRS_PARSERS, PROTOCOLS
from test_protocol.meglass import meglass_identity, read_meglass_list

FIXTURES = Path(__file__).parent / "fixtures" / "protocols"


def pair_names(pairs):
    return [(pairs.images[a], pairs.images[b], bool(same))
            for a, b, same in zip(pairs.first, pairs.second, pairs.issame)]


def test_registries_list_every_parser_and_protocol():
    assert {"lfw", "rfw", "calfw", "cplfw", "agedb_mat", "bin"} <= set(PAIRS_PARSERS.names())
    assert {"PairVerification", "MeGlassProtocol"} <= set(PROTOCOLS.names())


def test_lfw_parser_builds_names_and_reads_folds_from_header():
    pairs = PAIRS_PARSERS.get("lfw")(FIXTURES / "lfw_pairs_6.txt", image_ext=".png")
    assert pairs.num_folds == 3 and len(pairs) == 6
    assert pair_names(pairs)[:2] == [("Alice/Alice_0001.png", "Alice/Alice_0002.png", True),
                                     ("Alice/Alice_0001.png", "Bob/Bob_0001.png", False)]
    assert len(pairs.images) == 6  # deduplicated
    assert pairs.issame.tolist() == [True, False] * 3


def test_rfw_parser_has_no_header():
    pairs = PAIRS_PARSERS.get("rfw")(FIXTURES / "rfw_pairs.txt")
    assert len(pairs) == 4 and pairs.num_folds is None
    assert pair_names(pairs)[3] == ("Bob/Bob_0002.jpg", "Carol/Carol_0001.jpg", False)


def test_lfw_parser_rejects_headerless_and_misordered_files(tmp_path):
    with pytest.raises(ValueError, match=r"rfw_pairs.txt:1: expected the header"):
        PAIRS_PARSERS.get("lfw")(FIXTURES / "rfw_pairs.txt")
    swapped = tmp_path / "pairs.txt"
    swapped.write_text("1\t1\nAlice\t1\tBob\t1\nAlice\t1\t2\n")
    with pytest.raises(ValueError, match=r"pairs.txt:2: each fold must list 1 same-person lines"):
        PAIRS_PARSERS.get("lfw")(swapped)
    broken = tmp_path / "broken.txt"
    broken.write_text("1\t1\nAlice\t1\nAlice\t1\tBob\t1\n")
    with pytest.raises(ValueError, match=r"broken.txt:2: expected 'name i j'"):
        PAIRS_PARSERS.get("lfw")(broken)


@pytest.mark.parametrize("parser, first", [("calfw", "Alice_0001.jpg"), ("cplfw", "Alice_1.jpg")])
def test_two_line_parsers_interleave_positives_and_negatives_per_fold(parser, first):
    pairs = PAIRS_PARSERS.get(parser)(FIXTURES / f"{parser}_pairs.txt", num_folds=2)
    names = pair_names(pairs)
    assert pairs.issame.tolist() == [True, False, True, False]  # fold k = positive k, negative k
    assert names[0][0] == first
    assert names[1][1] == first.replace("Alice", "Bob")  # first negative pair: Alice_1 vs Bob_1


def test_two_line_parser_errors_name_the_file(tmp_path):
    odd = tmp_path / "odd.txt"
    odd.write_text("A_1.jpg 1\nA_2.jpg 1\nB_1.jpg 0\n")
    with pytest.raises(ValueError, match="odd.txt: two lines per pair"):
        PAIRS_PARSERS.get("calfw")(odd, num_folds=1)
    bad_label = tmp_path / "bad.txt"
    bad_label.write_text("A_1.jpg 7\nA_2.jpg 7\nB_1.jpg 0\nC_1.jpg 0\n")
    with pytest.raises(ValueError, match="bad.txt:1: CPLFW labels are 1"):
        PAIRS_PARSERS.get("cplfw")(bad_label, num_folds=1)
    assert PAIRS_PARSERS.get("calfw")(bad_label, num_folds=1).issame.tolist() == [True, False]


def write_agedb_mat(path: Path, folds: int = 2) -> None:
    """AgeDB-30's layout: ``splits`` (folds x 1 struct) → {pairs: 2xN cell of {name}, labels: 1xN of ±1}."""
    splits = np.zeros((folds, 1), dtype=[("fold", "O")])
    for fold in range(folds):
        cell = np.empty((2, 2), dtype=object)
        cell[0, 0], cell[1, 0] = {"name": f"{fold}_Alice_30_f"}, {"name": f"{fold}_Alice_41_f"}
        cell[0, 1], cell[1, 1] = {"name": f"{fold}_Alice_30_f"}, {"name": f"{fold}_Bob_52_m"}
        splits[fold, 0]["fold"] = {"pairs": cell, "labels": np.array([[1, -1]])}
    scipy.io.savemat(str(path), {"splits": splits})


def test_agedb_mat_parser(tmp_path):
    write_agedb_mat(tmp_path / "agedb.mat")
    pairs = PAIRS_PARSERS.get("agedb_mat")(tmp_path / "agedb.mat")
    assert pairs.num_folds == 2 and pairs.issame.tolist() == [True, False, True, False]
    assert pair_names(pairs)[1] == ("0_Alice_30_f.jpg", "0_Bob_52_m.jpg", False)


def test_agedb_mat_without_splits_is_an_error(tmp_path):
    scipy.io.savemat(str(tmp_path / "other.mat"), {"something": np.zeros(3)})
    with pytest.raises(ValueError, match=r"other.mat: no 'splits' variable"):
        PAIRS_PARSERS.get("agedb_mat")(tmp_path / "other.mat")


def test_bin_round_trip_and_parser(tmp_path):
    images = [bytes([i]) * (10 + i) for i in range(6)]
    write_verification_bin(tmp_path / "tiny.bin", images, [True, False, True])
    assert read_verification_bin(tmp_path / "tiny.bin") == (images, [True, False, True])
    pairs = PAIRS_PARSERS.get("bin")(tmp_path / "tiny.bin")
    assert pairs.first.tolist() == [0, 2, 4] and pairs.second.tolist() == [1, 3, 5]
    assert pairs.encoded == images


class Exploit:
    def __reduce__(self):
        return (print, ("owned",))


def test_bin_reader_refuses_code_in_the_pickle(tmp_path, capsys):
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([b"a", b"b", Exploit()], [True])))
    with pytest.raises(pickle.UnpicklingError, match=r"evil.bin: refusing to load global 'builtins.print'"):
        read_verification_bin(tmp_path / "evil.bin")
    assert "owned" not in capsys.readouterr().out


def test_bin_reader_rejects_wrong_shapes(tmp_path):
    (tmp_path / "odd.bin").write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True])))
    with pytest.raises(ValueError, match=r"odd.bin: 3 images for 1 pairs"):
        read_verification_bin(tmp_path / "odd.bin")
    (tmp_path / "floats.bin").write_bytes(pickle.dumps(([b"a", b"b"], [0.5])))
    with pytest.raises(ValueError, match=r"issame\[0\]: expected a boolean"):
        read_verification_bin(tmp_path / "floats.bin")


def test_meglass_lists_and_identity_rule(tmp_path):
    names = read_meglass_list(FIXTURES / "meglass" / "gallery_no_glass.txt")
    assert len(names) == 3 and meglass_identity(names[1], "x") == "222@N02_identity_1"
    (tmp_path / "bad.txt").write_text("ok@ok@1.jpg\nno_at_sign.jpg\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: MeGlass names have the form"):
        read_meglass_list(tmp_path / "bad.txt")


# ---------------------------------------------------------------- real files from ../shared
@pytest.mark.shared
def test_real_lfw_pairs(shared):
    pairs = PAIRS_PARSERS.get("lfw")(shared("data/lfw/pairs.txt"))
    assert len(pairs) == 6000 and len(pairs.images) == 7701 and pairs.num_folds == 10
    assert pairs.issame[:300].all() and not pairs.issame[300:600].any()


@pytest.mark.shared
def test_real_insightface_bin(shared):
    pairs = PAIRS_PARSERS.get("bin")(shared("data/protocols/insightface_small_lfw_10pairs.bin"))
    assert len(pairs) == 10 and len(pairs.encoded) == 20 and pairs.encoded[0][:2] == b"\xff\xd8"  # JPEG


@pytest.mark.shared
@pytest.mark.parametrize("kind", ["black_glass", "no_glass"])
def test_real_meglass_lists(shared, kind):
    gallery = read_meglass_list(shared(f"data/protocols/meglass/gallery_{kind}.txt"))
    probe = read_meglass_list(shared(f"data/protocols/meglass/probe_{kind}.txt"))
    assert len(gallery) == len(probe) == 1710
    assert {meglass_identity(n, "") for n in gallery} == {meglass_identity(n, "") for n in probe}


@pytest.mark.shared
def test_gfro_calfw_converted_pairs_fold_layout_is_refused(shared):
    """This GFRO file lists all 3,000 positives first under an LFW '10 300' header: its folds would be one-sided."""
    with pytest.raises(ValueError, match=r"gfro_calfw_converted_pairs.txt:302: each fold must list 300"):
        PAIRS_PARSERS.get("lfw")(shared("data/protocols/gfro_calfw_converted_pairs.txt"))
