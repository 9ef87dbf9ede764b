"""The README's two commands on a fresh machine, and the scripts users run by name run as files.

The scripts import the toolbox because ``tools/setup_env.sh`` installs the checkout editable into ``.venv``; these
tests run under that environment (``bash tests/run.sh``), from the repository root and from the script's own folder.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_crop_random import write_source

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("test_protocol/lfw/crop_lfw_random.py", "test_protocol/lfw/crop_calfw_random.py",
           "test_protocol/lfw/crop_cplfw_random.py", "test_protocol/test_lfw_adapt.py",
           "training_mode/conventional_training/train.py")


def run(args, cwd: Path, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("where", ["root", "own_folder"])
def test_script_runs_as_file(script: str, where: str, tmp_path: Path) -> None:
    path = REPO_ROOT / script
    cwd, target = (REPO_ROOT, script) if where == "root" else (path.parent, path.name)
    result = run([sys.executable, target, "--help"], cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:"), result.stdout[:200]


@pytest.mark.parametrize("how", ["file_from_own_folder", "module_from_root"])
def test_crop_lfw_random_builds_a_set(how: str, tmp_path: Path) -> None:
    """A real build, not only --help: the file form and the ``python -m`` form give the same bytes."""
    source = write_source(tmp_path / "aligned")
    out = tmp_path / "occluded"
    options = ["--source", str(source), "--pairs", str(source / "pairs.txt"), "--out", str(out),
               "--occlusion", "mask", "--side", "both", "--seed", "0"]
    if how == "file_from_own_folder":
        result = run([sys.executable, "crop_lfw_random.py", *options], REPO_ROOT / "test_protocol" / "lfw")
    else:
        result = run([sys.executable, "-m", "test_protocol.lfw.crop_lfw_random", *options], REPO_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "manifest.json").is_file() and (out / "pairs.txt").is_file()
    assert len(list((out / "images").rglob("*.jpg"))) == 12


def without_venv(env: dict) -> dict:
    """The caller's environment as a fresh shell would have it: no active virtual environment on PATH."""
    env = dict(env)
    active = env.pop("VIRTUAL_ENV", None)
    env.pop("VENV_DIR", None)
    env.pop("PYTHONPATH", None)
    if active:
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(active))
    return env


@pytest.mark.slow
def test_fresh_clone_test_command_sets_up_its_venv(tmp_path: Path) -> None:
    """``bash tests/run.sh`` as the first command of a fresh clone (no .venv) installs and finds the suite."""
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout to clone")
    clone = tmp_path / "clone"
    cloned = run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], tmp_path)
    assert cloned.returncode == 0, cloned.stderr
    assert not (clone / ".venv").exists()
    result = run(["bash", "tests/run.sh", "--collect-only", "-q"], clone, env=without_venv(os.environ))
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert (clone / ".venv" / "bin" / "python").exists()
    collected = [line for line in result.stdout.splitlines() if "tests collected" in line]
    assert collected and int(collected[-1].split()[0]) > 300, result.stdout[-1000:]
    # the clone's own interpreter imports the toolbox from outside the checkout (editable install)
    probe = run([str(clone / ".venv" / "bin" / "python"), "-c", "import test_protocol; print(test_protocol.__file__)"],
                tmp_path)
    assert probe.returncode == 0 and Path(probe.stdout.strip()).resolve().is_relative_to(clone.resolve()), probe
