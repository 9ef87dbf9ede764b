"""The one Trainer: data, AMP, torchrun DDP, clipping, schedules, full-state checkpoints, resume, logging, eval.

Training modes only define ``compute_loss(batch)``; nothing here branches on a head's or a method's name.
"""
from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from backbone import build_backbone
from data_processor.device_decode import decode_batch
from data_processor.preprocess import PreprocessSpec
from head import build_head
from training_mode import TRAINING_MODES
from training_mode.schedule import build_optimizer, build_scheduler
from utils.checkpoint import (CHECKPOINT_FORMAT_VERSION, atomic_torch_save, atomic_write_text, export_backbone,
                              find_latest_checkpoint, load_backbone_weights, load_checkpoint)
from utils.config import dump_config
from utils.distributed import (DistInfo, all_gather_object, all_reduce_mean, barrier, cleanup, init_distributed,
                               shard_range)
from utils.progress import progress
from utils.registry import ConfigError
from utils.seed import capture_rng_state, gather_rng_states, restore_rank_rng_state, restore_rng_state, seed_everything

logger = logging.getLogger(__name__)
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
BN_CALIBRATION_BATCHES = 100  # init_head: class_means first sets new BatchNorm layers' statistics on clean images


def resolve_device(name: str, dist_info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("runtime.device=cuda but CUDA is not available; use runtime.device=cpu or auto")
        return torch.device("cuda", dist_info.local_rank)
    return torch.device(name)


class ResumableSampler(Sampler[Tuple[int, int]]):
    """Shuffles per (seed, epoch) across ranks (like DistributedSampler) and can start mid-epoch on resume. Yields
    ``(epoch, index)``: with persistent loader workers (``EpochIndexed``) the epoch reaches each worker's copy of the
    dataset through the indices, since ``set_epoch`` in the main process does not."""

    def __init__(self, dataset: Any, dist_info: DistInfo, seed: int, batch_size: int) -> None:
        self.inner = DistributedSampler(dataset, num_replicas=dist_info.world_size, rank=dist_info.rank,
                                        shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.skip_batches = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip_batches = skip_batches

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        indices = list(self.inner)[self.skip_batches * self.batch_size:]
        return iter([(self.inner.epoch, index) for index in indices])

    def __len__(self) -> int:
        return len(self.inner) - self.skip_batches * self.batch_size


class Trainer:
    """Builds everything from a resolved config and runs ``fit()``."""

    def __init__(self, cfg: Dict[str, Any], work_dir: str | Path, resume: Optional[str] = None) -> None:
        from data_processor.train_dataset import (build_train_dataset, pinned_occlusion_config, resolved_occlusion,
                                                  trained_families)

        self.occlusion = resolved_occlusion(cfg["data"])  # switch defaults filled in; recorded with trained_families
        if self.occlusion is not None:  # pinned: a later switch edit cannot change a rerun
            cfg = {**cfg, "data": {**cfg["data"], "occlusion": pinned_occlusion_config(self.occlusion)}}
        self.cfg = cfg
        runtime = cfg.get("runtime", {})
        self.run_dir = Path(work_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.val_interval, self.val_protocols, self.val_select = validation_config(cfg.get("eval") or {})
        self.dist = init_distributed("cuda" if runtime.get("device", "auto") != "cpu" and torch.cuda.is_available()
                                     else "cpu")
        self.device = resolve_device(runtime.get("device", "auto"), self.dist)
        self.seed = int(runtime.get("seed", 0))
        seed_everything(self.seed + self.dist.rank)

        data_cfg = cfg["data"]
        self.dataset = build_train_dataset(data_cfg)
        self.trained_families: List[str] = trained_families(data_cfg.get("occlusion"))  # results/meta/checkpoints
        self.num_class = int(self.dataset.num_classes)
        self.spec = PreprocessSpec.from_dict(data_cfg.get("preprocess"))
        self.batch_size = int(data_cfg.get("batch_size", 64))
        if len(self.dataset) < self.batch_size * self.dist.world_size:
            raise ValueError(f"data: {len(self.dataset)} images are fewer than one global batch "
                             f"({self.batch_size} × {self.dist.world_size}); lower data.batch_size")
        self.sampler = ResumableSampler(self.dataset, self.dist, self.seed, self.batch_size)
        self.num_workers = int(data_cfg.get("num_workers", 2))
        self.loader: Optional[DataLoader] = None  # built on first use (_loader)

        backbone = build_backbone(cfg["backbone"])
        head = build_head(cfg["head"], feat_dim=backbone.feat_dim, num_class=self.num_class)
        teacher = None
        if cfg.get("teacher"):
            from training_mode.teacher import build_teacher
            teacher = build_teacher(cfg["teacher"], self.device)
        self.module = TRAINING_MODES.build(cfg["training_mode"], where="training_mode", backbone=backbone,
                                           head=head, preprocess_spec=self.spec, teacher=teacher).to(self.device)
        if runtime.get("init_weights"):
            self._init_weights(runtime["init_weights"])
        self.frozen_bn = self._frozen_batchnorms(runtime.get("freeze_bn_stats", False))
        init_head = runtime.get("init_head", "random")
        if init_head not in ("random", "class_means"):
            raise ValueError(f"runtime.init_head must be random or class_means, got {init_head!r}")
        channels_last = runtime.get("channels_last", "auto")
        if channels_last not in ("auto", True, False):
            raise ConfigError(f"runtime.channels_last: expected auto, true or false, got {channels_last!r}")
        self.channels_last = self.device.type == "cuda" if channels_last == "auto" else channels_last
        if self.channels_last:
            self.module.to(memory_format=torch.channels_last)
            self.module.channels_last = True
        trainable = [m for name, m in self.module.named_children() if name != "teacher"]
        optim_cfg = dict(cfg["optim"])
        self.accumulation = accumulation_steps(optim_cfg.pop("accumulation_steps", 1))
        self.steps_per_epoch = (len(self.sampler.inner) // self.batch_size) // self.accumulation  # optimiser steps
        if self.steps_per_epoch < 1:
            raise ValueError(f"optim.accumulation_steps={self.accumulation}: an epoch has fewer than that many "
                             f"batches of {self.batch_size}")
        optim_cfg = scaled_lr_config(optim_cfg, self.batch_size * self.dist.world_size * self.accumulation)
        if self.device.type == "cuda" and "fused" not in optim_cfg and "foreach" not in optim_cfg:
            optim_cfg["fused"] = True  # fast path: one fused kernel per step (optim.fused: false switches it off)
        self.grad_clip = optim_cfg.get("grad_clip")
        self.optimizer = build_optimizer(optim_cfg, trainable)
        self.epochs = int(cfg["schedule"]["epochs"])
        self.scheduler = build_scheduler(self.optimizer, cfg["schedule"], self.steps_per_epoch)

        amp = runtime.get("amp", "none")
        if amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"runtime.amp must be none, bf16 or fp16, got {amp!r}")
        if self.device.type == "cpu" and amp != "none":
            logger.info("runtime.amp=%s ignored on CPU: training in fp32", amp)
            amp = "none"
        self.amp_dtype = AMP_DTYPES.get(amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=(amp == "fp16"))

        if runtime.get("sync_bn", False):
            if not self.dist.enabled or self.device.type != "cuda":
                raise ConfigError("runtime.sync_bn: SyncBatchNorm needs several CUDA ranks (torchrun on GPUs); set it "
                                  "false on the CPU or with one process")
            self.module = nn.SyncBatchNorm.convert_sync_batchnorm(self.module)
            logger.info("runtime.sync_bn: BatchNorm statistics over the global batch (SyncBatchNorm)")
        self.train_module: nn.Module = self.module
        self.model_parallel = model_parallel_parameters(self.module)  # Partial FC's class-centre shards
        if self.dist.enabled:
            if self.model_parallel:  # each rank owns its shard: DDP must not average their gradients
                DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                    self.module, [name for name, _, _ in self.model_parallel])
            self.train_module = DistributedDataParallel(
                self.module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False, find_unused_parameters=bool(runtime.get("find_unused_parameters", False)))
        self.compile_mode = compile_setting(runtime, self.device)
        self.compiled = self.compile_mode is not None
        if self.compiled:
            self.train_module = torch.compile(self.train_module, mode=self.compile_mode)

        self.log_interval = int(runtime.get("log_interval", 20))
        self.checkpoint_interval = int(runtime.get("checkpoint_interval_steps", 0))
        self.max_steps = runtime.get("max_steps")  # for smoke tests / benchmarks: stop after this many steps
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.writer = None
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, self.run_dir / "config.yaml")
        if resume:
            self._resume(resume)
        if init_head == "class_means" and self.global_step == 0:
            self._calibrate_new_batchnorms(runtime.get("init_weights"))
            self._imprint_head()
        logger.info("data: %d images, %d classes, landmarks from %s; %d steps/epoch × %d epochs; batch %d × %d ranks",
                    len(self.dataset), self.num_class, getattr(self.dataset, "landmark_source", "n/a"),
                    self.steps_per_epoch, self.epochs, self.batch_size, self.dist.world_size)
        logger.info("model: %s + %s via %s on %s (amp %s, channels_last %s, compile %s), %.2fM trainable parameters",
                    cfg["backbone"]["type"], cfg["head"]["type"], cfg["training_mode"]["type"], self.device,
                    amp, self.channels_last, self.compile_mode or "off",
                    sum(p.numel() for m in trainable for p in m.parameters() if p.requires_grad) / 1e6)
        if self.val_interval:
            logger.info("validation: every %d steps on %s (val sets only) → %s; checkpoint rule: %s",
                        self.val_interval, ", ".join(protocol_label(p) for p in self.val_protocols),
                        self.run_dir / "val_history.json", self.checkpoint_rule())

    def _submodule(self, path: str, key: str) -> nn.Module:
        """``self.module``'s sub-module at dotted ``path`` (e.g. ``backbone.trunk``); ``key`` names the config key."""
        target: nn.Module = self.module
        for name in path.split("."):
            if not hasattr(target, name):
                raise ValueError(f"{key}: {type(target).__name__} has no sub-module '{name}' (path {path!r})")
            target = getattr(target, name)
        return target

    def _frozen_batchnorms(self, setting: Any) -> List[nn.Module]:
        """``runtime.freeze_bn_stats``: ``false``, ``true`` (every BatchNorm of the model) or a sub-module path such as
        ``backbone.trunk`` (only the pretrained part's; new layers, e.g. GFRO's branches, keep learning theirs)."""
        if setting is False or setting is None:
            return []
        if setting is not True and not isinstance(setting, str):
            raise ValueError(f"runtime.freeze_bn_stats must be true, false or a sub-module path, got {setting!r}")
        root = self.module if setting is True else self._submodule(setting, "runtime.freeze_bn_stats")
        return [m for m in root.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def _init_weights(self, cfg: Dict[str, Any]) -> None:
        """``runtime.init_weights: {weights: PATH | released name | export dir, module: backbone[.trunk]}``:
        start from pretrained weights (strictly loaded into that sub-module; a resume overrides them)."""
        from training_mode.teacher import load_teacher_model

        unknown = set(cfg) - {"weights", "module"}
        if unknown or "weights" not in cfg:
            raise ValueError(f"runtime.init_weights: expected keys 'weights' and optional 'module', got {sorted(cfg)}")
        target = self._submodule(str(cfg.get("module", "backbone")), "runtime.init_weights.module")
        loaded = load_teacher_model(str(cfg["weights"]), None)
        if loaded is None:
            raise FileNotFoundError(f"runtime.init_weights.weights: {cfg['weights']} not found")
        model, _, source = loaded
        if hasattr(target, "load_pretrained"):  # e.g. FaceT: an MAE run's encoder keys; prompts and readout fresh
            target.load_pretrained(model.state_dict(), source=source)
        else:
            load_backbone_weights(target, model.state_dict(), source=source)
        logger.info("initialised %s from %s", cfg.get("module", "backbone"), source)

    @torch.no_grad()
    def _calibrate_new_batchnorms(self, init_weights: Optional[Dict[str, Any]]) -> None:
        """Before ``init_head: class_means``: the backbone's new BatchNorm layers (neither loaded by
        ``runtime.init_weights`` nor frozen by ``runtime.freeze_bn_stats``, e.g. GFRO's region branches) get running
        statistics averaged over shuffled batches of clean training images (at most ``BN_CALIBRATION_BATCHES``;
        noisy views unused) instead of their initial 0/1, so the eval-mode embedding the head is imprinted with is
        the one the first training steps compute with batch statistics."""
        backbone = self.module.backbone
        loaded = set()
        if init_weights:
            loaded = set(self._submodule(str(init_weights.get("module", "backbone")), "runtime.init_weights.module")
                         .modules())
        skip = loaded | set(self.frozen_bn)
        new = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               and m.track_running_stats and m not in skip]
        if not new:
            return
        sampler = DistributedSampler(self.dataset, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                     shuffle=True, seed=self.seed, drop_last=True)
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                            drop_last=True, generator=torch.Generator().manual_seed(self.seed),  # no global RNG
                            collate_fn=self.collate_fn)
        was_training, momenta = backbone.training, [m.momentum for m in new]
        backbone.eval()
        for module in new:  # only these in train mode; momentum None = the average over all batches
            module.reset_running_stats()
            module.momentum = None
            module.train()
        batches = min(len(loader), BN_CALIBRATION_BATCHES)
        for index, batch in enumerate(progress(loader, desc="init_head: BN statistics", unit="batch", total=batches,
                                               disable=not self.dist.is_main)):
            if index >= batches:
                break
            backbone(self.module.inputs(self._to_device(batch)["image"]))
        for module, momentum in zip(new, momenta):
            module.momentum = momentum
            if self.dist.enabled:
                for buffer in (module.running_mean, module.running_var):
                    torch.distributed.all_reduce(buffer)
                    buffer.div_(self.dist.world_size)
        backbone.train(was_training)
        logger.info("init_head: running statistics of %d new BatchNorm layers from %d batches of clean images",
                    len(new), batches)

    @torch.no_grad()
    def _imprint_head(self) -> None:
        """``runtime.init_head: class_means``: set each class weight of the head to the mean L2-normalised embedding
        of that class's clean training images under the (pretrained) backbone in eval mode (weight imprinting), so
        fine-tuning starts with a head that already fits the backbone instead of a random one. Ranks embed their
        shard of the data and the sums are all-reduced."""
        head, backbone = self.module.head, self.module.backbone
        weight = getattr(head, "weight", None)  # Partial FC: this rank's rows of the class centres
        start, stop, _ = getattr(weight, "model_parallel_rows", (0, self.num_class, self.num_class))
        if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (stop - start, backbone.feat_dim):
            raise ValueError(f"runtime.init_head=class_means needs a head with a [num_class, feat_dim] 'weight'; "
                             f"{type(head).__name__} has {tuple(getattr(weight, 'shape', ()))}")
        sampler = DistributedSampler(self.dataset, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                     shuffle=False, drop_last=False)
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                            collate_fn=self.collate_fn)
        sums = torch.zeros(self.num_class, backbone.feat_dim, device=self.device)
        counts = torch.zeros(self.num_class, device=self.device)
        was_training = backbone.training
        backbone.eval()
        for batch in progress(loader, desc="init_head: class means", unit="batch", disable=not self.dist.is_main):
            labels = batch["label"].to(self.device)
            embeddings = backbone(self.module.inputs(self._to_device(batch)["image"])).float()
            sums.index_add_(0, labels, torch.nn.functional.normalize(embeddings, dim=1))
            counts.index_add_(0, labels, torch.ones_like(labels, dtype=counts.dtype))
        backbone.train(was_training)
        if self.dist.enabled:
            torch.distributed.all_reduce(sums)
            torch.distributed.all_reduce(counts)
        empty = int((counts == 0).sum())
        if empty:
            raise ValueError(f"runtime.init_head=class_means: {empty} classes have no training image")
        means = torch.nn.functional.normalize(sums / counts.unsqueeze(1), dim=1)
        weight.copy_(means[start:stop].to(weight.dtype))
        logger.info("init_head: %d class weights imprinted from the mean clean embeddings of %d images",
                    self.num_class, int(counts.sum()))

    def _set_train_mode(self) -> None:
        """Train mode, except the BatchNorm layers ``runtime.freeze_bn_stats`` names (they keep their running
        statistics; their affine parameters still learn)."""
        self.train_module.train()
        for module in self.frozen_bn:
            module.eval()

    # ------------------------------------------------------------------ checkpoints
    def _state(self, rng_states: List[Dict[str, Any]]) -> Dict[str, Any]:
        model_state = {k: v for k, v in self.module.state_dict().items() if not k.startswith("teacher.")}
        return {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "config": self.cfg,
            "trained_families": self.trained_families,
            "occlusion": self.occlusion,
            "num_class": self.num_class,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "model": model_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_states,  # one per rank, indexed by rank (utils.seed)
        }

    def save_checkpoint(self, name: str, all_ranks: bool = True) -> Optional[Path]:
        """Rank 0 writes ``name`` (and ``last.pt``) with every rank's RNG state: every rank must call this (the
        states are gathered), unless ``all_ranks=False`` (a rank saving on its own: only rank 0's state is kept)."""
        rng_states = gather_rng_states(self.dist) if all_ranks else [capture_rng_state()]
        full_shards = self._gather_model_parallel() if all_ranks else {}
        if not self.dist.is_main:
            return None
        path = self.checkpoint_dir / name
        state = self._state(rng_states)
        for key, tensor in full_shards.items():  # world-size-free: the full [num_class, D] tensors
            section, name_or_index, *field = key
            if section == "model":
                state["model"][name_or_index] = tensor
            else:  # a new dict: optimizer.state_dict() shares the live per-parameter state dicts
                slot_state = state["optimizer"]["state"]
                slot_state[name_or_index] = {**slot_state[name_or_index], field[0]: tensor}
        atomic_torch_save(state, path)
        if name != "last.pt":
            atomic_torch_save(state, self.checkpoint_dir / "last.pt")
        atomic_write_text(self.checkpoint_dir / "last_checkpoint", "last.pt\n")
        return path

    def _resume(self, resume: str) -> None:
        path = find_latest_checkpoint(self.checkpoint_dir) if resume == "auto" else Path(resume)
        if path is None:
            logger.info("--resume auto: no checkpoint in %s, starting from scratch", self.checkpoint_dir)
            return
        state = load_checkpoint(path, map_location=self.device)
        if state.get("num_class") != self.num_class:
            raise ValueError(f"{path}: checkpoint has {state.get('num_class')} classes, the data has {self.num_class}")
        self._shard_model_parallel(state)
        missing, unexpected = self.module.load_state_dict(state["model"], strict=False)
        missing = [k for k in missing if not k.startswith("teacher.")]
        if missing or unexpected:
            raise RuntimeError(f"{path}: model keys do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        restored, how = restore_rank_rng_state(state["rng"], self.dist.rank, self.seed)
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        (logger.info if restored else logger.warning)("resume: %s", how)
        logger.info("resumed from %s at epoch %d step %d (global step %d)", path, self.epoch + 1,
                    self.step_in_epoch, self.global_step)

    def _model_parallel_slots(self) -> List[Tuple[str, int, Tuple[int, int, int]]]:
        """(parameter name, its optimiser state index, (start, stop, total rows)) of every sharded parameter."""
        index = {id(p): i for i, p in enumerate(p for g in self.optimizer.param_groups for p in g["params"])}
        return [(name, index.get(id(param), -1), rows) for name, param, rows in self.model_parallel]

    def _gather_model_parallel(self) -> Dict[tuple, torch.Tensor]:
        """Every rank: the full tensors of the sharded parameters and of their optimiser state (rank 0 keeps them)."""
        if not self.model_parallel:
            return {}
        params = dict(self.module.named_parameters())
        full: Dict[tuple, torch.Tensor] = {}
        for name, slot, rows in self._model_parallel_slots():
            full[("model", name)] = gather_row_shards(params[name].detach(), rows, self.dist)
            for field, value in sorted(self.optimizer.state.get(params[name], {}).items()):
                if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == rows[1] - rows[0]:
                    full[("optimizer", slot, field)] = gather_row_shards(value, rows, self.dist)
        return full

    def _shard_model_parallel(self, state: Dict[str, Any]) -> None:
        """Resume: cut this rank's rows out of the checkpoint's full tensors (any saving world size)."""
        for name, slot, (start, stop, total) in self._model_parallel_slots():
            full = state["model"].get(name)
            if full is None:
                continue
            if full.shape[0] != total:
                raise ValueError(f"checkpoint: {name} has {full.shape[0]} rows, this run shards {total}")
            state["model"][name] = full[start:stop]
            for field, value in (state["optimizer"]["state"].get(slot) or {}).items():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == total:
                    state["optimizer"]["state"][slot][field] = value[start:stop]

    # ------------------------------------------------------------------ training
    def _loader(self) -> DataLoader:
        """The training loader, built once: its workers persist across epochs (``data.persistent_workers``, default
        on with workers); the sampler's ``(epoch, index)`` items carry the epoch to them."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch, self.step_in_epoch * self.accumulation)
        if self.loader is None:
            persistent = self.num_workers > 0 and bool(self.cfg["data"].get("persistent_workers", True))
            self.loader = DataLoader(EpochIndexed(self.dataset), batch_size=self.batch_size, sampler=self.sampler,
                                     num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                                     drop_last=True, generator=torch.Generator().manual_seed(self.seed * 1000),
                                     persistent_workers=persistent, collate_fn=self.collate_fn)
        return self.loader

    @property
    def collate_fn(self) -> Optional[Any]:
        """The dataset's own batching (``data.decode: device`` batches JPEG bytes), else the default."""
        return getattr(self.dataset, "collate_fn", None)

    def _to_device(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        """The batch's tensors on the device; JPEG bytes (``data.decode: device``) are decoded there."""
        if "jpeg" in batch:
            batch = decode_batch(batch, self.device)
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def train_step(self, batches: Dict[str, Any] | List[Dict[str, Any]]) -> Dict[str, Any]:
        """One optimiser step on a batch, or on a list of micro-batches (``optim.accumulation_steps``: each one's
        loss / N is back-propagated, DDP synchronises the gradients on the last one only). Returns the output with
        the loss and terms averaged over the micro-batches."""
        self._set_train_mode()
        batches = [batches] if isinstance(batches, dict) else list(batches)
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                    else nullcontext())
        self.optimizer.zero_grad(set_to_none=True)
        outs = []
        for index, batch in enumerate(batches):
            last = index == len(batches) - 1
            no_sync = self.train_module.no_sync if self.dist.enabled and not last else nullcontext
            with no_sync():
                with autocast:
                    out = self.train_module(batch)
                self._stop_if_not_finite(out["loss"], out["terms"])
                self.scaler.scale(out["loss"] / len(batches)).backward()
            outs.append(out)
        out = outs[-1] if len(outs) == 1 else {
            **outs[-1], "loss": torch.stack([o["loss"].detach() for o in outs]).mean(),
            "terms": {k: torch.stack([o["terms"][k] for o in outs]).mean() for k in outs[-1]["terms"]}}
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            grad_norm = clip_global_grad_norm([p for g in self.optimizer.param_groups for p in g["params"]],
                                              float(self.grad_clip), self.dist if self.model_parallel else None)
            out["stats"] = {**out.get("stats", {}), "grad_norm": grad_norm.detach(),  # before clipping
                            "grad_clipped": (grad_norm > float(self.grad_clip)).float()}
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        after_step = getattr(self.module, "after_optimizer_step", None)  # e.g. SST's momentum (gallery) update
        if after_step is not None:
            after_step()
        return out

    def _stop_if_not_finite(self, loss: torch.Tensor, terms: Dict[str, torch.Tensor]) -> None:
        """Every rank stops together when any rank's loss is not finite: the decision is all-reduced before
        backward (a rank raising alone would leave the others waiting in the gradient all-reduce until the NCCL
        timeout). Rank 0 writes a debug checkpoint; every rank raises the same error naming the ranks."""
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        if self.dist.enabled:
            flags = [torch.zeros_like(bad) for _ in range(self.dist.world_size)]
            torch.distributed.all_gather(flags, bad)
            bad_ranks = [rank for rank, flag in enumerate(flags) if float(flag) > 0]
        else:
            bad_ranks = [0] if float(bad) > 0 else []
        if not bad_ranks:
            return
        name = f"nan_step_{self.global_step:07d}.pt"
        self.save_checkpoint(name)  # every rank is here: the states are gathered, rank 0 writes
        path = self.checkpoint_dir / name
        values = {k: float(v) for k, v in terms.items()}
        where = f" on rank(s) {bad_ranks}" if self.dist.enabled else ""
        raise FloatingPointError(f"non-finite loss{where} at global step {self.global_step} (this rank: loss "
                                 f"{float(loss)}, terms {values}); state saved by rank 0 to {path}")

    def fit(self) -> Dict[str, Any]:
        if self.dist.is_main and self.writer is None:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        history: List[Dict[str, float]] = []
        total_steps = self.epochs * self.steps_per_epoch
        start_time = time.perf_counter()
        start_step = self.global_step
        first_step_seconds: Optional[float] = None
        stop = False
        while self.epoch < self.epochs and not stop:
            window = new_window()
            terms_sum: Dict[str, float] = {}
            tic = time.perf_counter()
            for batches in micro_batch_groups(self._loader(), self.accumulation):
                data_time = time.perf_counter() - tic
                out = self.train_step([self._to_device(batch) for batch in batches])
                if first_step_seconds is None:
                    first_step_seconds = time.perf_counter() - tic
                    if self.compiled:
                        logger.info("torch.compile: the first step took %.1f s (compilation included)",
                                    first_step_seconds)
                self.step_in_epoch += 1
                self.global_step += 1
                loss_value = float(all_reduce_mean(out["loss"].detach(), self.dist))
                history.append({"step": self.global_step, "loss": loss_value})
                window["loss"] += loss_value
                window["n"] += 1
                window["data"] += data_time
                window["images"] += self.batch_size * self.dist.world_size * self.accumulation
                for name, value in out["terms"].items():
                    terms_sum[name] = terms_sum.get(name, 0.0) + float(value)
                if "grad_norm" in out.get("stats", {}):
                    window["grad_norm"] += float(out["stats"]["grad_norm"])
                    window["clipped"] += float(out["stats"]["grad_clipped"])
                window["total"] += time.perf_counter() - tic
                if self.dist.is_main:
                    self._log_scalars(out, loss_value)
                if self.global_step % self.log_interval == 0 or self.step_in_epoch == self.steps_per_epoch:
                    self._log_line(window, terms_sum, start_time, start_step, total_steps)
                    window = new_window()
                    terms_sum = {}
                if self.checkpoint_interval and self.global_step % self.checkpoint_interval == 0:
                    self.save_checkpoint(f"step_{self.global_step:07d}.pt")
                if self.val_interval and self.global_step % self.val_interval == 0:
                    self.validate()
                if self.max_steps is not None and self.global_step >= int(self.max_steps):
                    stop = True
                    break
                tic = time.perf_counter()
            if not stop:
                self.epoch += 1
                self.step_in_epoch = 0
                self.save_checkpoint(f"epoch_{self.epoch:03d}.pt")
            else:
                self.save_checkpoint("last.pt")
        barrier(self.dist)
        if self.writer is not None:
            self.writer.flush()
        info = {"history": history, "seconds": time.perf_counter() - start_time,
                "first_step_seconds": first_step_seconds, "compiled": self.compiled,
                "trained_families": self.trained_families, "occlusion": self.occlusion}
        if self.val_interval:
            info["validation"] = self.validation_summary()
        return info

    def _log_scalars(self, out: Dict[str, Any], loss_value: float) -> None:
        if self.writer is None:
            return
        step = self.global_step
        self.writer.add_scalar("train/loss", loss_value, step)
        self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], step)
        for name, value in out["terms"].items():
            self.writer.add_scalar(f"train/{name}", float(value), step)
        for name, value in out.get("stats", {}).items():
            if torch.is_tensor(value) and value.numel() == 1 or isinstance(value, (int, float)):
                self.writer.add_scalar(f"stats/{name}", float(value), step)
        if self.scaler.is_enabled():
            self.writer.add_scalar("train/grad_scale", self.scaler.get_scale(), step)

    def _log_line(self, window: Dict[str, float], terms_sum: Dict[str, float], start_time: float,
                  start_step: int, total_steps: int) -> None:
        n = max(1, int(window["n"]))
        elapsed = time.perf_counter() - start_time
        done = self.global_step - start_step
        eta = elapsed / max(1, done) * (total_steps - self.global_step)
        terms = " ".join(f"{k} {v / n:.4f}" for k, v in terms_sum.items())
        img_per_s = window["images"] / max(window["total"], 1e-9)
        data_share = 100.0 * window["data"] / max(window["total"], 1e-9)
        clip = (f" | grad norm {window['grad_norm'] / n:.2f} (clipped {100.0 * window['clipped'] / n:.0f}%)"
                if self.grad_clip else "")
        logger.info("epoch %d/%d step %d/%d | loss %.4f (%s) | lr %.5f%s | %.1f img/s | data %.0f%% | eta %s",
                    self.epoch + 1, self.epochs, self.step_in_epoch, self.steps_per_epoch, window["loss"] / n, terms,
                    self.optimizer.param_groups[0]["lr"], clip, img_per_s, data_share, format_seconds(eta))
        if self.writer is not None:
            self.writer.add_scalar("speed/img_per_s", img_per_s, self.global_step)
            self.writer.add_scalar("speed/data_wait_percent", data_share, self.global_step)

    # ------------------------------------------------------------------ validation during training
    def checkpoint_rule(self) -> str:
        if not self.val_select:
            return "last (no eval.select)"
        return f"best {self.val_select['set']} {self.val_select['metric']} ({self.val_select['mode']}) → best.pt"

    def validate(self) -> None:
        """``eval.interval_steps``: rank 0 evaluates ``eval.val_protocols`` (val sets only, see
        ``validation_config``) in eval mode, logs ``val/<set>/accuracy`` and appends to ``<run>/val_history.json``;
        other ranks wait at a barrier. RNG states are restored afterwards (a validated run trains exactly like one
        without), then train mode. With ``eval.select``, a new best entry writes ``checkpoints/best.pt``."""
        is_best = False
        if self.dist.is_main:
            rng = capture_rng_state()
            try:
                rows = self._evaluate(self.val_protocols, checkpoint=f"step {self.global_step}")
            finally:
                restore_rng_state(rng)
                self._set_train_mode()
            path = self.run_dir / "val_history.json"
            entries = json.loads(path.read_text()) if path.is_file() else []
            entries = [e for e in entries if e["step"] < self.global_step]  # a resumed run replaces later entries
            entries.append({"step": self.global_step, "epoch": self.epoch + 1, "rows": rows})
            best = select_best(entries, self.val_select)
            is_best = best is not None and best["step"] == self.global_step
            atomic_write_text(path, json.dumps(entries, indent=2, default=float) + "\n")
            labels = row_labels(rows)
            parts = []
            for label, row in zip(labels, rows):
                if row.get("accuracy") is None:
                    parts.append(f"{label} {row.get('status', 'n/a')}")
                    continue
                parts.append(f"{label} acc {row['accuracy']:.2f}")
                if self.writer is not None:
                    self.writer.add_scalar(f"val/{label}/accuracy", float(row["accuracy"]), self.global_step)
            if best is not None:
                parts.append(f"best {best['value']:.4f} at step {best['step']}{' (new: best.pt)' if is_best else ''}")
            logger.info("validation at step %d | %s | checkpoint rule: %s", self.global_step, " | ".join(parts),
                        self.checkpoint_rule())
        barrier(self.dist)
        if all_gather_object(is_best, self.dist)[0]:
            rng_states = gather_rng_states(self.dist)
            if self.dist.is_main:
                atomic_torch_save(self._state(rng_states), self.checkpoint_dir / "best.pt")

    def validation_summary(self) -> Dict[str, Any]:
        """For results.json: the validation settings, the checkpoint rule and (with ``eval.select``) the best step."""
        path = self.run_dir / "val_history.json"
        entries = json.loads(path.read_text()) if self.dist.is_main and path.is_file() else []
        best = select_best(entries, self.val_select)
        if best is not None:
            best["checkpoint"] = str(self.checkpoint_dir / "best.pt")
        return {"interval_steps": self.val_interval, "sets": [protocol_label(p) for p in self.val_protocols],
                "history": str(path), "checkpoint_rule": "best" if self.val_select else "last",
                "select": self.val_select, "best": best}

    # ------------------------------------------------------------------ export + evaluation
    def model_meta(self) -> Dict[str, Any]:
        embedding_model = self.module.embedding_model()
        backbone_cfg = dict(self.cfg["backbone"])
        arch = backbone_cfg.pop("type")
        return {
            "arch": getattr(embedding_model, "export_arch", arch),  # e.g. OAML exports its descriptor twin
            "kwargs": backbone_cfg,
            "embedding_dim": int(embedding_model.feat_dim),
            "preprocess": self.spec.to_dict(),
            "template": self.spec.template,
            "num_train_classes": self.num_class,
            "training_mode": self.cfg["training_mode"]["type"],
            "trained_families": self.trained_families,
            "extra": {"occlusion": self.occlusion},  # resolved occlusion settings (switch defaults filled in)
            "source": "training run",
        }

    def export(self) -> Optional[Path]:
        if not self.dist.is_main:
            return None
        return export_backbone(self.module.embedding_model(), self.model_meta(), self.run_dir / "export")

    def evaluate(self) -> List[Dict[str, Any]]:
        protocols = self.cfg.get("eval", {}).get("protocols", [])
        if not protocols or not self.dist.is_main:
            return []
        return self._evaluate(protocols, checkpoint=str(self.checkpoint_dir / "last.pt"))

    def _evaluate(self, protocols: Sequence[Any], checkpoint: str) -> List[Dict[str, Any]]:
        """The embedding network on ``protocols`` (rows tagged against this run's trained families)."""
        from test_protocol.evaluate import evaluate_model
        return evaluate_model(self.module.embedding_model(), self.spec, protocols, self.device,
                              batch_size=int(self.cfg.get("eval", {}).get("batch_size", 128)),
                              checkpoint=checkpoint, trained_families=self.trained_families)

    def close(self) -> None:
        self.loader = None  # persistent workers exit with their iterator
        if self.writer is not None:
            self.writer.close()
        cleanup(self.dist)


