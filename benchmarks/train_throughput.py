"""Training throughput on one device: backbone × step path × method, Partial FC at scale, the loader, evaluation.

    python -m benchmarks.train_throughput --device cuda --json out.json
    python -m benchmarks.train_throughput --device cpu --small --json out.json      # CPU, small shapes

Rows (all of one run, so ratios compare like with like on a shared machine):

* **steps**: img/s of one training step (uint8 batch → GPU-side normalisation → forward → margin head → losses →
  backward → optimiser step: the training mode the Trainer runs) for each backbone (MobileFaceNet, IResNet-50 at
  batch 512, IResNet-100 at 256; ``--small``: MobileFaceNet and IResNet-50 at 64×64, quarter width, batch 16) ×
  path — ``eager_fp32`` (plain), ``eager_amp_fp16`` (fp16 autocast + GradScaler, how FaceX-Zoo trains), ``fast``
  (the Trainer's CUDA fast path: bf16 autocast with fp32 margin/softmax, channels_last, ``torch.compile``, fused
  SGD, ``set_to_none`` grads; on the CPU only bf16 + channels_last — compile and fused are CUDA options) — ×
  method — ``arcface`` (ConventionalTraining), ``gfro`` (GFROTraining around GFROEmbedding: the clean image and its
  noisy view both forwarded, teacher-free), ``gfro_teacher`` (plus a frozen teacher of the same architecture on the
  clean images, KD on). img/s counts source images; ``fwd img/s`` counts every image the student forwards. The
  table prints fast / AMP-fp16 per backbone × method and the GFRO step time per forwarded image relative to
  ArcFace's. ``torch.compile`` time is the first warm-up step, reported separately (``compile_s``).
* **partial_fc**: MobileFaceNet + ArcFace inside Partial FC (head/partial_fc.py) at 93,431 classes (MS1MV2, sample
  rate 1.0) and 2,059,906 (WebFace42M, sample rate 0.1) on the fast path: img/s, classifier MiB (weights + momentum)
  and peak memory. ``--small``: 93,431 and 500,000 classes.
* **loader**: samples/s of the embedded training set with partial-view occlusion (the real per-sample work:
  decode + occlusion + flip + tensors) through a DataLoader with 0, 1, 2, … ``--max-workers`` workers.
* **eval**: one LFW-sized evaluation, 12,000 images embedded (in-memory uint8 faces, no JPEG decode) + 6,000 pairs
  10-fold (facexzoo): seconds.

Goals from issue 14 (figures to report, not tests): fast ≥ 2.5× AMP-fp16 for IResNet-50, ≥ 2.2× for MobileFaceNet;
GFRO step ≤ 1.15× ArcFace per forwarded image; LFW extraction + 10-fold ≤ 10 s on one GPU. Figures go in
docs/BENCHMARKS.md with the machine and command.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from contextlib import nullcontext
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
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

METHODS = ("arcface", "gfro", "gfro_teacher")
PATHS = ("eager_fp32", "eager_amp_fp16", "fast")
FULL = {"backbones": {"MobileFaceNet": 512, "IResNet50": 512, "IResNet100": 256}, "input": 112, "width": 1.0,
        "partial_fc": ((93431, 1.0), (2059906, 0.1)), "pfc_batch": 512}
SMALL = {"backbones": {"MobileFaceNet": 16, "IResNet50": 16}, "input": 64, "width": 0.25,
         "partial_fc": ((93431, 1.0), (500000, 0.1)), "pfc_batch": 16}
NUM_CLASS = 10572  # CASIA-WebFace identities (the step rows' classifier)


def build_method(method: str, backbone_cfg: Dict[str, Any], num_class: int,
                 head_cfg: Optional[Dict[str, Any]] = None) -> TrainingMode:
    """The training mode a row times, randomly initialised (module docstring)."""
    if method not in METHODS:
        raise ValueError(f"--methods: unknown method {method!r}; expected some of {METHODS}")
    head_cfg = head_cfg or {"type": "ArcFace"}
    backbone = build_backbone(dict(backbone_cfg))
    spec = input_spec(backbone_cfg)
    if method == "arcface":
        return ConventionalTraining(backbone, build_head(head_cfg, backbone.feat_dim, num_class), spec)
    student = GFROEmbedding(backbone, feat_dim=backbone.feat_dim)
    head = build_head(head_cfg, feat_dim=student.feat_dim, num_class=num_class)
    teacher = None
    if method == "gfro_teacher":
        teacher = FrozenTeacher(build_backbone(dict(backbone_cfg)), spec, "random")
    return GFROTraining(student, head, spec, teacher=teacher, contrastive_weight=1.0,
                        kd_weight=1.0 if teacher is not None else 0.0)


def input_spec(backbone_cfg: Dict[str, Any]) -> PreprocessSpec:
    """The default normalisation at the backbone's input size (the batch is already that size: no resize)."""
    return PreprocessSpec(input_size=tuple(backbone_cfg.get("input_size", (112, 112))))


