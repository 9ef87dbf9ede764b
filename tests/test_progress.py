"""Progress output: a tqdm bar on a terminal, plain newline-terminated lines anywhere else (logs, CI, pipes)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path


from utils.progress import PlainProgress, progress

REPO = Path(__file__).resolve().parents[1]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    items = list(progress(range(50), desc="align", unit="img", file=stream, min_seconds=0))
    assert items == list(range(50))
    text = stream.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert [line.split(" ")[1] for line in lines] == [f"{n}/50" for n in range(5, 51, 5)]  # every 10 %, then the end
    assert lines[-1].startswith("align: 50/50 (100%) ") and lines[-1].endswith(" img/s")


def test_update_form_unknown_total_and_time_rule():
    stream = io.StringIO()
    with progress(desc="extract", unit="batch", file=stream, every_seconds=0) as bar:  # no total: the time rule
        for _ in range(3):
            bar.update(2)
    lines = stream.getvalue().splitlines()
    assert lines[:3] == [line for line in lines[:3] if line.startswith("extract: ")]
    assert [line.split(" ")[1] for line in lines] == ["2", "4", "6"]
    quiet = io.StringIO()
    with progress(total=10, desc="x", file=quiet) as bar:  # fast loop: at most one line per second, plus the end
        bar.update(10)
    assert quiet.getvalue().splitlines() == [quiet.getvalue().splitlines()[-1]] and "10/10" in quiet.getvalue()
    disabled = io.StringIO()
    list(progress(range(3), file=disabled, disable=True))
    assert disabled.getvalue() == ""


def test_a_terminal_gets_the_tqdm_bar():
    from tqdm import tqdm

    bar = progress(range(3), file=FakeTerminal())
    assert isinstance(bar, tqdm) and list(bar) == [0, 1, 2]
    assert isinstance(progress(range(3), file=io.StringIO()), PlainProgress)


def test_extraction_in_a_subprocess_prints_plain_lines(tmp_path):
    """A real loop of the toolbox (feature extraction) with stderr piped, as in a log file: no carriage returns."""
    script = ("import numpy as np, torch\n"
              "from backbone import build_backbone\n"
              "from data_processor.preprocess import PreprocessSpec\n"
              "from test_protocol.extract import extract_views\n"
              "model = build_backbone({'type': 'MobileFaceNet', 'feat_dim': 16, 'width': 0.25})\n"
              "images = [np.zeros((112, 112, 3), np.uint8)] * 6\n"
              "extract_views(model, images, PreprocessSpec(), 'cpu', 2, desc='embed')\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stderr
    assert any(line.startswith("embed: 3/3 (100%) ") for line in run.stderr.splitlines()), run.stderr