class EpochIndexed(Dataset):
    """The training set addressed by ``(epoch, index)``: selects the epoch (``set_epoch``) in this process's copy
    before fetching, so persistent workers draw each epoch's random views."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.epoch: Optional[int] = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: Tuple[int, int]) -> Any:
        epoch, index = item
        if epoch != self.epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
            self.epoch = epoch
        return self.dataset[index]


def accumulation_steps(value: Any) -> int:
    """``optim.accumulation_steps``: micro-batches per optimiser step (a positive int)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"optim.accumulation_steps: expected a positive integer, got {value!r}")
    return value


def micro_batch_groups(loader: Any, size: int) -> Iterator[List[Dict[str, Any]]]:
    """Consecutive groups of ``size`` batches; an incomplete last group is dropped (the epoch's step count is
    floor(batches / size), as the scheduler was told)."""
    group: List[Dict[str, Any]] = []
    for batch in loader:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []


def scaled_lr_config(optim_cfg: Dict[str, Any], global_batch: int) -> Dict[str, Any]:
    """``optim.lr_scaling: {base_batch: 512}`` (linear rule, Goyal et al. 2017): ``lr`` is the rate for
    ``base_batch`` images per step and is multiplied by global_batch / base_batch (per-rank batch × ranks), so a
    config keeps its meaning on any GPU count; absent: ``lr`` is used as written. Returns the optimiser config
    without the key."""
    rule = optim_cfg.pop("lr_scaling", None)
    if rule is None:
        return optim_cfg
    if not isinstance(rule, dict) or set(rule) != {"base_batch"} or not isinstance(rule["base_batch"], int) \
            or rule["base_batch"] <= 0:
        raise ConfigError(f"optim.lr_scaling: expected {{base_batch: <positive int>}}, got {rule!r}")
    factor = global_batch / rule["base_batch"]
    logger.info("optim.lr_scaling: lr %g × %d / %d = %g (global batch / base batch)", optim_cfg["lr"], global_batch,
                rule["base_batch"], optim_cfg["lr"] * factor)
    return {**optim_cfg, "lr": float(optim_cfg["lr"]) * factor}


