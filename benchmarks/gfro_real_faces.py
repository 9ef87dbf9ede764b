"""GFRO on real faces: fine-tune the released MobileFaceNet (MS1M) on the CelebA subset, before/after on LFW.

    python -m benchmarks.gfro_real_faces --shared ../shared --json out.json [--pairs 6000] [--side both]

1. aligned LFW (``$FACE_DATA_ROOT/lfw_aligned``, made with the face_sdk aligner when missing) and its occluded
   copies LFW-MASK / LFW-SUNGLASSES / LFW-CROP (``test_protocol.lfw.occluded_set_builder``, seed 0, ``--side``
   both = every image of every pair occluded, or one = one image per pair), built from the official pairs file;
2. the untouched ``foamliu_mobilefacenet_ms1m`` (face_sdk: registered backbone + its own preprocessing) is
   evaluated on the four sets (``PairVerification``, ``--variant``, default facexzoo: cosine, no flip, 10 folds);
3. it is fine-tuned with the Trainer from ``configs/gfro/celeba_finetune_mobilefacenet.yaml`` (GFROTraining, the
   same release as the frozen teacher; ``data.train.root`` set from ``--shared``; ``--set a.b=c`` overrides more);
4. the exported fine-tuned backbone is evaluated on the same sets; a before/after table is printed and written,
   with a bar chart (``<work-dir>/before_after.png``).
Reuse: the aligned folder and the occluded sets are rebuilt unless their ``summary.json`` / ``manifest.json`` still
match (settings, code, inputs and every file's checksum); the untouched release's rows are cached beside
``--work-dir`` in ``untouched_<model>_<digest>.json``, keyed by ``utils.provenance`` (the evaluating code's digest,
the weights file's sha256, the device, torch, pairs, image checksums, variant, batch size; ``--no-cache`` ignores it).
Bar (GFRO.md §6): mean occluded accuracy +3 points or more, clean LFW down at most 0.5 (judged on all 6,000 pairs
only). ``--pairs N`` scores the first N/20 positives and negatives of each fold (quick runs); ``--max-steps`` caps
training (smoke runs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from benchmarks.lfw_released_models import ensure_aligned_lfw, machine, subset_pairs_file
from test_protocol.data_conf import data_roots
from test_protocol.evaluate import build_protocols, run_protocols
from test_protocol.report import plot_accuracy_bars
from test_protocol.verification_metrics import spread_label
from utils.checkpoint import atomic_write_text
from utils.cli import run_cli
from utils.provenance import object_modules, provenance_record, record_digest, sha256_file

MODEL = "foamliu_mobilefacenet_ms1m"
CONFIG = Path("configs/gfro/celeba_finetune_mobilefacenet.yaml")
OCCLUDED_SETS = {"LFW-MASK": "mask", "LFW-SUNGLASSES": "sunglasses", "LFW-CROP": "crop"}
OCCLUSION_SEED = 0
REUSE_KEYS = ("occlusion", "side", "seed", "fill", "params")  # a build from the full pairs serves any subset
# the code the untouched release's rows depend on (plus the modules of the model's own classes, found at run time)
EVALUATION_MODULES = ("benchmarks.gfro_real_faces", "test_protocol.*", "data_processor.preprocess",
                      "data_processor.image_io", "face_sdk.released", "face_sdk.model_meta", "face_sdk.weights",
                      "face_sdk.restricted_pickle", "backbone.base")
BAR_OCCLUDED_GAIN, BAR_CLEAN_DROP = 3.0, 0.5


def ensure_occluded_sets(aligned: Path, pairs_file: Path, out_root: Path, side: str, workers: int,
                         scored_pairs: Optional[Path] = None) -> Dict[str, Dict[str, Any]]:
    """``{set name: manifest}`` of ``out_root/<kind>``, each built from ``aligned`` and ``pairs_file`` unless a build
    with the same occlusion, side, seed, fill and code, verified against its manifest, made from the current images
    of ``aligned`` and holding every image of ``scored_pairs`` (default: ``pairs_file``) is already there
    (``occluded_set_builder.reuse_problem``)."""
    from test_protocol.lfw.occluded_set_builder import BuildConfig, build_occluded_set, read_pairs, reuse_problem

    needed = read_pairs(scored_pairs or pairs_file, "lfw", ".jpg").images
    manifests = {}
    for name, kind in OCCLUDED_SETS.items():
        config = BuildConfig(source=str(aligned), pairs=str(pairs_file), occlusion=kind, side=side,
                             seed=OCCLUSION_SEED)
        out = out_root / kind
        problem = reuse_problem(out, config, needed, keys=REUSE_KEYS)
        if problem is not None:
            print(f"building {name} ({kind}, side {side}) in {out} ({problem}) ...", flush=True)
            build_occluded_set(config, out, workers=workers, overwrite=True)
        manifests[name] = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    return manifests


def protocol_configs(roots: Mapping[str, Path], pairs_file: Path, variant: str) -> List[Dict[str, Any]]:
    """One ``PairVerification`` config per set, all scored on the same (official or subset) pairs file."""
    return [{"type": "PairVerification", "name": name, "root": str(root), "pairs_file": str(pairs_file),
             "parser": "lfw", "variant": variant} for name, root in roots.items()]


def evaluate(model: torch.nn.Module, spec: Any, configs: Sequence[Mapping[str, Any]], device: str,
             batch_size: int, source: str) -> Dict[str, Dict[str, Any]]:
    """``{set name: result row}`` from the toolbox's evaluation API (one extraction per set)."""
    start = time.perf_counter()
    rows = run_protocols(model.eval(), spec, build_protocols(configs), device, batch_size, checkpoint=source)
    seconds = time.perf_counter() - start
    missing = [row for row in rows if "status" in row]
    if missing:
        raise FileNotFoundError(f"evaluation sets missing: {missing}")
    return {row["set"]: {**row, "eval_seconds_all_sets": round(seconds, 1)} for row in rows}


