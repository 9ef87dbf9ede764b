"""Evaluate a model on the sets of ``test_protocol/data_conf.yaml`` and print one table.

    python -m test_protocol.test_lfw_adapt [--checkpoint PATH | --export DIR | --onnx DIR] [--sets SYNTH,SYNTH-MASK]
        [--variant facexzoo|insightface|both] [--json out.json] [--report DIR] [--device cpu]
    python -m test_protocol.test_lfw_adapt --weights X.pth --arch IResNet50 --preprocess insightface
        [--arch-kwargs '{"feat_dim": 512}'] [--non-strict] [--bin lfw.bin,cfp_fp.bin,agedb_30.bin] [--sets ...]

``--weights`` evaluates anyone's released backbone (``model_loading.load_foreign_weights``): ``--preprocess`` is a
preset of ``data_processor.preprocess.PREPROCESS_PRESETS`` (insightface, facexzoo, imagenet) or a spec; keys that do
not load are listed and are an error unless ``--non-strict``. ``--bin`` adds insightface ``.bin`` files as sets
(named by their file stem); with ``--bin`` and no ``--sets`` only the ``.bin`` files are evaluated.

``--onnx`` scores an export's ``model.onnx`` with onnxruntime (same preprocessing, from its ``model_meta.json``).
Without ``--checkpoint``/``--export``/``--onnx`` the newest run under ``work_dirs/`` is used (its ``export/`` folder
when present, else ``checkpoints/last.pt``): the last checkpoint, never one picked on a test set. Embedded synthetic
sets are built on first use; other missing sets give a "not available" row; a missing image is an error.
Every row says its ``split`` (test / val) and whether the set's occluders are ``clean`` / ``seen`` / ``held_out``
for this model (``unknown`` when the model does not record its trained occluder families); see
``test_protocol.robustness``.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from data_processor.preprocess import parse_preprocess
from test_protocol.data_conf import load_data_conf, protocol_config
from test_protocol.evaluate import build_protocols, format_table, run_protocols
from test_protocol.model_loading import SELECTION_RULE, LoadedModel, load_for_evaluation, load_foreign_weights
from utils.checkpoint import atomic_write_text
from utils.cli import run_cli

logger = logging.getLogger("test_lfw_adapt")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="training checkpoint (work_dirs/<run>/checkpoints/last.pt)")
    source.add_argument("--export", help="export folder with backbone.pt + model_meta.json")
    source.add_argument("--onnx", help="model.onnx (or its export folder) run by onnxruntime, with the "
                                       "model_meta.json beside it (python -m utils.export_onnx writes both)")
    source.add_argument("--weights", help="a state_dict (or checkpoint holding one) of any release; needs --arch "
                                          "and --preprocess")
    parser.add_argument("--arch", help="--weights: backbone name of the registry (IResNet50, MobileFaceNetGDC, ...)")
    parser.add_argument("--arch-kwargs", default="{}", help="--weights: JSON keyword arguments of --arch, e.g. "
                                                           "'{\"feat_dim\": 128}' (default: %(default)s)")
    parser.add_argument("--preprocess", help="--weights: input contract: insightface | facexzoo | imagenet, or "
                                             "'[PRESET,]key=value,...' / a JSON PreprocessSpec "
                                             "(data_processor.preprocess.parse_preprocess)")
    parser.add_argument("--non-strict", action="store_true",
                        help="--weights: load what fits instead of failing on missing/unexpected keys (reported)")
    parser.add_argument("--bin", help="comma-separated insightface .bin files (lfw.bin,cfp_fp.bin,agedb_30.bin) "
                                      "evaluated as sets named by their stem")
    parser.add_argument("--work-dirs", default="work_dirs",
                        help="where to look for the newest run (default: %(default)s)")
    parser.add_argument("--sets", help="comma-separated set names from data_conf.yaml (default: all)")
    parser.add_argument("--data-conf", help="another data_conf.yaml")
    parser.add_argument("--variant", default="both", choices=("facexzoo", "insightface", "both"),
                        help="verification protocol variant (default: %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--json", help="write the result rows to this JSON file")
    parser.add_argument("--report", help="write report.md + ROC / bar-chart PNGs into this folder")
    args = parser.parse_args(argv)
    if args.weights and not (args.arch and args.preprocess):
        parser.error("--weights needs --arch and --preprocess (e.g. --arch IResNet50 --preprocess insightface)")
    if not args.weights and (args.arch or args.preprocess or args.non_strict):
        parser.error("--arch / --preprocess / --non-strict go with --weights")
    return args


def bin_entries(spec: str) -> List[Dict[str, Any]]:
    """``--bin a.bin,b.bin`` → data_conf-style entries (parser ``bin``, named by file stem); a missing file is an
    error (it was asked for by name)."""
    entries = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        path = Path(item).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--bin {item}: no such file")
        entries.append({"name": path.stem, "pairs_file": str(path.resolve()), "parser": "bin"})
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"--bin: two files share a stem ({names}); rename one")
    return entries


def load_model(args: argparse.Namespace) -> LoadedModel:
    if args.weights:
        kwargs = json.loads(args.arch_kwargs)
        if not isinstance(kwargs, dict):
            raise ValueError(f"--arch-kwargs must be a JSON object, got {args.arch_kwargs!r}")
        loaded = load_foreign_weights(args.weights, args.arch, parse_preprocess(args.preprocess), kwargs,
                                      strict=not args.non_strict)
        report = loaded.load_report or {}
        logger.info("weights: %s (%s; converter: %s; prefixes removed: %s)", args.weights, report.get("status"),
                    report.get("converter") or "none", report.get("prefixes_removed") or "none")
        return loaded
    return load_for_evaluation(args.checkpoint, args.export, args.work_dirs, args.onnx)


def protocol_configs(entries: List[Dict[str, Any]], variant: str) -> List[Dict[str, Any]]:
    """data_conf entries → protocol configs: builders run for missing embedded sets; the variant is applied."""
    configs = [protocol_config(entry) for entry in entries]
    return [{**cfg, "variant": variant} if cfg.get("type", "PairVerification") == "PairVerification" else cfg
            for cfg in configs]


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    bins = bin_entries(args.bin) if args.bin else []  # before loading: a wrong path fails fast
    loaded = load_model(args)
    logger.info("model: %s\ncheckpoint rule: %s", loaded.source, SELECTION_RULE)
    entries = load_data_conf(args.data_conf, args.sets.split(",") if args.sets else None) \
        if args.sets or not bins else []
    entries += bins
    protocols = build_protocols(protocol_configs(entries, args.variant))
    rows = run_protocols(loaded.model, loaded.spec, protocols, args.device, args.batch_size, loaded.source,
                         args.num_workers, trained_families=loaded.trained_families)
    print(format_table(rows))
    command = "python -m test_protocol.test_lfw_adapt " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    if args.json:
        payload = {"model": loaded.source, "rule": SELECTION_RULE, "command": command,
                   "trained_families": loaded.trained_families, "preprocess": loaded.spec.to_dict(),
                   "load_report": loaded.load_report, "rows": rows}
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")
    if args.report:
        from test_protocol.report import write_report

        curves = {(p.name, p.variant): p.roc_curve()
                  for p in protocols if not isinstance(p, dict)}
        report = write_report(args.report, rows, curves, "Evaluation report",
                              [f"model: `{loaded.source}`", f"checkpoint rule: {SELECTION_RULE}",
                               "trained occluder families: " + (", ".join(loaded.trained_families) or "none"
                                                                if loaded.trained_families is not None
                                                                else "unknown"),
                               f"command: `{command}`", f"preprocess: {loaded.spec.to_dict()}"]
                              + ([f"weights: {loaded.load_report['status']}; converter: "
                                  f"{loaded.load_report['converter'] or 'none'}; prefixes removed: "
                                  f"{loaded.load_report['prefixes_removed'] or 'none'}"]
                                 if loaded.load_report else []))
        logger.info("report: %s", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
