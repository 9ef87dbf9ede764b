"""Train a face model from a YAML config: ``python -m training_mode.conventional_training.train CONFIG [a.b=c ...]``.

Multi-GPU: ``torchrun --nproc_per_node=N -m training_mode.conventional_training.train CONFIG``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import List, Optional

from training_mode.trainer import Trainer, write_results
from utils.config import load_config
from utils.cli import run_cli
from utils.logging import setup_logging

logger = logging.getLogger("train")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML config (configs/...)")
    parser.add_argument("overrides", nargs="*", help="a.b=c overrides (+a.b=c adds a new key)")
    parser.add_argument("--work-dir", help="run folder (default: runtime.work_dir or work_dirs/<config name>)")
    parser.add_argument("--resume", help="'auto' (latest checkpoint in the run folder) or a checkpoint path")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    work_dir = Path(args.work_dir or cfg.get("runtime", {}).get("work_dir")
                    or Path("work_dirs") / Path(args.config).stem)
    setup_logging(work_dir / "train.log")
    trainer = Trainer(cfg, work_dir, resume=args.resume)
    setup_logging(work_dir / "train.log", is_main=trainer.dist.is_main)
    try:
        fit_info = trainer.fit()
        if trainer.dist.is_main:
            export_dir = trainer.export()
            logger.info("exported embedding network to %s", export_dir)
            rows = [] if args.no_eval else trainer.evaluate()
            if rows:
                from test_protocol.evaluate import format_table
                print(format_table(rows), flush=True)
            path = write_results(work_dir, rows, fit_info)
            logger.info("results written to %s (evaluated: the last weights; checkpoint rule: %s)", path,
                        trainer.checkpoint_rule())
    finally:
        trainer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