def synthetic_batch(method: str, batch_size: int, num_class: int, size: int,
                    device: torch.device) -> Dict[str, torch.Tensor]:
    """uint8 RGB images and labels as the loader delivers them (GFRO: plus a noisy view and its type)."""
    batch = {"image": torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8, device=device),
             "label": torch.randint(0, num_class, (batch_size,), device=device)}
    if method != "arcface":
        batch["noisy"] = torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8, device=device)
        batch["occlusion_type"] = torch.randint(0, len(OCCLUSION_TYPES), (batch_size,), device=device)
    return batch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(method: str, backbone_cfg: Dict[str, Any], path: str, batch_size: int, steps: int, warmup: int,
            num_class: int, size: int, device: torch.device, head_cfg: Optional[Dict[str, Any]] = None,
            compile_mode: str = "default") -> Dict[str, Any]:
    """One row: seconds per step after ``warmup`` steps (the first of which holds the compile time)."""
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; expected one of {PATHS}")
    torch.manual_seed(0)
    mode = build_method(method, backbone_cfg, num_class, head_cfg).to(device)
    fast, cuda = path == "fast", device.type == "cuda"
    if fast:
        mode.to(memory_format=torch.channels_last)
        mode.channels_last = True
    step_module = torch.compile(mode, mode=compile_mode) if fast and cuda else mode
    params = [p for p in mode.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, **({"fused": True} if fast and cuda else {}))
    scaler = torch.amp.GradScaler(device.type, enabled=path == "eager_amp_fp16")
    dtype = {"eager_fp32": None, "eager_amp_fp16": torch.float16, "fast": torch.bfloat16}[path]
    if dtype is torch.float16 and not cuda:
        dtype = torch.bfloat16  # fp16 autocast on the CPU is not the FaceX-Zoo path; bf16 stands in, labelled
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    batch = synthetic_batch(method, batch_size, num_class, size, device)

    def step() -> None:
        with autocast:
            loss = step_module(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    synchronize(device)
    tic = time.perf_counter()
    step()
    synchronize(device)
    first = time.perf_counter() - tic
    for _ in range(max(0, warmup - 1)):
        step()
    synchronize(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds = (time.perf_counter() - tic) / steps
    forwarded = 1 if method == "arcface" else 2
    return {"method": method, "backbone": backbone_cfg["type"], "path": path,
            "autocast": str(dtype).replace("torch.", "") if dtype is not None else "fp32",
            "batch_size": batch_size, "input": size, "step_s": round(seconds, 6),
            "img_per_s": round(batch_size / seconds, 2),
            "forward_img_per_s": round(forwarded * batch_size / seconds, 2),
            "compile_s": round(first - seconds, 3) if fast and cuda else None,
            "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2) if cuda else None}


def loader_rates(max_workers: int, samples: int, size: int) -> List[Dict[str, Any]]:
    """Samples/s of the embedded training set with partial-view occlusion, per DataLoader worker count."""
    from torch.utils.data import DataLoader

    from data_processor.train_dataset import build_train_dataset, single_threaded_opencv
    from test_protocol.data_conf import data_roots

    single_threaded_opencv()
    root = data_roots()["FACE_DATA_ROOT"] / "synthetic_faces"
    dataset = build_train_dataset({"train": {"type": "SyntheticFaceDataset", "root": str(root)},
                                   "occlusion": {"mode": "partial", "fill": "random", "seed": 0}, "flip": 0.5})
    rows = []
    for workers in range(0, max_workers + 1):
        loader = DataLoader(torch.utils.data.Subset(dataset, range(min(samples, len(dataset)))), batch_size=32,
                            num_workers=workers)
        tic = time.perf_counter()
        count = sum(int(batch["label"].shape[0]) for batch in loader)
        rows.append({"workers": workers, "samples_per_s": round(count / (time.perf_counter() - tic), 1),
                     "input": size})
    return rows


def eval_seconds(backbone_cfg: Dict[str, Any], size: int, device: torch.device, images: int = 12000,
                 batch_size: int = 512) -> Dict[str, Any]:
    """An LFW-sized evaluation: ``images`` in-memory uint8 faces embedded + 6,000 pairs 10-fold (facexzoo)."""
    from test_protocol.extract import extract_views
    from test_protocol.verification_metrics import kfold_facexzoo

    model = build_backbone(dict(backbone_cfg)).to(device).eval()
    faces = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8) for _ in range(images)]
    rng = np.random.default_rng(0)
    first, second = rng.integers(0, images, 6000), rng.integers(0, images, 6000)
    issame = np.repeat(np.arange(20) % 2 == 0, 300)
    synchronize(device)
    tic = time.perf_counter()
    views = extract_views(model, faces, input_spec(backbone_cfg), device, batch_size=batch_size, progress=False)
    embeddings = torch.nn.functional.normalize(views.plain.float(), dim=1)
    scores = (embeddings[first] * embeddings[second]).sum(1).double().numpy()
    kfold_facexzoo(scores, issame, 10)
    return {"backbone": backbone_cfg["type"], "images": images, "pairs": 6000, "input": size,
            "seconds": round(time.perf_counter() - tic, 2)}


def ratio_lines(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """fast / AMP-fp16 per backbone × method, and GFRO per forwarded image vs ArcFace per backbone × path."""
    index = {(r["backbone"], r["method"], r["path"]): r for r in rows}
    lines = []
    for (backbone, method, path), row in index.items():
        amp = index.get((backbone, method, "eager_amp_fp16"))
        if path == "fast" and amp:
            speedup = row["img_per_s"] / amp["img_per_s"]
            lines.append(f"{backbone:<14} {method:<13} fast / AMP-fp16 eager = {speedup:.2f}×")
    for (backbone, method, path), row in index.items():
        arcface = index.get((backbone, "arcface", path))
        if method != "arcface" and arcface:
            per_image = arcface["forward_img_per_s"] / row["forward_img_per_s"]
            lines.append(f"{backbone:<14} {method:<13} {path:<15} step per forwarded image = {per_image:.2f}× "
                         f"ArcFace's (per sample {arcface['img_per_s'] / row['img_per_s']:.2f}×)")
    return lines


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def run(args: argparse.Namespace, emit: Callable[[str], None] = print) -> Dict[str, Any]:
    device = torch.device(args.device)
    shape = SMALL if args.small else FULL
    size, width = shape["input"], shape["width"]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    backbones = {name: args.batch_size or batch for name, batch in shape["backbones"].items()
                 if not args.backbones or name in args.backbones.split(",")}
    report: Dict[str, Any] = {"machine": machine(device), "torch": torch.__version__, "small": bool(args.small),
                              "steps": [], "partial_fc": [], "loader": [], "eval": []}

    def backbone_cfg(name: str) -> Dict[str, Any]:
        cfg: Dict[str, Any] = {"type": name, "input_size": [size, size]}
        if width != 1.0:
            cfg["width"] = width
        return cfg

    for name, batch in backbones.items():
        for method in methods:
            for path in paths:
                row = measure(method, backbone_cfg(name), path, batch, args.steps, args.warmup, NUM_CLASS, size,
                              device, compile_mode=args.compile_mode)
                report["steps"].append(row)
                emit(f"{name:<14} {method:<13} {path:<15} b{batch:<4} {row['img_per_s']:>10.1f} img/s "
                     f"({row['forward_img_per_s']:.1f} fwd img/s)"
                     + (f"  compile {row['compile_s']:.1f} s" if row["compile_s"] is not None else "")
                     + (f"  peak {row['peak_mem_gib']} GiB" if row["peak_mem_gib"] is not None else ""))
    for num_class, rate in ([] if args.skip_partial_fc else shape["partial_fc"]):
        head = {"type": "PartialFC", "head": {"type": "ArcFace"}, "sample_rate": rate}
        row = measure("arcface", backbone_cfg("MobileFaceNet"), "fast", shape["pfc_batch"], args.steps, args.warmup,
                      num_class, size, device, head_cfg=head, compile_mode=args.compile_mode)
        row.update({"num_class": num_class, "sample_rate": rate,
                    "classifier_mib": round(2 * num_class * 512 * 4 / 2 ** 20, 1)})  # weights + SGD momentum
        report["partial_fc"].append(row)
        emit(f"Partial FC {num_class:>9,} classes, sample rate {rate}: {row['img_per_s']:.1f} img/s, classifier "
             f"{row['classifier_mib']} MiB (weights + momentum, 1 rank)"
             + (f", peak {row['peak_mem_gib']} GiB" if row["peak_mem_gib"] is not None else ""))
    if args.max_workers >= 0:
        report["loader"] = loader_rates(args.max_workers, args.loader_samples, size)
        for row in report["loader"]:
            emit(f"loader: {row['workers']} workers → {row['samples_per_s']:.1f} samples/s (partial-view occlusion)")
    if not args.skip_eval:
        report["eval"].append(eval_seconds(backbone_cfg("MobileFaceNet"), size, device,
                                           images=args.eval_images, batch_size=512 if device.type == "cuda" else 128))
        emit(f"eval: {report['eval'][0]['images']} images embedded + 6,000 pairs 10-fold in "
             f"{report['eval'][0]['seconds']:.2f} s (MobileFaceNet, in-memory faces)")
    report["ratios"] = ratio_lines(report["steps"])
    for line in report["ratios"]:
        emit(line)
    emit(f"machine: {report['machine']}, torch {report['torch']}")
    return report


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="CPU-sized shapes (64×64, quarter width, batch 16)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--backbones", help="comma-separated subset (default: all of the shape)")
    parser.add_argument("--batch-size", type=int, help="override every backbone's batch")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode of the fast path")
    parser.add_argument("--max-workers", type=int, default=4, help="loader rows 0..N workers (-1: skip)")
    parser.add_argument("--loader-samples", type=int, default=512)
    parser.add_argument("--eval-images", type=int, default=12000)
    parser.add_argument("--skip-partial-fc", action="store_true")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--json", help="write every row here")
    args = parser.parse_args(argv)
    for method in args.methods.split(","):
        if method.strip() and method.strip() not in METHODS:
            raise ValueError(f"--methods: unknown method {method.strip()!r}; expected some of {METHODS}")
    for path in args.paths.split(","):
        if path.strip() and path.strip() not in PATHS:
            raise ValueError(f"--paths: unknown path {path.strip()!r}; expected some of {PATHS}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device here (use --device cpu --small)")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    report = run(args, emit=lambda line: print(line, flush=True))
    if args.json:
        from utils.checkpoint import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