def model_parallel_parameters(module: nn.Module) -> List[Tuple[str, nn.Parameter, Tuple[int, int, int]]]:
    """(name, parameter, (start, stop, total rows)) of every parameter sharded across ranks (Partial FC marks its
    class centres with ``model_parallel_rows``)."""
    return [(name, param, tuple(param.model_parallel_rows)) for name, param in module.named_parameters()
            if hasattr(param, "model_parallel_rows")]


def gather_row_shards(shard: torch.Tensor, rows: Tuple[int, int, int], info: DistInfo) -> torch.Tensor:
    """The full ``[total, ...]`` tensor from every rank's ``[stop − start, ...]`` rows (a collective; shards may
    differ by one row, so they are padded to the largest)."""
    start, stop, total = rows
    if not info.enabled:
        return shard.detach().clone()
    largest = -(-total // info.world_size)
    padded = shard.new_zeros((largest,) + tuple(shard.shape[1:]))
    padded[:stop - start] = shard.detach()
    parts = [torch.empty_like(padded) for _ in range(info.world_size)]
    torch.distributed.all_gather(parts, padded)
    sizes = [stop - start for start, stop in (shard_range(total, rank, info.world_size)
                                              for rank in range(info.world_size))]
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def clip_global_grad_norm(params: List[nn.Parameter], max_norm: float, info: Optional[DistInfo]) -> torch.Tensor:
    """``clip_grad_norm_`` over the whole model; with sharded parameters (``info`` given) their squared norms are
    summed over ranks, so every rank clips replicated parameters by the same factor."""
    if info is None or not info.enabled:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    with_grad = [p for p in params if p.grad is not None]
    device = with_grad[0].grad.device if with_grad else torch.device("cpu")

    def squared_norm(chosen: List[nn.Parameter]) -> torch.Tensor:
        return sum((p.grad.detach().float().pow(2).sum() for p in chosen), torch.zeros((), device=device))

    sharded = squared_norm([p for p in with_grad if hasattr(p, "model_parallel_rows")])
    torch.distributed.all_reduce(sharded)
    total = (sharded + squared_norm([p for p in with_grad if not hasattr(p, "model_parallel_rows")])).sqrt()
    coefficient = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for param in with_grad:
        param.grad.mul_(coefficient.to(param.grad.dtype))
    return total


def protocol_label(cfg: Dict[str, Any]) -> str:
    """A val_protocols entry's name for logs: its data_conf set, its ``name``, or its file."""
    return str(cfg.get("set") or cfg.get("name") or cfg.get("bin_file") or cfg.get("pairs_file") or cfg.get("root"))


def validation_config(eval_cfg: Dict[str, Any]) -> tuple:
    """``(interval_steps, val_protocols, select)`` from the ``eval`` section, checked before anything is built.

    ``interval_steps`` 0 (default) = no validation. ``val_protocols`` entries have the format of ``eval.protocols``;
    validation during training uses val sets only, never test sets: an entry ``{set: NAME}`` must name a
    ``test_protocol/data_conf.yaml`` set whose ``split`` is ``val`` (the shipped ``*-BIN`` sets are test sets, so
    they are refused) and may not relabel it. An entry given directly, without ``set`` (e.g. an insightface ``.bin``
    as ``{name: MY-VAL, pairs_file: /data/val.bin, parser: bin, split: val}``), is accepted only with an explicit
    ``split: val`` key: the user's statement that it holds validation identities, since a file cannot say so itself.
    ``select: {set, metric: accuracy, mode: max|min, variant?}`` names the validation metric that picks
    ``checkpoints/best.pt``; without it the checkpoint rule stays "last".
    """
    from test_protocol.data_conf import load_data_conf

    interval = eval_cfg.get("interval_steps") or 0
    protocols = list(eval_cfg.get("val_protocols") or [])
    select = eval_cfg.get("select")
    if not isinstance(interval, int) or isinstance(interval, bool) or interval < 0:
        raise ConfigError(f"eval.interval_steps must be an integer >= 0, got {interval!r}")
    if interval and not protocols:
        raise ConfigError("eval.interval_steps > 0 needs eval.val_protocols (val sets, e.g. {set: SYNTH-VAL})")
    if select and not interval:
        raise ConfigError("eval.select needs eval.interval_steps > 0 and eval.val_protocols")
    if not interval:
        return 0, [], None
    names = []
    for position, entry in enumerate(protocols):
        where = f"eval.val_protocols[{position}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a protocol mapping such as {{set: SYNTH-VAL}}, got {entry!r}")
        if "set" in entry:
            split = load_data_conf(None, [entry["set"]])[0].get("split", "test")
            if split != "val" or entry.get("split", "val") != "val":
                raise ConfigError(f"{where}: validation during training uses val sets only; {entry['set']} is split "
                                  f"{split}" + ("" if split != "val" else " (an entry may not relabel it)"))
        elif entry.get("split") != "val":
            raise ConfigError(f"{where}: validation during training uses val sets only; {protocol_label(entry)} is "
                              f"given directly: add 'split: val' to state that it holds validation identities")
        names.append(protocol_label(entry))
    if select:
        if not isinstance(select, dict) or "set" not in select:
            raise ConfigError(f"eval.select: expected {{set, metric, mode}}, got {select!r}")
        unknown = set(select) - {"set", "metric", "mode", "variant"}
        if unknown:
            raise ConfigError(f"eval.select: unknown keys {sorted(unknown)}; expected set, metric, mode, variant")
        select = {"metric": "accuracy", "mode": "max", **select}
        if select["set"] not in names:
            raise ConfigError(f"eval.select.set: {select['set']} is not in eval.val_protocols ({', '.join(names)})")
        if select["mode"] not in ("max", "min"):
            raise ConfigError(f"eval.select.mode must be max or min, got {select['mode']!r}")
    return interval, protocols, select or None


