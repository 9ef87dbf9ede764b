"""Occlusion methods side by side on the embedded synthetic faces, seen vs held-out occluders, with seeds:

    python -m benchmarks.compare_methods --budget small|full --json out.json [--methods arcface,gfro,...]
        [--seeds 0,1,2] [--split test|val] [--jobs 2] [--work-dir DIR] [--set a.b=c ...]

Rows are methods (``METHODS``), each a preset plus config overrides, trained by the one Trainer under ONE shared
budget (steps, batch of source images, schedule, trunk, input size), once per seed. Columns are the clean set and
every occluded set of the split, each tagged for that method ``seen`` (its training drew that occluder family) or
``held_out`` (it did not) from the trained families the run records; the **held-out mean** averages the sets held
out for every method in the table, so rows stay comparable. Each cell is the mean ± std over seeds (std of the
per-seed 10-fold accuracies, facexzoo variant); the paired difference to the first method is the mean ± std over
seeds of (method − first method) with the same seed. A robustness curve per method (accuracy against the fraction of
the face hidden, from the occluded sets' visibility masks, pooled over the held-out sets and seeds) and a bar chart
go to ``<work-dir>``; ``--json`` writes everything.

Splits: ``val`` (generator identities disjoint from train and test; clean, partial-view, geometric and user-art
copies) is where settings are chosen; ``test`` is read once, for the final table. ``SETTINGS_CHOSEN_ON`` says
which split (or budget rule) chose every setting the rows share; the table prints it.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from test_protocol.data_conf import protocol_config, set_config
from training_mode.trainer import Trainer, write_results
from utils.checkpoint import atomic_write_text
from utils.cli import run_cli
from utils.config import apply_override, load_config
from utils.logging import setup_logging
from utils.registry import ConfigError

logger = logging.getLogger("compare_methods")

VARIANT = "facexzoo"
GFRO_PRESET = "configs/gfro/embedded_cpu.yaml"
PLAIN_TRUNK = "backbone={type: MobileFaceNet, feat_dim: 512}"   # the GFRO preset's trunk, without branches / MoE
SPLIT_SETS: Dict[str, Tuple[str, ...]] = {
    "test": ("SYNTH", "SYNTH-CROP", "SYNTH-BLOCK", "SYNTH-MASK", "SYNTH-SUNGLASSES", "SYNTH-GLASSES", "SYNTH-HAT",
             "SYNTH-SCARF", "SYNTH-HAND", "SYNTH-OBJECT", "SYNTH-CROWD"),
    "val": ("SYNTH-VAL", "SYNTH-VAL-CROP", "SYNTH-VAL-BLOCK", "SYNTH-VAL-ART"),
}
SETTINGS_CHOSEN_ON: Dict[str, str] = {
    "budget (epochs, batch, lr schedule, trunk width, input size)": "compute budget: sized to the machine, not tuned",
    "training occluders (partial views; geometric family)": "val split (docs/BENCHMARKS.md, 'held-out protocol')",
    "visibility-aware GFRO on/off": "val split (docs/BENCHMARKS.md, 'held-out protocol')",
    "partial-view fill (random), loss weights, MoE sizes": "earlier sessions' test figures (before the val split "
                                                           "existed): to be re-chosen on val",
    "OAML / MSML / FaceT / SST losses, weights, heads": "the papers' values (../shared/reference/methods.md), not "
                                                        "tuned; departures in docs/METHODS.md",
    "FaceT prenorm + AdamW lr 3e-3; OAML's QAConv detached from the trunk": "val split (docs/METHODS.md)",
    "MSML segmentation-branch lr scale 1.0 (embedded)": "a 40-step probe on training batches (not val, not test)",
    "SST queue 128, momentum 0.99 (embedded)": "sized to the 200-identity shallow set and 250 steps (not tuned)",
}


@dataclass(frozen=True)
class Method:
    label: str
    config: str
    overrides: Tuple[str, ...]   # applied to ``config`` before the shared budget
    own_optimizer: bool = False  # the method's optimiser and lr are part of the method (e.g. FaceT's AdamW with
                                 # layer decay): the budget then shares steps, batch, schedule shape, trunk, data only


METHODS: Dict[str, Method] = {
    "arcface": Method("ArcFace (clean images)", GFRO_PRESET,
                      (PLAIN_TRUNK, "training_mode={type: ConventionalTraining}", "data.occlusion=null",
                       "data.flip=0.5")),
    "arcface_aug": Method("ArcFace + the same occlusion augmentation", GFRO_PRESET,
                          (PLAIN_TRUNK, "training_mode.contrastive_weight=0")),
    "gfro_contrastive": Method("GFRO: + clean-noisy contrastive (plain trunk)", GFRO_PRESET, (PLAIN_TRUNK,)),
    "gfro": Method("GFRO: + dual MoE (full method)", GFRO_PRESET, ()),
    "gfro_geometric": Method("GFRO trained on partial views + geometric shapes", GFRO_PRESET,
                             ("data.occlusion.mode=mixed",
                              "+data.occlusion.exclude_families=[upper_accessory, lower_accessory, object, user_art]")),
    "gfro_visibility": Method("GFRO + visibility-aware gate", GFRO_PRESET,
                              ("backbone.visibility_head=true", "training_mode.visibility_weight=0.1")),
    # the seed methods of the field (issue 13): each its own preset in configs/methods/, same budget and seeds
    "oaml": Method("OAML: AdaFace + occlusion-weighted QAConv matching (fused score)", "configs/methods/oaml.yaml", ()),
    "msml": Method("MSML: segmentation branch + feature masking", "configs/methods/msml.yaml", ()),
    "facet": Method("FaceT: ViT + prompts, flag from its occlusion classifier (no MAE stage)",
                    "configs/methods/facet.yaml", (), own_optimizer=True),
    "facet_oracle": Method("FaceT with the protocol's occlusion flag (ORACLE)", "configs/methods/facet.yaml",
                           ("backbone.flag_source=oracle",), own_optimizer=True),
    # shallow data (2 images of each of the 200 training identities); 20 passes per epoch = 125 steps of 32 pairs,
    # so the shared 2-epoch budget gives it the same 250 steps × 32 samples as every other row
    "sst": Method("SST on shallow data (2 img/id): prototype queue, momentum gallery net", "configs/methods/sst.yaml",
                  ("data.train.passes_per_epoch=20",)),
}
DEFAULT_METHODS = ("arcface", "arcface_aug", "gfro_contrastive", "gfro", "gfro_visibility")

# "small" fits about one CPU hour on a 2-core box for the default rows × 3 seeds with --jobs 2 (one thread each);
# "full" is the presets' own resolution and trunk width.
BUDGETS: Dict[str, Dict[str, Any]] = {
    "small": {"batch_size": 32, "epochs": 2, "max_steps": None, "lr": 0.1, "warmup_epochs": 0.2, "width": 0.25,
              "input_size": [64, 64]},
    "full": {"batch_size": 32, "epochs": 8, "max_steps": None, "lr": 0.1, "warmup_epochs": 0.5, "width": 1.0,
             "input_size": [112, 112]},
}


def budget_overrides(budget: Mapping[str, Any], trunk_key: str, sets: Sequence[str], seed: int,
                     own_optimizer: bool = False) -> List[str]:
    """What every row shares: data, schedule, optimiser (unless the method brings its own), trunk size, evaluation
    sets; the seed of this run."""
    protocols = [{"set": name, "variant": VARIANT} for name in sets]
    optimizer = [] if own_optimizer else [f"optim.lr={budget['lr']}", "optim.type=SGD"]
    return optimizer + [
        f"data.batch_size={int(budget['batch_size'])}",
        "+schedule.type=cosine",
        f"+schedule.epochs={budget['epochs']}",
        f"+schedule.warmup_epochs={budget['warmup_epochs']}",
        "+schedule.min_lr_ratio=0.01",
        f"runtime.seed={int(seed)}",
        "runtime.device=cpu",
        "runtime.amp=none",
        f"runtime.max_steps={'null' if budget.get('max_steps') is None else int(budget['max_steps'])}",
        f"+{trunk_key}.width={budget['width']}",
        f"+{trunk_key}.input_size={json.dumps(list(budget['input_size']))}",
        f"data.preprocess.input_size={json.dumps(list(budget['input_size']))}",
        f"eval.protocols={json.dumps(protocols)}",
    ]


def method_config(name: str, budget: Mapping[str, Any], sets: Sequence[str], seed: int,
                  extra: Sequence[str] = ()) -> Dict[str, Any]:
    """The method's preset + its overrides, then the shared budget and seed, then ``extra``."""
    if name not in METHODS:
        raise ConfigError(f"--methods: unknown method {name!r}; known: {', '.join(METHODS)}")
    method = METHODS[name]
    cfg = load_config(method.config, method.overrides)
    trunk_key = "backbone.trunk" if isinstance(cfg["backbone"].get("trunk"), Mapping) else "backbone"
    for override in budget_overrides(budget, trunk_key, sets, seed, method.own_optimizer) + list(extra):
        apply_override(cfg, override)
    return cfg


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def run_one(name: str, seed: int, budget: Mapping[str, Any], sets: Sequence[str], extra: Sequence[str],
            work_dir: str, threads: Optional[int]) -> Dict[str, Any]:
    """Train and evaluate one (method, seed); runs in a worker process when ``--jobs`` > 1."""
    if threads is not None:
        torch.set_num_threads(threads)
    run_dir = Path(work_dir) / f"{name}_seed{seed}"
    setup_logging(run_dir / "compare.log")
    cfg = method_config(name, budget, sets, seed, extra)
    trainer = Trainer(cfg, run_dir)
    try:
        fit_info = trainer.fit()
        tic = time.perf_counter()
        eval_rows = trainer.evaluate()
        eval_seconds = time.perf_counter() - tic
        write_results(run_dir, eval_rows, fit_info)
        steps, batch = trainer.global_step, trainer.batch_size
        params = count_parameters(trainer.module.embedding_model())
    finally:
        trainer.close()
    rows = [row for row in eval_rows if row.get("variant") == VARIANT and "accuracy" in row]
    missing = sorted(set(sets) - {row["set"] for row in rows})
    if missing:
        raise RuntimeError(f"{name} seed {seed}: evaluation gave no {VARIANT} accuracy for {missing}")
    return {"method": name, "seed": seed, "run_dir": str(run_dir), "steps": steps, "batch_size": batch,
            "train_seconds": fit_info["seconds"], "eval_seconds": eval_seconds,
            "samples_per_second": steps * batch / max(fit_info["seconds"], 1e-9), "parameters": params,
            "rows": rows}