def untouched_record(model: torch.nn.Module, weights: Path, device: str, pairs_file: Path,
                     alignment: Mapping[str, Any], manifests: Mapping[str, Mapping[str, Any]], variant: str,
                     batch_size: int) -> Dict[str, Any]:
    """Everything the untouched model's rows depend on (``utils.provenance``): the evaluating code (this module, the
    protocols, preprocessing, release loading and the modules of the model's classes), the weights file's sha256,
    the device, torch, the pairs, the aligned images (their checksums in ``summary.json``), the occluded sets' output
    checksums, the variant and the batch size. Its digest names the cache file."""
    modules = (*EVALUATION_MODULES, *object_modules(model.modules()))
    return provenance_record(modules, weights=weights, device=device, model=MODEL, variant=variant,
                             batch_size=batch_size, pairs_sha256=sha256_file(pairs_file),
                             aligned_files_sha256=alignment.get("files_sha256"),
                             occluded={name: manifest.get("output_sha256")
                                       for name, manifest in sorted(manifests.items())})


def cached_rows(cache: Path, record: Mapping[str, Any]) -> Optional[Dict[str, Dict[str, Any]]]:
    """The rows stored in ``cache`` when its recorded provenance equals ``record`` (else None)."""
    if not cache.is_file():
        return None
    try:
        stored = json.loads(cache.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if not isinstance(stored, dict) or stored.get("provenance") != json.loads(json.dumps(record, default=str)):
        return None
    return stored.get("rows")


def fine_tune(config: Path, overrides: Sequence[str], work_dir: Path) -> Dict[str, Any]:
    """Train with the Trainer from ``config`` + ``overrides``; returns the export folder and the fit summary."""
    from training_mode.trainer import Trainer
    from utils.config import load_config
    from utils.logging import setup_logging

    cfg = load_config(config, overrides)
    setup_logging(work_dir / "train.log")
    trainer = Trainer(cfg, work_dir)
    try:
        fit = trainer.fit()
        export = trainer.export()
    finally:
        trainer.close()
    history = fit["history"]
    return {"export": str(export), "train_seconds": round(fit["seconds"], 1), "steps": len(history),
            "first_loss": history[0]["loss"] if history else None,
            "last_loss": history[-1]["loss"] if history else None, "config": str(config),
            "overrides": list(overrides), "images": len(trainer.dataset), "classes": trainer.num_class}


def comparison(before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """Per-set accuracies, the occluded mean, deltas and the bar verdict inputs."""
    sets = list(before)
    table = {name: {"untouched": before[name]["accuracy"], "fine_tuned": after[name]["accuracy"],
                    "delta": round(after[name]["accuracy"] - before[name]["accuracy"], 2)} for name in sets}
    occluded = [name for name in sets if name in OCCLUDED_SETS]
    mean_before = sum(before[n]["accuracy"] for n in occluded) / len(occluded)
    mean_after = sum(after[n]["accuracy"] for n in occluded) / len(occluded)
    table["occluded mean"] = {"untouched": round(mean_before, 2), "fine_tuned": round(mean_after, 2),
                              "delta": round(mean_after - mean_before, 2)}
    return table


def format_comparison(table: Mapping[str, Mapping[str, float]], before: Mapping[str, Mapping[str, Any]],
                      after: Mapping[str, Mapping[str, Any]]) -> str:
    """The before/after table; the ± column says what it is (s.e. for facexzoo, std for insightface)."""
    kinds = sorted({rows[name].get("spread_kind", "?") for rows in (before, after) for name in rows})
    lines = [f"{'set':<16} {'untouched':>16} {'GFRO fine-tuned':>16} {'delta':>7}", "-" * 58]
    for name, row in table.items():
        spread = lambda rows: f" ± {rows[name]['spread']:.2f}" if name in rows else ""  # noqa: E731
        lines.append(f"{name:<16} {row['untouched']:>9.2f}{spread(before):<7} {row['fine_tuned']:>9.2f}"
                     f"{spread(after):<7} {row['delta']:>+7.2f}")
    lines.append(f"(accuracy %, 10 folds; ± = {' / '.join(spread_label(kind) for kind in kinds)} over the folds)")
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gfro_real_faces", description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"), help="the shared data folder")
    parser.add_argument("--json", type=Path, help="write the before/after rows, timings and settings here")
    parser.add_argument("--pairs", type=int, default=6000, help="pairs to score (default: all 6,000)")
    parser.add_argument("--side", choices=("both", "one"), default="both",
                        help="occluded images per pair: both (default) or one")
    parser.add_argument("--variant", choices=("facexzoo", "insightface"), default="facexzoo")
    parser.add_argument("--config", type=Path, default=CONFIG, help="training preset (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override (repeatable), e.g. --set schedule.epochs=1")
    parser.add_argument("--max-steps", type=int, help="stop training after this many steps (smoke runs)")
    parser.add_argument("--work-dir", type=Path, default=Path("work_dirs/gfro_real_faces"))
    parser.add_argument("--aligned", type=Path, help="aligned LFW (default: $FACE_DATA_ROOT/lfw_aligned)")
    parser.add_argument("--occluded-root", type=Path,
                        help="occluded LFW sets (default: $FACE_DATA_ROOT/lfw_occluded, or lfw_occluded_side_one)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128, help="evaluation batch size")
    parser.add_argument("--workers", type=int, default=2, help="alignment / occlusion processes")
    parser.add_argument("--no-cache", action="store_true",
                        help="evaluate the untouched release again even if an identical evaluation (same evaluating "
                             "code, weights sha256, device, pairs, images, variant, torch) is stored in the folder "
                             "of --work-dir")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from face_sdk.released import load_released_recognizer, released_weights_path

    weights_dir = args.shared / "weights"
    os.environ.setdefault("FACE_SDK_WEIGHTS_DIR", str(weights_dir))  # init_weights / teacher resolve the release
    official_pairs = args.shared / "data" / "lfw" / "pairs.txt"
    celeba = args.shared / "data" / "celeba_subset_112" / "images"
    face_data_root = data_roots()["FACE_DATA_ROOT"]
    aligned = args.aligned or face_data_root / "lfw_aligned"
    occluded_root = args.occluded_root or face_data_root / ("lfw_occluded" if args.side == "both"
                                                            else "lfw_occluded_side_one")
    with tempfile.TemporaryDirectory() as tmp:
        pairs_file = official_pairs
        if args.pairs != 6000:
            pairs_file = subset_pairs_file(official_pairs, args.pairs, Path(tmp) / "pairs.txt")
        start = time.perf_counter()
        alignment = ensure_aligned_lfw(args.shared / "data" / "lfw" / "images", aligned, args.workers, [pairs_file])
        manifests = ensure_occluded_sets(aligned, official_pairs, occluded_root, args.side, args.workers, pairs_file)
        prepare_seconds = time.perf_counter() - start
        roots = {"LFW": aligned, **{name: occluded_root / kind / "images" for name, kind in OCCLUDED_SETS.items()}}
        configs = protocol_configs(roots, pairs_file, args.variant)
        model, meta = load_released_recognizer(MODEL, weights_dir)
        record = untouched_record(model, released_weights_path(MODEL, weights_dir), args.device, pairs_file,
                                  alignment, manifests, args.variant, args.batch_size)
        cache = args.work_dir.parent / f"untouched_{MODEL}_{record_digest(record)}.json"
        before = None if args.no_cache else cached_rows(cache, record)
        if before is not None:
            print(f"untouched {MODEL}: reusing the rows of an identical evaluation in {cache}", flush=True)
        else:
            before = evaluate(model, meta.preprocess, configs, args.device, args.batch_size, f"released {MODEL}")
            atomic_write_text(cache, json.dumps({"provenance": record, "rows": before}, indent=2, default=float)
                              + "\n")
        overrides = [f"data.train.root={celeba}", *args.overrides]
        if args.max_steps is not None:
            overrides.append(f"runtime.max_steps={args.max_steps}")
        training = fine_tune(args.config, overrides, args.work_dir)
        from test_protocol.model_loading import load_export

        tuned = load_export(training["export"])
        after = evaluate(tuned.model, tuned.spec, configs, args.device, args.batch_size, tuned.source)

    table = comparison(before, after)
    num_pairs = before["LFW"]["num_pairs"]
    figure = plot_accuracy_bars([{**row, "model": label} for label, rows in (("untouched release", before),
                                                                            ("GFRO fine-tuned", after))
                                 for row in rows.values()], args.work_dir / "before_after.png", group_key="model",
                                title=f"{MODEL} on LFW and occluded LFW ({num_pairs} pairs, {args.variant})",
                                ylim=(50, 100))
    print(f"\nGFRO fine-tuning of {MODEL} on {training['images']} CelebA faces ({training['classes']} ids), "
          f"{training['steps']} steps in {training['train_seconds']:.0f} s; {num_pairs} pairs, variant "
          f"{args.variant}, occluded side {args.side}")
    print(format_comparison(table, before, after))
    print(f"figure: {figure}")
    verdict = None
    if args.pairs == 6000:
        met = (table["occluded mean"]["delta"] >= BAR_OCCLUDED_GAIN and table["LFW"]["delta"] >= -BAR_CLEAN_DROP)
        verdict = "met" if met else "NOT met"
        print(f"\nbar (occluded mean +{BAR_OCCLUDED_GAIN:.0f} or more, clean LFW -{BAR_CLEAN_DROP} at most): {verdict}")
    else:
        print(f"\nbar not judged: {num_pairs} of the 6,000 pairs scored (--pairs)")
    if args.json:
        arguments = sys.argv[1:] if argv is None else list(argv)
        payload = {"command": "python -m benchmarks.gfro_real_faces " + " ".join(arguments),
                   "machine": machine(), "device": args.device, "model": MODEL, "pairs": num_pairs,
                   "pairs_sha256": before["LFW"].get("pairs_sha256"), "variant": args.variant, "side": args.side,
                   "comparison": table, "bar": verdict, "training": training,
                   "prepare_seconds": round(prepare_seconds, 1), "alignment": alignment,
                   "occluded_sets": {name: {"output_sha256": m.get("output_sha256"), "counts": m.get("counts"),
                                            "config": m.get("config")} for name, m in manifests.items()},
                   "config_sha256": sha256_file(args.config),
                   "untouched_provenance": record,
                   "rows_untouched": list(before.values()), "rows_fine_tuned": list(after.values())}
        atomic_write_text(args.json, json.dumps(payload, indent=2, default=float) + "\n")
    return 1 if verdict == "NOT met" else 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
