"""GFRO ablation on the embedded synthetic faces, one command (GFRO.md §6):

    python -m benchmarks.gfro_ablation --json out.json [--budget small|full] [--epochs E] [--threads 1]
        [--work-dir DIR] [--set a.b=c ...]

Trains four rows with the SAME budget (optimiser steps, batch of source images, lr schedule, seed, trunk) and
evaluates each on the clean SYNTH pairs and the occluded SYNTH-MASK / SYNTH-SUNGLASSES / SYNTH-CROP pairs
(test_protocol/data_conf.yaml, facexzoo variant; the occluded sets are built on first use). Every row is the full
GFRO preset (configs/gfro/embedded_cpu.yaml) with the parts it ablates taken away by config overrides:

    1. ArcFace baseline        plain MobileFaceNet, ConventionalTraining, data.occlusion=null (clean images only)
    2. + partial views         plain MobileFaceNet, ArcFace on clean + noisy views, training_mode.contrastive_weight=0
    3. + contrastive           plain MobileFaceNet, + clean–noisy contrastive loss
    4. + dual MoE (full GFRO)  the preset: GFROEmbedding (region branches + dual MoE) around the same trunk

Any row trains on its own with the same overrides, e.g. ``bash run.sh configs/gfro/embedded_cpu.yaml
"backbone={type: MobileFaceNet, feat_dim: 512}" training_mode.contrastive_weight=0``. Each row is trained by the one
Trainer (training_mode/trainer.py). "Batch" counts source images: rows 2-4 also forward the noisy view of each.
Prints one table (rows × sets, plus the occluded mean; bar chart in ``<work-dir>/ablation.png``) and the bar of
issue 6 (full GFRO vs the baseline: occluded mean ≥ +5 points, clean accuracy not more than 1 point worse);
``--json`` writes everything.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from test_protocol.report import plot_accuracy_bars
from training_mode.trainer import Trainer, write_results
from utils.checkpoint import atomic_write_text
from utils.cli import run_cli
from utils.config import apply_override, load_config
from utils.logging import setup_logging

logger = logging.getLogger("gfro_ablation")

CLEAN_SET = "SYNTH"
OCCLUDED_SETS = ("SYNTH-MASK", "SYNTH-SUNGLASSES", "SYNTH-CROP")
VARIANT = "facexzoo"
BAR_OCCLUDED_GAIN = 5.0   # points, full GFRO over the baseline, mean over the occluded sets
BAR_CLEAN_DROP = 1.0      # points, full GFRO may be at most this much worse on clean pairs


GFRO_PRESET = "configs/gfro/embedded_cpu.yaml"
PLAIN_TRUNK = "backbone={type: MobileFaceNet, feat_dim: 512}"   # the GFRO preset's trunk, without branches / MoE


@dataclass(frozen=True)
class AblationRow:
    name: str
    overrides: Tuple[str, ...]   # applied to GFRO_PRESET: what this row takes away from the full method


ROWS = (
    AblationRow("ArcFace baseline", (PLAIN_TRUNK, "training_mode={type: ConventionalTraining}", "data.occlusion=null")),
    AblationRow("+ partial views", (PLAIN_TRUNK, "training_mode.contrastive_weight=0")),
    AblationRow("+ contrastive", (PLAIN_TRUNK,)),
    AblationRow("+ dual MoE (full GFRO)", ()),
)

# One budget = the keys every row shares. Steps = epochs × (4000 images / batch) on the default embedded set;
# max_steps (optional) stops earlier without changing the schedule. input_size: the network input (the 112×112
# aligned images are resized by the preprocess spec, at training and at test time alike); "small" is sized for a
# 2-core CPU (6-13 minutes per row with one thread), "full" is the presets' own resolution and trunk.
BUDGETS: Dict[str, Dict[str, Any]] = {
    "small": {"batch_size": 32, "epochs": 8, "max_steps": None, "lr": 0.1, "warmup_epochs": 0.2, "width": 0.25,
              "input_size": [64, 64]},
    "full": {"batch_size": 32, "epochs": 8, "max_steps": None, "lr": 0.1, "warmup_epochs": 0.5, "width": 1.0,
             "input_size": [112, 112]},
}


def budget_overrides(budget: Mapping[str, Any], trunk_key: str) -> List[str]:
    """The overrides that make every row share data, schedule, optimiser, seed, trunk size and evaluation."""
    protocols = [{"set": CLEAN_SET, "variant": VARIANT}] + [{"set": name, "variant": VARIANT} for name in OCCLUDED_SETS]
    return [
        f"data.batch_size={int(budget['batch_size'])}",
        "+schedule.type=cosine",
        f"+schedule.epochs={budget['epochs']}",
        f"+schedule.warmup_epochs={budget['warmup_epochs']}",
        "+schedule.min_lr_ratio=0.01",
        f"optim.lr={budget['lr']}",
        "optim.type=SGD",
        "runtime.seed=0",
        "runtime.device=cpu",
        "runtime.amp=none",
        f"runtime.max_steps={'null' if budget.get('max_steps') is None else int(budget['max_steps'])}",
        f"+{trunk_key}.width={budget['width']}",
        f"+{trunk_key}.input_size={json.dumps(list(budget['input_size']))}",
        f"data.preprocess.input_size={json.dumps(list(budget['input_size']))}",
        f"eval.protocols={json.dumps(protocols)}",
    ]


def row_config(row: AblationRow, budget: Mapping[str, Any], extra: Sequence[str]) -> Dict[str, Any]:
    """``GFRO_PRESET`` with the row's overrides, then the shared budget (then ``extra``)."""
    cfg = load_config(GFRO_PRESET, row.overrides)
    trunk_key = "backbone.trunk" if cfg["backbone"]["type"] == "GFROEmbedding" else "backbone"
    for override in budget_overrides(budget, trunk_key) + list(extra):
        apply_override(cfg, override)
    return cfg


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_").replace("__", "_")