def prepare_sets(sets: Sequence[str]) -> None:
    """Build the embedded training data and every evaluation set once, before parallel runs race to do it."""
    for name in sets:
        protocol_config(set_config(name))


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample std (0 for one value)."""
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def common_tag_sets(runs: Sequence[Mapping[str, Any]], sets: Sequence[str], tag: str) -> List[str]:
    """The sets tagged ``tag`` (``occluders``) for every run of every method."""
    return [name for name in sets
            if all(row["occluders"] == tag for run in runs for row in run["rows"] if row["set"] == name)]


def pooled_bins(rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, float]]:
    """Hidden-fraction bins pooled over rows: pair-weighted accuracy per bin."""
    pooled: Dict[Tuple[float, float], List[float]] = {}
    for row in rows:
        for item in row.get("hidden_fraction_bins") or []:
            total = pooled.setdefault((float(item["low"]), float(item["high"])), [0.0, 0.0])
            total[0] += item["pairs"]
            total[1] += item["pairs"] * (item["accuracy"] if item["pairs"] else 0.0)
    return [{"low": low, "high": high, "pairs": int(n), "accuracy": correct / n}
            for (low, high), (n, correct) in sorted(pooled.items()) if n > 0]


def summarise(runs: Sequence[Mapping[str, Any]], methods: Sequence[str], sets: Sequence[str]) -> Dict[str, Any]:
    """Per method: mean ± std over seeds per set, held-out / seen means, paired differences to the first method."""
    clean = common_tag_sets(runs, sets, "clean")
    held_out = common_tag_sets(runs, sets, "held_out")
    by_method: Dict[str, Dict[int, Mapping[str, Any]]] = {}
    for run in runs:
        by_method.setdefault(run["method"], {})[run["seed"]] = run

    def accuracy(run: Mapping[str, Any], name: str) -> float:
        return next(float(row["accuracy"]) for row in run["rows"] if row["set"] == name)

    def set_mean(run: Mapping[str, Any], names: Sequence[str]) -> float:
        return statistics.fmean(accuracy(run, name) for name in names) if names else math.nan

    def held_out_mean(run: Mapping[str, Any]) -> float:
        return set_mean(run, held_out)

    def clean_mean(run: Mapping[str, Any]) -> float:
        return set_mean(run, clean)

    baseline = by_method[methods[0]]
    table = {}
    for name in methods:
        seeds = by_method[name]
        cells = {}
        for set_name in sets:
            tags = {row["occluders"] for run in seeds.values() for row in run["rows"] if row["set"] == set_name}
            mean, std = mean_std([accuracy(run, set_name) for run in seeds.values()])
            cells[set_name] = {"mean": mean, "std": std, "occluders": "/".join(sorted(tags))}
        paired = sorted(set(seeds) & set(baseline))
        held_out_values = [held_out_mean(run) for run in seeds.values()]
        clean_values = [clean_mean(run) for run in seeds.values()]
        table[name] = {
            "label": METHODS[name].label if name in METHODS else name, "seeds": sorted(seeds), "sets": cells,
            "held_out_mean": mean_std(held_out_values), "clean_mean": mean_std(clean_values),
            "held_out_diff": mean_std([held_out_mean(seeds[s]) - held_out_mean(baseline[s]) for s in paired]),
            "clean_diff": mean_std([clean_mean(seeds[s]) - clean_mean(baseline[s]) for s in paired]),
            "paired_seeds": paired,
            "parameters": next(iter(seeds.values()))["parameters"],
            "samples_per_second": mean_std([run["samples_per_second"] for run in seeds.values()]),
            "robustness": pooled_bins([row for run in seeds.values() for row in run["rows"]
                                       if row["set"] in held_out]),
        }
    return {"clean_sets": clean, "held_out_sets": held_out, "baseline": methods[0], "methods": table}


def format_tables(summary: Mapping[str, Any], sets: Sequence[str], split: str) -> str:
    """The summary table (clean, held-out mean, paired differences, size, speed) and the per-set table."""
    def pm(pair: Sequence[float], signed: bool = False) -> str:
        return "-" if math.isnan(pair[0]) else (f"{pair[0]:+.2f} ± {pair[1]:.2f}" if signed
                                                 else f"{pair[0]:.2f} ± {pair[1]:.2f}")

    baseline = summary["baseline"]
    header = ["method", "clean", "held-out mean", f"Δ held-out vs {baseline}", f"Δ clean vs {baseline}", "seeds",
              "params (M)", "train samples/s"]
    body = [[name, pm(row["clean_mean"]), pm(row["held_out_mean"]),
             pm(row["held_out_diff"], True) if name != baseline else "-",
             pm(row["clean_diff"], True) if name != baseline else "-",
             str(len(row["seeds"])), f"{row['parameters'] / 1e6:.2f}", f"{row['samples_per_second'][0]:.1f}"]
            for name, row in summary["methods"].items()]
    per_set_header = ["method"] + [name.replace("SYNTH-", "") for name in sets]
    per_set = [[name] + [f"{cell['mean']:.1f}±{cell['std']:.1f} {cell['occluders'][:4]}"
                         for cell in (row["sets"][s] for s in sets)]
               for name, row in summary["methods"].items()]
    held = ", ".join(summary["held_out_sets"]) or "none"
    notes = [f"split: {split}; {VARIANT} 10-fold accuracy %; ± = std over seeds (paired Δ: std of per-seed "
             f"differences)",
             f"held-out mean over the sets no method trained on: {held}"]
    return "\n".join([aligned(header, body), "", "per set (tag: seen / held / clean for that method):",
                      aligned(per_set_header, per_set), *notes])


def aligned(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *body]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def write_figures(summary: Mapping[str, Any], out_dir: Path, split: str) -> List[Path]:
    """``compare_bars.png`` (clean and held-out mean per method, std over seeds) and ``robustness.png``."""
    from matplotlib.figure import Figure

    methods = list(summary["methods"])
    figure = Figure(figsize=(max(6, 1.3 * len(methods)), 4))
    axes = figure.add_subplot()
    for offset, (key, label) in enumerate((("clean_mean", "clean"), ("held_out_mean", "held-out occluders"))):
        means = [summary["methods"][m][key][0] for m in methods]
        stds = [summary["methods"][m][key][1] for m in methods]
        bars = axes.bar([i + 0.4 * offset for i in range(len(methods))], means, 0.4, yerr=stds, capsize=3,
                        label=label)
        axes.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    axes.set_xticks([i + 0.2 for i in range(len(methods))], methods, rotation=20, ha="right")
    axes.set(ylabel="accuracy % (± std over seeds)", ylim=(40, 103), title=f"Methods, embedded faces ({split} split)")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    bars_path = out_dir / "compare_bars.png"
    figure.savefig(bars_path, dpi=120)

    figure = Figure(figsize=(6.5, 4.2))
    axes = figure.add_subplot()
    for name in methods:
        bins = summary["methods"][name]["robustness"]
        if bins:
            axes.plot([(b["low"] + b["high"]) / 2 for b in bins], [b["accuracy"] for b in bins], marker="o",
                      label=name)
    axes.set(xlabel="fraction of the face hidden (pair: the more occluded image)", ylabel="pair accuracy %",
             title="Robustness on held-out occluder families", ylim=(40, 101))
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    curve_path = out_dir / "robustness.png"
    figure.savefig(curve_path, dpi=120)
    return [bars_path, curve_path]


def reusable_runs(paths: Sequence[Path], split: str, budget: Mapping[str, Any],
                  extra: Sequence[str]) -> Dict[Tuple[str, int], Dict[str, Any]]:
    """``{(method, seed): run}`` from earlier reports (``--reuse``) made with the same split, budget and extra
    overrides (else an error naming the report and what differs); the first report holding a pair wins."""
    runs: Dict[Tuple[str, int], Dict[str, Any]] = {}
    for path in paths:
        try:
            report = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"--reuse {path}: not a readable compare_methods report ({error})") from error
        expected = {"split": split, "budget": dict(budget), "extra_overrides": list(extra)}
        for key, value in expected.items():
            if report.get(key) != value:
                raise ValueError(f"--reuse {path}: its {key} is {report.get(key)!r}, this run's is {value!r}")
        for run in report.get("runs", []):
            runs.setdefault((run["method"], int(run["seed"])), run)
    return runs


def run_comparison(methods: Sequence[str], seeds: Sequence[int], budget: Mapping[str, Any], split: str,
                   work_dir: Path, extra: Sequence[str] = (), jobs: int = 1, threads: Optional[int] = None,
                   reuse: Sequence[Path] = ()) -> Dict[str, Any]:
    """Train and evaluate every (method, seed) not found in the ``reuse`` reports; returns the JSON-ready report."""
    sets = SPLIT_SETS[split]
    for name in methods:
        method_config(name, budget, sets, seeds[0], extra)   # every config resolves before anything trains
    earlier = reusable_runs(reuse, split, budget, extra)
    reused = {(name, seed): earlier[(name, seed)] for seed in seeds for name in methods if (name, seed) in earlier}
    if reused:
        logger.info("reusing %d runs of earlier reports: %s", len(reused),
                    ", ".join(f"{name} seed {seed}" for name, seed in reused))
    prepare_sets(sets)
    tasks = [(name, seed, dict(budget), sets, tuple(extra), str(work_dir), threads)
             for seed in seeds for name in methods if (name, seed) not in reused]
    if jobs > 1 and tasks:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            fresh = list(pool.map(run_one, *zip(*tasks)))
    else:
        fresh = [run_one(*task) for task in tasks]
    trained = {(run["method"], run["seed"]): run for run in fresh}
    runs = [reused.get((name, seed)) or trained[(name, seed)] for seed in seeds for name in methods]
    summary = summarise(runs, methods, sets)
    return {"split": split, "sets": list(sets), "budget": dict(budget), "seeds": list(seeds),
            "extra_overrides": list(extra), "variant": VARIANT, "settings_chosen_on": SETTINGS_CHOSEN_ON,
            "machine": {"platform": platform.platform(), "torch": torch.__version__, "jobs": jobs,
                        "threads_per_job": threads},
            "reused_from": [str(path) for path in reuse], "summary": summary, "runs": runs}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small", help="shared training budget")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="comma list, first = the reference of the paired differences; known: "
                             + ", ".join(METHODS))
    parser.add_argument("--seeds", default="0,1,2", help="comma list of training seeds (≥ 3 for a spread)")
    parser.add_argument("--split", choices=sorted(SPLIT_SETS), default="test",
                        help="val: choose settings; test: the final table (read once)")
    parser.add_argument("--epochs", type=float, help="override the budget's schedule length (same for all rows)")
    parser.add_argument("--max-steps", type=int, help="stop every run after this many steps")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    parser.add_argument("--threads", type=int, help="torch CPU threads per run (1 with --jobs = cores is fastest)")
    parser.add_argument("--work-dir", default="work_dirs/compare_methods", help="one run folder per (method, seed)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="a.b=c",
                        help="extra override applied to every run (repeatable), e.g. data.num_workers=0")
    parser.add_argument("--json", help="write the report (per-run rows, summary, settings) here")
    parser.add_argument("--reuse", action="append", default=[], type=Path, metavar="REPORT.json",
                        help="take the (method, seed) runs an earlier report of the same split, budget and --set "
                             "holds instead of training them again (repeatable)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    work_dir = Path(args.work_dir)
    setup_logging(work_dir / "compare.log")
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError as error:
        raise ValueError(f"--seeds: expected a comma list of integers, got {args.seeds!r}") from error
    budget = dict(BUDGETS[args.budget], name=args.budget)
    if args.epochs is not None:
        budget["epochs"] = args.epochs
    if args.max_steps is not None:
        budget["max_steps"] = args.max_steps
    start = time.perf_counter()
    report = run_comparison(methods, seeds, budget, args.split, work_dir, args.extra, args.jobs, args.threads,
                            args.reuse)
    report["total_seconds"] = time.perf_counter() - start
    figures = write_figures(report["summary"], work_dir, args.split)
    run = report["runs"][0]
    print(f"\nOcclusion methods on the embedded synthetic faces (budget {args.budget}: {run['steps']} steps × batch "
          f"{run['batch_size']}, seeds {args.seeds}; {report['total_seconds'] / 60:.1f} min)")
    print(format_tables(report["summary"], report["sets"], args.split))
    print("settings and the split (or rule) that chose them:")
    for setting, chosen_on in SETTINGS_CHOSEN_ON.items():
        print(f"  {setting}: {chosen_on}")
    print("figures: " + ", ".join(str(path) for path in figures))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=2, default=float) + "\n")
        print(f"report written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