def compile_setting(runtime: Dict[str, Any], device: torch.device) -> Optional[str]:
    """The torch.compile mode the Trainer compiles the training module with (``runtime.compile_mode``: default,
    reduce-overhead, max-autotune, ...), None = not compiled. ``runtime.compile`` auto (the default) = on CUDA only,
    where a graph dynamo cannot compile falls back to eager instead of failing the run; true = on any device,
    strict; false = off."""
    setting = runtime.get("compile", "auto")
    if setting not in ("auto", True, False):
        raise ConfigError(f"runtime.compile: expected auto, true or false, got {setting!r}")
    mode = runtime.get("compile_mode") or "default"
    if mode not in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
        raise ConfigError(f"runtime.compile_mode: expected default, reduce-overhead, max-autotune or "
                          f"max-autotune-no-cudagraphs, got {mode!r}")
    if setting == "auto":
        if device.type != "cuda":
            return None
        import torch._dynamo
        torch._dynamo.config.suppress_errors = True  # auto: an uncompilable graph runs eager, the run goes on
    return mode if setting else None


def row_labels(rows: List[Dict[str, Any]]) -> List[str]:
    """Each row's set name, with ``/<variant>`` where a set has several rows (``variant: both``)."""
    sets = [str(row.get("set")) for row in rows]
    return [f"{name}/{row.get('variant')}" if sets.count(name) > 1 else name for name, row in zip(sets, rows)]


