"""utils.text_files.read_fields: the one reader of whitespace-separated lists; its errors name file:line."""
from __future__ import annotations

import pytest

from utils.text_files import read_fields


def test_fields_blank_lines_comments_and_errors(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("a 1\n\n# a note\nb 2\n", encoding="utf-8")
    assert list(read_fields(path, 2, comments=True)) == [(1, ["a", "1"]), (4, ["b", "2"])]
    with pytest.raises(ValueError, match=r"list.txt:3: expected 'path label', got '# a note'"):
        list(read_fields(path, 2, "'path label'"))
    with pytest.raises(FileNotFoundError, match="train list not found"):
        list(read_fields(tmp_path / "missing.txt", what="train list"))
