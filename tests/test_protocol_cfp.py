"""The official CFP-FF / CFP-FP protocol parser on a small copy of the published layout written here."""
from __future__ import annotations

import numpy as np
import pytest

from test_protocol import PAIRS_PARSERS


def write_cfp(root, folds=10, per_fold=2):
    protocol = root / "Protocol"
    frontal = [f"{k} ../Data/Images/{(k - 1) // 10 + 1:03d}/frontal/{(k - 1) % 10 + 1:02d}.jpg" for k in range(1, 41)]
    profile = [f"{k} ../Data/Images/{(k - 1) // 4 + 1:03d}/profile/{(k - 1) % 4 + 1:02d}.jpg" for k in range(1, 17)]
    protocol.mkdir(parents=True)
    (protocol / "Pair_list_F.txt").write_text("\n".join(frontal) + "\n")
    (protocol / "Pair_list_P.txt").write_text("\n".join(profile) + "\n")
    for mode in ("FF", "FP"):
        for fold in range(1, folds + 1):
            folder = protocol / "Split" / mode / f"{fold:02d}"
            folder.mkdir(parents=True)
            # identity 1 (frontal 1-10, profile 1-4) vs identity 2 (frontal 11-20, profile 5-8)
            second_same = "2" if mode == "FF" else "1"
            second_diff = "11" if mode == "FF" else "5"
            (folder / "same.txt").write_text(f"1,{second_same}\n" * per_fold)
            (folder / "diff.txt").write_text(f"1,{second_diff}\n" * per_fold)
    return protocol / "Split"


@pytest.mark.parametrize("mode", ["FF", "FP"])
def test_cfp_folds_labels_and_paths(tmp_path, mode):
    split = write_cfp(tmp_path)
    pairs = PAIRS_PARSERS.get("cfp")(split / mode)
    assert len(pairs) == 40 and pairs.num_folds == 10
    assert pairs.issame.tolist() == ([True] * 2 + [False] * 2) * 10     # fold k: its same pairs, then its diff pairs
    second_view = "frontal" if mode == "FF" else "profile"
    assert pairs.images[pairs.first[0]] == "Data/Images/001/frontal/01.jpg"
    assert pairs.images[pairs.second[0]].split("/")[3] == second_view
    negatives = pairs.second[~pairs.issame]
    assert all(pairs.images[i].startswith("Data/Images/002/") for i in np.unique(negatives))


def test_cfp_errors_name_file_and_line(tmp_path):
    split = write_cfp(tmp_path)
    (split / "FP" / "03" / "diff.txt").write_text("1,5\n1;5\n")
    with pytest.raises(ValueError, match=r"03/diff.txt:2: expected 'i,j'"):
        PAIRS_PARSERS.get("cfp")(split / "FP")
    (split / "FP" / "03" / "diff.txt").write_text("1,99\n1,5\n")
    with pytest.raises(ValueError, match=r"03/diff.txt:1: second index 99 is not in the CFP pair list"):
        PAIRS_PARSERS.get("cfp")(split / "FP")
    with pytest.raises(FileNotFoundError, match="CFP split folder"):
        PAIRS_PARSERS.get("cfp")(split / "XX")