def accuracy_by_set(eval_rows: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
    """``{set: accuracy %}`` for the facexzoo rows; a set that was not evaluated raises (nothing skipped)."""
    found = {row["set"]: float(row["accuracy"]) for row in eval_rows
             if "accuracy" in row and row.get("variant") == VARIANT}
    missing = [name for name in (CLEAN_SET, *OCCLUDED_SETS) if name not in found]
    if missing:
        statuses = [row.get("status") for row in eval_rows if "status" in row]
        raise RuntimeError(f"evaluation gave no {VARIANT} accuracy for {missing} ({statuses})")
    return found


def run_row(row: AblationRow, budget: Mapping[str, Any], extra: Sequence[str], work_dir: Path) -> Dict[str, Any]:
    """Train one row with the Trainer, evaluate it, and return its accuracies, timings and settings."""
    cfg = row_config(row, budget, extra)
    run_dir = work_dir / slug(row.name)
    logger.info("=== %s: %s %s -> %s", row.name, GFRO_PRESET, " ".join(row.overrides), run_dir)
    trainer = Trainer(cfg, run_dir)
    try:
        fit_info = trainer.fit()
        tic = time.perf_counter()
        eval_rows = trainer.evaluate()
        eval_seconds = time.perf_counter() - tic
        write_results(run_dir, eval_rows, fit_info)
        steps, batch = trainer.global_step, trainer.batch_size
    finally:
        trainer.close()
    accuracies = accuracy_by_set(eval_rows)
    history = fit_info["history"]
    return {
        "row": row.name, "config": GFRO_PRESET, "overrides": list(row.overrides), "run_dir": str(run_dir),
        "accuracy": accuracies,
        "occluded_mean": sum(accuracies[name] for name in OCCLUDED_SETS) / len(OCCLUDED_SETS),
        "steps": steps, "batch_size": batch, "train_seconds": fit_info["seconds"], "eval_seconds": eval_seconds,
        "first_loss": history[0]["loss"] if history else None, "last_loss": history[-1]["loss"] if history else None,
        "eval_rows": eval_rows,
    }


def bar_check(results: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Full GFRO (last row) against the baseline (first row)."""
    baseline, gfro = results[0], results[-1]
    occluded_gain = gfro["occluded_mean"] - baseline["occluded_mean"]
    clean_change = gfro["accuracy"][CLEAN_SET] - baseline["accuracy"][CLEAN_SET]
    return {"occluded_gain": occluded_gain, "clean_change": clean_change,
            "met": occluded_gain >= BAR_OCCLUDED_GAIN and clean_change >= -BAR_CLEAN_DROP}


def format_ablation_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Rows × (clean set, occluded sets, occluded mean, steps, train seconds) as an aligned text table."""
    header = ["row", f"{CLEAN_SET} (clean)", *OCCLUDED_SETS, "occluded mean", "steps", "train s"]
    body = [[result["row"], *(f"{result['accuracy'][name]:.2f}" for name in (CLEAN_SET, *OCCLUDED_SETS)),
             f"{result['occluded_mean']:.2f}", str(result["steps"]), f"{result['train_seconds']:.0f}"]
            for result in results]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *body]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def run_ablation(budget: Mapping[str, Any], work_dir: Path, extra: Sequence[str] = (),
                 rows: Sequence[AblationRow] = ROWS) -> Dict[str, Any]:
    """Train and evaluate every row; returns the JSON-ready report (results per row + bar check)."""
    results = [run_row(row, budget, extra, work_dir) for row in rows]
    for result in results:
        for name in (CLEAN_SET, *OCCLUDED_SETS):
            if not math.isfinite(result["accuracy"][name]):
                raise RuntimeError(f"{result['row']}: accuracy on {name} is not finite")
    return {"budget": dict(budget), "extra_overrides": list(extra), "variant": VARIANT,
            "machine": {"platform": platform.platform(), "torch": torch.__version__,
                        "threads": torch.get_num_threads()},
            "results": results, "bar": bar_check(results)}


def write_ablation_figure(report: Mapping[str, Any], path: Path) -> Path:
    """Bar chart: accuracy per evaluation set (clean and occluded), one bar per ablation row."""
    rows = [{**row, "ablation": result["row"]} for result in report["results"] for row in result["eval_rows"]
            if row.get("variant") == VARIANT]
    title = f"GFRO ablation, embedded synthetic faces (budget {report['budget'].get('name', 'custom')})"
    return plot_accuracy_bars(rows, path, group_key="ablation", title=title, ylim=(40, 100))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small", help="shared training budget")
    parser.add_argument("--epochs", type=float, help="override the budget's schedule length (same for all rows)")
    parser.add_argument("--max-steps", type=int, help="stop every row after this many steps (same for all rows)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: torch's own; 1 is much faster on an oversubscribed machine)")
    parser.add_argument("--work-dir", default="work_dirs/gfro_ablation", help="one run folder per row under it")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="a.b=c",
                        help="extra override applied to every row (repeatable), e.g. data.num_workers=0")
    parser.add_argument("--json", help="write the report (accuracies, timings, settings, bar) here")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    work_dir = Path(args.work_dir)
    setup_logging(work_dir / "ablation.log")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    budget = dict(BUDGETS[args.budget], name=args.budget)
    if args.epochs is not None:
        budget["epochs"] = args.epochs
    if args.max_steps is not None:
        budget["max_steps"] = args.max_steps
    start = time.perf_counter()
    report = run_ablation(budget, work_dir, args.extra)
    report["total_seconds"] = time.perf_counter() - start
    figure = write_ablation_figure(report, work_dir / "ablation.png")
    print(f"\nGFRO ablation on the embedded synthetic faces ({VARIANT} 10-fold accuracy %, budget {args.budget}, "
          f"batch {budget['batch_size']}, {report['results'][0]['steps']} steps each)")
    print(format_ablation_table(report["results"]))
    bar = report["bar"]
    print(f"full GFRO vs baseline: occluded mean {bar['occluded_gain']:+.2f} points (bar ≥ +{BAR_OCCLUDED_GAIN:g}), "
          f"clean {bar['clean_change']:+.2f} points (bar ≥ -{BAR_CLEAN_DROP:g}) -> "
          f"bar {'met' if bar['met'] else 'MISSED'}")
    print(f"figure: {figure}")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=2, default=float) + "\n")
        print(f"report written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
