"""Shared fixtures: the ../shared folder (real data / weights) and a small embedded synthetic data set."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


def shared_path(relative: str) -> Path:
    """Path inside ../shared, or skip the test with a reason when it is missing."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"needs ../shared/{relative} (real data/weights are not part of the repository)")
    return path


@pytest.fixture
def shared():
    return shared_path
