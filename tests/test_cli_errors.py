"""Bad input to a command prints one line ``error: <message>`` and exits 2 (no traceback); ``--debug`` shows it."""
from __future__ import annotations

import importlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from utils.cli import EXIT_BAD_INPUT, error_line, run_cli, split_debug_flag

REPO = Path(__file__).resolve().parents[1]


def command(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def error_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if line.strip()]


def test_missing_file_is_one_line_and_debug_shows_the_traceback(tmp_path):
    args = ["-m", "test_protocol.lfw.crop_lfw_random", "--source", str(tmp_path), "--pairs",
            str(tmp_path / "nope_pairs.txt"), "--out", str(tmp_path / "out")]
    plain = command(*args)
    assert plain.returncode == EXIT_BAD_INPUT, plain.stderr
    assert error_lines(plain.stderr) == [f"error: pairs file not found: {tmp_path / 'nope_pairs.txt'}"]
    assert "Traceback" not in plain.stderr + plain.stdout

    debug = command(*args, "--debug")
    assert debug.returncode not in (0, EXIT_BAD_INPUT)
    assert "Traceback (most recent call last)" in debug.stderr and "FileNotFoundError" in debug.stderr


def test_malformed_pairs_line_names_file_and_line(tmp_path):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\t1\nAnn\t1\t2\nAnn\t1\tBob\n")  # line 3 lacks Bob's image number
    run = command("-m", "test_protocol.lfw.crop_lfw_random", "--source", str(tmp_path), "--pairs", str(pairs),
                  "--out", str(tmp_path / "out"))
    assert run.returncode == EXIT_BAD_INPUT and "Traceback" not in run.stderr
    (line,) = error_lines(run.stderr)
    assert line.startswith(f"error: {pairs}:3: ") and "'Bob'" in line


def test_bad_config_key_of_the_training_command(tmp_path):
    run = command("-m", "training_mode.conventional_training.train", "configs/embedded_arcface.yaml",
                  "schedule.no_such_key=1", "--work-dir", str(tmp_path / "run"))
    assert run.returncode == EXIT_BAD_INPUT and "Traceback" not in run.stderr + run.stdout
    (line,) = error_lines(run.stderr)
    assert line.startswith("error: override 'schedule.no_such_key=1': unknown key")


def entry_point_cases(tmp: Path):
    """(module, argv with one bad input, text the message must hold) for every entry point that fails fast."""
    (tmp / "empty").mkdir(exist_ok=True)
    missing = tmp / "missing"
    return [
        ("test_protocol.test_lfw_adapt", ["--checkpoint", str(missing / "last.pt")], "missing/last.pt"),
        ("test_protocol.lfw.crop_lfw_random", ["--source", str(tmp), "--pairs", str(missing), "--out", str(tmp / "o")],
         "pairs file not found"),
        ("test_protocol.lfw.crop_calfw_random", ["--source", str(tmp), "--pairs", str(missing), "--out",
                                                 str(tmp / "o"), "--params", "{bad json"], "--params: not valid JSON"),
        ("test_protocol.lfw.crop_cplfw_random", ["--source", str(tmp), "--pairs", str(missing), "--out",
                                                 str(tmp / "o"), "--occlusion", "helmet"], "unknown kind"),
        ("training_mode.conventional_training.train", [str(missing / "config.yaml")], "config file not found"),
        ("tools.align_dataset", ["--input", str(missing), "--output", str(tmp / "aligned")], "input folder not found"),
        ("benchmarks.train_throughput", ["--methods", "nope"], "unknown method"),
        ("face_sdk.cli", ["embed", str(missing / "a.jpg")], "image not found"),
        ("utils.export_onnx", ["--checkpoint", str(missing / "c.pt"), "--out", str(tmp / "onnx")],
         "checkpoint not found"),
        ("benchmarks.lfw_released_models", ["--shared", str(missing), "--aligned", str(tmp / "lfw_aligned")],
         "pairs file not found"),
        ("benchmarks.gfro_real_faces", ["--shared", str(missing), "--aligned", str(tmp / "lfw_aligned"),
                                        "--occluded-root", str(tmp / "occluded")], "pairs file not found"),
        ("benchmarks.compare_methods", ["--work-dir", str(tmp / "compare"), "--set", "data.no_such_key=1"],
         "no_such_key"),
        ("benchmarks.face_sdk_speed", ["--images", str(tmp / "empty")], "no .jpg images"),
    ]


def test_every_entry_point_reports_bad_input_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("FACE_SDK_WEIGHTS_DIR", os.environ.get("FACE_SDK_WEIGHTS_DIR", str(tmp_path / "weights")))
    monkeypatch.setenv("FACE_DATA_ROOT", str(tmp_path / "data"))
    for module, argv, expected in entry_point_cases(tmp_path):
        stderr = io.StringIO()
        status = run_cli(importlib.import_module(module).main, argv, stderr=stderr)
        lines = error_lines(stderr.getvalue())
        assert status == EXIT_BAD_INPUT and len(lines) == 1, (module, stderr.getvalue())
        assert lines[0].startswith("error: ") and expected in lines[0], (module, lines)


def test_every_main_block_goes_through_run_cli():
    """Each ``python -m`` entry point's ``__main__`` block is ``raise SystemExit(run_cli(main))``."""
    offenders = []
    for folder in ("benchmarks", "tools", "test_protocol", "training_mode", "face_sdk", "utils", "data_processor"):
        for path in sorted((REPO / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            block = re.search(r'^if __name__ == "__main__":\n((?:[ \t]+.*\n?)+)', text, re.MULTILINE)
            relative = path.relative_to(REPO).as_posix()
            if block and "run_cli(main)" not in block.group(1):
                offenders.append(relative)
    assert not offenders, f"entry points without utils.cli.run_cli: {offenders}"


def test_debug_flag_and_message_formatting():
    assert split_debug_flag(["a", "--debug", "b"]) == (["a", "b"], True)
    assert split_debug_flag(["a", "--", "--debug"]) == (["a", "--", "--debug"], False)
    assert error_line(KeyError("data.preprocess: missing")) == "error: data.preprocess: missing"
    assert error_line(ValueError("x.yaml: not valid YAML:\n  line 3, column 5")) == \
        "error: x.yaml: not valid YAML: | line 3, column 5"

    def buggy(argv):
        raise TypeError("a genuine bug")

    with pytest.raises(TypeError):  # programming errors keep their traceback
        run_cli(buggy, [])
    assert run_cli(lambda argv: 3, []) == 3 and run_cli(lambda argv: Path("x"), []) == 0
