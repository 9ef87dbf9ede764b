"""Training-step throughput (img/s) for method × backbone × precision × channels_last on synthetic tensors.

    python -m tools.benchmark_train --backbones MobileFaceNet,IResNet50 --precisions fp32,bf16 --batch-size 64
    python -m tools.benchmark_train --device cuda --batch-size 512 --precisions bf16,fp16 --channels-last both --compile
    python -m tools.benchmark_train --methods arcface,gfro,gfro_teacher --backbones MobileFaceNet --batch-size 32

Methods (each step = preprocess + forward + ArcFace head + losses + backward + SGD step, the Trainer's own path):
``arcface`` = ConventionalTraining on the backbone; ``gfro`` = GFROTraining around ``GFROEmbedding(trunk=backbone)``
(clean + noisy view of every image through the student, ArcFace on both, clean–noisy contrastive, MoE balance;
teacher-free); ``gfro_teacher`` = the same plus a frozen teacher (``--teacher``, default the same architecture) on
the clean images, KD on. ``img/s`` counts source images (a GFRO sample = its clean image + its noisy view), so the
two methods are compared per training sample; ``fwd img/s`` counts every image the student forwards.
Prints a table (and ``--json`` writes it); figures go in docs/BENCHMARKS.md with the machine and command.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from contextlib import nullcontext
from typing import Any, Dict, List, Optional, Sequence

import torch

from backbone import build_backbone
from backbone.gfro import GFROEmbedding
from data_processor.preprocess import PreprocessSpec
from data_processor.train_dataset import OCCLUSION_TYPES
from head import build_head
from training_mode.base import TrainingMode
from training_mode.conventional import ConventionalTraining
from training_mode.gfro import GFROTraining
from training_mode.teacher import FrozenTeacher
from utils.cli import run_cli

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
METHODS = ("arcface", "gfro", "gfro_teacher")


def build_method(method: str, backbone_name: str, teacher_name: Optional[str], num_class: int) -> TrainingMode:
    """The training mode a ``method`` row times (module docstring), with randomly initialised weights."""
    if method not in METHODS:
        raise ValueError(f"--methods: unknown method {method!r}; expected some of {METHODS}")
    backbone = build_backbone({"type": backbone_name})
    if method == "arcface":
        head = build_head({"type": "ArcFace"}, feat_dim=backbone.feat_dim, num_class=num_class)
        return ConventionalTraining(backbone, head, PreprocessSpec())
    student = GFROEmbedding(backbone, feat_dim=backbone.feat_dim)
    head = build_head({"type": "ArcFace"}, feat_dim=student.feat_dim, num_class=num_class)
    teacher = None
    if method == "gfro_teacher":
        teacher = FrozenTeacher(build_backbone({"type": teacher_name or backbone_name}), PreprocessSpec(), "random")
    return GFROTraining(student, head, PreprocessSpec(), teacher=teacher, contrastive_weight=1.0,
                        kd_weight=1.0 if teacher is not None else 0.0)


def synthetic_batch(method: str, batch_size: int, num_class: int, device: torch.device) -> Dict[str, torch.Tensor]:
    """uint8 RGB images and labels as the data loader delivers them (GFRO: plus a noisy view and its type)."""
    batch = {"image": torch.randint(0, 256, (batch_size, 3, 112, 112), dtype=torch.uint8, device=device),
             "label": torch.randint(0, num_class, (batch_size,), device=device)}
    if method != "arcface":
        batch["noisy"] = torch.randint(0, 256, (batch_size, 3, 112, 112), dtype=torch.uint8, device=device)
        batch["occlusion_type"] = torch.randint(0, len(OCCLUSION_TYPES), (batch_size,), device=device)
    return batch


def measure(method: str, backbone_name: str, precision: str, channels_last: bool, compile_model: bool,
            batch_size: int, steps: int, warmup: int, num_class: int, device: torch.device,
            teacher_name: Optional[str] = None) -> Dict[str, Any]:
    torch.manual_seed(0)
    mode = build_method(method, backbone_name, teacher_name, num_class).to(device)
    if channels_last:
        mode.to(memory_format=torch.channels_last)
        mode.channels_last = True
    step_module = torch.compile(mode) if compile_model else mode
    optimizer = torch.optim.SGD([p for p in mode.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    batch = synthetic_batch(method, batch_size, num_class, device)
    dtype = DTYPES[precision]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()

    def step() -> None:
        with autocast:
            loss = step_module(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    forwarded = 1 if method == "arcface" else 2
    return {"method": method, "backbone": backbone_name, "precision": precision, "channels_last": channels_last,
            "compile": compile_model, "batch_size": batch_size, "step_s": round(seconds / steps, 6),
            "img_per_s": round(batch_size * steps / seconds, 2),
            "forward_img_per_s": round(forwarded * batch_size * steps / seconds, 2),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if device.type == "cuda" else None}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="arcface", help=f"comma-separated, of {','.join(METHODS)}")
    parser.add_argument("--backbones", default="MobileFaceNet,IResNet50")
    parser.add_argument("--teacher", help="gfro_teacher: the teacher's backbone (default: the student's)")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--channels-last", choices=["off", "on", "both"], default="off")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--num-class", type=int, default=10572, help="CASIA-WebFace identities")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    layouts = {"off": [False], "on": [True], "both": [False, True]}[args.channels_last]
    rows: List[Dict[str, Any]] = []
    for name in args.backbones.split(","):
        for method in args.methods.split(","):
            for precision in args.precisions.split(","):
                for channels_last in layouts:
                    row = measure(method, name, precision, channels_last, args.compile, args.batch_size, args.steps,
                                  args.warmup, args.num_class, device, args.teacher)
                    rows.append(row)
                    print(f"{method:<12} {row['backbone']:<16} {row['precision']:<5} "
                          f"channels_last={str(channels_last):<5} compile={str(args.compile):<5} "
                          f"batch={args.batch_size:<4} {row['img_per_s']:>9.1f} img/s "
                          f"({row['forward_img_per_s']:.1f} fwd img/s)"
                          + (f"  peak {row['peak_mem_gib']} GiB" if row["peak_mem_gib"] is not None else ""),
                          flush=True)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"machine": machine, "torch": torch.__version__, "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