def select_best(entries: List[Dict[str, Any]], select: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """``{"step", "epoch", "set", "metric", "value"}`` of the best ``val_history.json`` entry under ``select``
    (the first that reaches the best value), or None (no select, or no entry has the metric)."""
    if not select:
        return None
    best = None
    for entry in entries:
        for row in entry["rows"]:
            if row.get("set") != select["set"] or select.get("variant", row.get("variant")) != row.get("variant"):
                continue
            value = row.get(select["metric"])
            if value is None:
                continue
            better = best is None or (value > best["value"] if select["mode"] == "max" else value < best["value"])
            if better:
                best = {"step": entry["step"], "epoch": entry["epoch"], "set": select["set"],
                        "metric": select["metric"], "value": float(value)}
            break
    return best


def new_window() -> Dict[str, float]:
    """Accumulators of one log interval."""
    return {"loss": 0.0, "n": 0, "data": 0.0, "total": 0.0, "images": 0, "grad_norm": 0.0, "clipped": 0.0}


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def write_results(run_dir: Path, rows: List[Dict[str, Any]], fit_info: Dict[str, Any]) -> Path:
    """``<run_dir>/results.json``: evaluation rows plus the training summary, including ``trained_families`` (the
    occluder families the run trained on, from ``fit_info``; the rows' ``occluders`` tags are relative to it)."""
    history = fit_info.get("history", [])
    payload = {
        "rows": rows,
        "trained_families": fit_info.get("trained_families"),
        "occlusion": fit_info.get("occlusion"),
        "train_seconds": fit_info.get("seconds"),
        "steps": len(history),
        "first_loss": history[0]["loss"] if history else None,
        "last_loss": history[-1]["loss"] if history else None,
    }
    if fit_info.get("validation") is not None:  # eval.interval_steps: settings, checkpoint rule, best step
        payload["validation"] = fit_info["validation"]
    path = run_dir / "results.json"
    atomic_write_text(path, json.dumps(payload, indent=2, default=float) + "\n")
    return path
