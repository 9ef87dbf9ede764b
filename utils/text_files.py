"""Whitespace-separated text files (lists, landmark files, protocol metadata): one reader, errors naming file:line."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Optional, Tuple


def read_fields(path: str | Path, count: Optional[int] = None, expected: str = "",
                what: str = "file", comments: bool = False) -> Iterator[Tuple[int, List[str]]]:
    """Yield ``(line number, fields)`` for every non-blank line of ``path`` (``#`` lines too when ``comments``).

    A missing file is a FileNotFoundError naming ``what``; a line without exactly ``count`` fields (when given) is a
    ValueError ``path:line: expected <expected>, got <the line>``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    with open(path, "r", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            fields = line.split()
            if not fields or (comments and fields[0].startswith("#")):
                continue
            if count is not None and len(fields) != count:
                raise ValueError(f"{path}:{line_no}: expected {expected or f'{count} fields'}, got {line.strip()!r}")
            yield line_no, fields
