"""Evaluate a model on the sets of ``test_protocol/data_conf.yaml`` and print one table.

    python -m test_protocol.test_lfw_adapt [--checkpoint PATH | --export DIR | --onnx DIR] [--sets SYNTH,SYNTH-MASK]
        [--variant facexzoo|insightface|both] [--json out.json] [--report DIR] [--device cpu]

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
from typing import Any, Dict, List, Optional, Sequence

import torch

from test_protocol.data_conf import load_data_conf, protocol_config
from test_protocol.evaluate import build_protocols, format_table, run_protocols
from test_protocol.model_loading import SELECTION_RULE, load_for_evaluation
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
    return parser.parse_args(argv)


def protocol_configs(entries: List[Dict[str, Any]], variant: str) -> List[Dict[str, Any]]:
    """data_conf entries → protocol configs: builders run for missing embedded sets; the variant is applied."""
    configs = [protocol_config(entry) for entry in entries]
    return [{**cfg, "variant": variant} if cfg.get("type", "PairVerification") == "PairVerification" else cfg
            for cfg in configs]


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    loaded = load_for_evaluation(args.checkpoint, args.export, args.work_dirs, args.onnx)
    logger.info("model: %s\ncheckpoint rule: %s", loaded.source, SELECTION_RULE)
    entries = load_data_conf(args.data_conf, args.sets.split(",") if args.sets else None)
    protocols = build_protocols(protocol_configs(entries, args.variant))
    rows = run_protocols(loaded.model, loaded.spec, protocols, args.device, args.batch_size, loaded.source,
                         args.num_workers, trained_families=loaded.trained_families)
    print(format_table(rows))
    command = "python -m test_protocol.test_lfw_adapt " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    if args.json:
        payload = {"model": loaded.source, "rule": SELECTION_RULE, "command": command,
                   "trained_families": loaded.trained_families, "rows": rows}
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
                               f"command: `{command}`", f"preprocess: {loaded.spec.to_dict()}"])
        logger.info("report: %s", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
