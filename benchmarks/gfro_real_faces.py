"""GFRO on real faces: fine-tune the released MobileFaceNet (MS1M) on CelebA, before/after on seen and held-out LFW.

    python -m benchmarks.gfro_real_faces --shared ../shared --json out.json [--split test|val] [--sets A,B]
        [--pairs N] [--side both|one] [--max-steps N] [--set a.b=c ...]

Protocol (issue 12, "judge methods on occlusions they never trained on"):

1. data. ``--split test`` (default): aligned LFW (``$FACE_DATA_ROOT/lfw_aligned``, made with the face_sdk aligner
   when missing) and its occluded copies (``test_protocol.lfw.occluded_set_builder``, seed 0, ``--side`` both = every
   image of every pair occluded, or one = one image per pair), all from the official pairs file: LFW-MASK,
   LFW-SUNGLASSES, LFW-CROP (the earlier sets) and LFW-GLASSES, LFW-HAT, LFW-SCARF, LFW-HAND, LFW-OBJECT
   (``object_photo``), LFW-CROWD (``crowd``). ``--split val``: CelebA identities held out of fine-tuning (the last
   ``VAL_FRACTION`` of the sorted identity folders), with generated pairs in LFW View-2 format (``VAL_FOLDS`` folds,
   identity-disjoint, × (``VAL_PAIRS_PER_FOLD`` same + as many different), seed 0) and occluded copies built with the
   training family (CELEBA-VAL-CROP: partial views) and a validation-only proxy family that no test set uses
   (CELEBA-VAL-BLOCK: geometric ``block``) — never the held-out test families. The val split is the only place
   settings are chosen; the test split is read for the report. ``--sets`` restricts either (quick runs).
2. the untouched ``foamliu_mobilefacenet_ms1m`` (face_sdk: registered backbone + its own preprocessing) is evaluated
   on the split's sets (``PairVerification``, ``--variant``, default facexzoo: cosine, no flip, 10 folds). Its
   training occluders are unknown (release: unknown training occluders): its rows are the reference;
3. it is fine-tuned with the Trainer from ``configs/gfro/celeba_finetune_mobilefacenet.yaml`` (GFROTraining, the same
   release as the frozen teacher) on a training list of the CelebA identities *not* in the val split, and without
   ``LFW_OVERLAP_IDENTITIES`` (CelebA ``07398`` is LFW's Oxana_Fedorova, ../shared/DATA.md); the preset's occlusion
   is what it trains on (``data.occlusion.mode: partial``: the landmark-guided partial views; the former all-types
   training is ``--set data.occlusion.mode=mixed``, whose families make LFW-MASK / SUNGLASSES seen);
4. the exported fine-tuned backbone is evaluated on the same sets. Every set is tagged ``clean`` / ``seen`` /
   ``held_out`` against the fine-tuned model's trained families (``data_processor.occlusion.families``: the rows'
   ``seen_or_held_out`` of the set's manifest kinds, written into every row's ``occluders``);
   the table gives accuracy and TAR@FAR=1e-3 before / after / Δ per set, the seen and held-out means, and the
   issue's target: held-out occluded mean Δ ≥ +2 points, clean LFW Δ ≥ −0.3, clean TAR@1e-3 Δ ≥ −0.5, each
   printed met / MISSED (judged on all 6,000 test pairs only; exit 1 when missed there). A bar chart goes to
   ``<work-dir>/before_after.png``. One training seed (``runtime.seed``); the ± is the protocol's fold spread
   (s.e. over the 10 folds for facexzoo), not a seed spread.

Settings (``SETTINGS_CHOSEN_ON``, printed with the table): the partial-view fill (random), the 3 epochs, lr and loss
weights of the preset were chosen on LFW **test** figures (clean, mask, sunglasses, crop) in an earlier session,
before this val split existed, and are not re-tuned; the training occluder family is fixed by the issue's protocol.
Every run also validates on the CelebA val split after each epoch (``eval.interval_steps`` = one epoch,
``val_history.json``; the table is followed by the val curve), so the epoch count is checked where settings may be
chosen; a test run's checkpoint rule stays "last".

Reuse: the aligned folder, the val folder and the occluded sets are rebuilt unless their ``summary.json`` /
``manifest.json`` still match (settings, code, inputs and every file's checksum); the untouched release's rows are
cached beside ``--work-dir`` in ``untouched_<model>_<digest>.json``, keyed by ``utils.provenance`` (the evaluating
code's digest, the weights file's sha256, the device, torch, pairs, image checksums, variant, batch size;
``--no-cache`` ignores it). ``--pairs N`` scores the first N/20 positives and negatives of each fold (quick runs;
TAR@1e-3 needs ≥ 1,000 negative pairs, so quick runs show '-'); ``--max-steps`` caps training (smoke runs).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from benchmarks.lfw_released_models import ensure_aligned_lfw, machine, subset_pairs_file
from data_processor.occlusion.families import CLEAN, HELD_OUT, SEEN, families_of, seen_or_held_out
from test_protocol.data_conf import data_roots
from test_protocol.evaluate import build_protocols, run_protocols
from test_protocol.report import plot_accuracy_bars
from test_protocol.verification_metrics import spread_label
from utils.checkpoint import atomic_write_text
from utils.cli import run_cli
from utils.provenance import (checksums_digest, file_checksums, object_modules, provenance_record, record_digest,
                              sha256_file, verify_checksums)

MODEL = "foamliu_mobilefacenet_ms1m"
CONFIG = Path("configs/gfro/celeba_finetune_mobilefacenet.yaml")
# occluded LFW sets: name -> builder occlusion (folder <occluded-root>/<occlusion>); seen / held out is decided per
# run from the fine-tuned model's trained families, never hard-coded here
OCCLUDED_SETS = {"LFW-MASK": "mask", "LFW-SUNGLASSES": "sunglasses", "LFW-CROP": "crop",
                 "LFW-GLASSES": "eyeglasses", "LFW-HAT": "hat", "LFW-SCARF": "scarf", "LFW-HAND": "hand",
                 "LFW-OBJECT": "object_photo", "LFW-CROWD": "crowd"}
CLEAN_SET = {"test": "LFW", "val": "CELEBA-VAL"}
# the val split's occluded copies: the training family (partial views) and a validation-only proxy family that no
# test set uses (geometric); the held-out test families (accessories, objects) never appear here
VAL_OCCLUDED_SETS = {"CELEBA-VAL-CROP": "crop", "CELEBA-VAL-BLOCK": "block"}
VAL_FRACTION = 0.2              # the last 20 % of the sorted CelebA identity folders: never trained on
VAL_FOLDS, VAL_PAIRS_PER_FOLD = 10, 100   # 10 x (100 same + 100 different): 1,000 negatives resolve TAR@1e-3
VAL_SEED = 0
LFW_OVERLAP_IDENTITIES = ("07398",)  # CelebA identity that is LFW's Oxana_Fedorova (../shared/DATA.md): not trained on
OCCLUSION_SEED = 0
FULL_TEST_PAIRS = 6000
REUSE_KEYS = ("occlusion", "side", "seed", "fill", "params")  # a build from the full pairs serves any subset
# the code the untouched release's rows depend on (plus the modules of the model's own classes, found at run time)
EVALUATION_MODULES = ("benchmarks.gfro_real_faces", "test_protocol.*", "data_processor.preprocess",
                      "data_processor.image_io", "data_processor.occlusion.families", "face_sdk.released",
                      "face_sdk.model_meta", "face_sdk.weights", "face_sdk.restricted_pickle", "backbone.base")
TARGET_HELD_OUT_GAIN, TARGET_CLEAN_DROP, TARGET_CLEAN_TAR_DROP = 2.0, 0.3, 0.5   # issue 12, item 7
TAR_KEY = "tar@far=1e-3"
SETTINGS_CHOSEN_ON: Dict[str, str] = {
    "training occluders: partial views only (data.occlusion.mode: partial)":
        "issue 12's protocol (fixed, not tuned): the held-out families stay out of training",
    "CelebA val split (last 20 % of identities, 10 x (100 + 100) pairs, seed 0; proxy occluder block)":
        "fixed by construction before any run",
    "partial-view fill (random), lr 0.005, warmup, loss weights (kd 5.0, contrastive 1.0)":
        "chosen on LFW TEST figures (LFW, LFW-MASK, LFW-SUNGLASSES, LFW-CROP) in an earlier session, before the val "
        "split existed; not re-tuned since. The six sets added for the held-out families (GLASSES, HAT, SCARF, HAND, "
        "OBJECT, CROWD) chose nothing",
    "epochs (3; the checkpoint rule 'last')":
        "chosen with the settings above; checked on val during every run (the CelebA val curve printed under the "
        "table): a test figure never picks the epoch",
    "GFROEmbedding sizes (4 regions, 4 experts, global prior 3.0)":
        "chosen on LFW TEST figures in an earlier session (as above); not re-tuned",
}


# --- data ------------------------------------------------------------------------------------------------------------

def ensure_occluded_sets(source: Path, pairs_file: Path, out_root: Path, side: str, workers: int,
                         scored_pairs: Optional[Path] = None, sets: Optional[Mapping[str, str]] = None,
                         template: Optional[str] = None, keys: Optional[Sequence[str]] = REUSE_KEYS
                         ) -> Dict[str, Dict[str, Any]]:
    """``{set name: manifest}`` of ``out_root/<occlusion>`` for each set of ``sets`` (default: every occluded LFW
    set), each built from ``source`` and ``pairs_file`` (seed ``OCCLUSION_SEED``) unless a build with the same
    occlusion, side, seed, fill and code, verified against its manifest, made from the current images of ``source``
    and holding every image of ``scored_pairs`` (default: ``pairs_file``) is already there
    (``occluded_set_builder.reuse_problem``). ``template``: the faces are aligned to it (no landmark file)."""
    from test_protocol.lfw.occluded_set_builder import BuildConfig, build_occluded_set, read_pairs, reuse_problem

    needed = read_pairs(scored_pairs or pairs_file, "lfw", ".jpg").images
    manifests = {}
    for name, kind in (OCCLUDED_SETS if sets is None else sets).items():
        config = BuildConfig(source=str(source), pairs=str(pairs_file), occlusion=kind, side=side,
                             seed=OCCLUSION_SEED, template=template)
        out = out_root / kind
        problem = reuse_problem(out, config, needed, keys=keys)
        if problem is not None:
            print(f"building {name} ({kind}, side {side}) in {out} ({problem}) ...", flush=True)
            build_occluded_set(config, out, workers=workers, overwrite=True)
        manifests[name] = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    return manifests


def celeba_identities(images: Path) -> List[str]:
    """The sorted identity folders of the CelebA subset."""
    if not Path(images).is_dir():
        raise FileNotFoundError(f"CelebA images not found: {images}")
    identities = sorted(p.name for p in Path(images).iterdir() if p.is_dir())
    if not identities:
        raise FileNotFoundError(f"{images}: no identity folders")
    return identities


def celeba_split(images: Path, fraction: float = VAL_FRACTION) -> Tuple[List[str], List[str]]:
    """(training identities, val identities): val = the last ``fraction`` of the sorted identity folders
    (deterministic); training = the rest minus ``LFW_OVERLAP_IDENTITIES``. Disjoint by construction."""
    identities = celeba_identities(images)
    num_val = int(round(len(identities) * fraction))
    if not 0 < num_val < len(identities):
        raise ValueError(f"{images}: {len(identities)} identities cannot be split with val fraction {fraction}")
    cut = len(identities) - num_val
    train = [name for name in identities[:cut] if name not in LFW_OVERLAP_IDENTITIES]
    return train, identities[cut:]


def _image_files(folder: Path) -> List[str]:
    from data_processor.datasets import IMAGE_SUFFIXES

    return sorted(f.name for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)


def write_train_list(images: Path, identities: Sequence[str], out: Path) -> Path:
    """A FaceX-Zoo train list (``identity/file label``, labels = position in ``identities``) for ImageListDataset."""
    lines = [f"{identity}/{name} {label}\n" for label, identity in enumerate(identities)
             for name in _image_files(Path(images) / identity)]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "".join(lines))
    return out


def val_pairs(images: Path, identities: Sequence[str], folds: int = VAL_FOLDS, per_fold: int = VAL_PAIRS_PER_FOLD,
              seed: int = VAL_SEED) -> Tuple[List[str], Dict[str, str]]:
    """(pairs.txt lines in LFW View-2 format, ``{LFW-style relative path: CelebA relative path}``).

    Identities are dealt round-robin to ``folds`` identity-disjoint folds; fold ``f`` draws ``per_fold`` distinct
    same-identity pairs and ``per_fold`` distinct different-identity pairs uniformly with
    ``numpy.random.default_rng([seed, f])``. Image ``i`` (1-based, in sorted file order) of identity ``X`` is named
    ``X/X_%04d.jpg`` as LFW's parser expects."""
    files = {identity: _image_files(Path(images) / identity) for identity in identities}
    lines, used = [f"{folds}\t{per_fold}"], {}
    for fold in range(folds):
        members = list(identities[fold::folds])
        rng = np.random.default_rng([seed, fold])
        same = [(a, i, j) for a in members for i in range(len(files[a])) for j in range(i + 1, len(files[a]))]
        different = [(a, i, b, j) for x, a in enumerate(members) for b in members[x + 1:]
                     for i in range(len(files[a])) for j in range(len(files[b]))]
        if len(same) < per_fold or len(different) < per_fold:
            raise ValueError(f"val fold {fold}: identities {members} give {len(same)} same / {len(different)} "
                             f"different pairs, fewer than {per_fold}")
        chosen_same = [same[k] for k in sorted(rng.choice(len(same), per_fold, replace=False).tolist())]
        chosen_diff = [different[k] for k in sorted(rng.choice(len(different), per_fold, replace=False).tolist())]
        lines += [f"{a}\t{i + 1}\t{j + 1}" for a, i, j in chosen_same]
        lines += [f"{a}\t{i + 1}\t{b}\t{j + 1}" for a, i, b, j in chosen_diff]
        for identity, index in ([(a, i) for a, i, _ in chosen_same] + [(a, j) for a, _, j in chosen_same]
                                + [(a, i) for a, i, _, _ in chosen_diff] + [(b, j) for _, _, b, j in chosen_diff]):
            used[f"{identity}/{identity}_{index + 1:04d}.jpg"] = f"{identity}/{files[identity][index]}"
    return lines, dict(sorted(used.items()))


def ensure_val_set(images: Path, out: Path, folds: int = VAL_FOLDS, per_fold: int = VAL_PAIRS_PER_FOLD
                   ) -> Dict[str, Any]:
    """The clean CelebA val set in ``out`` (``images/`` in LFW layout, byte copies of the CelebA files,
    ``pairs.txt``, ``summary.json``), rebuilt unless ``summary.json`` records the same identities, pairs and
    source checksums and every file still matches it; returns the summary."""
    _, identities = celeba_split(images)
    lines, used = val_pairs(images, identities, folds, per_fold)
    pairs_text = "\n".join(lines) + "\n"
    sources = file_checksums(images, used.values())
    wanted = {"identities": list(identities), "folds": folds, "pairs_per_fold": per_fold, "seed": VAL_SEED,
              "pairs_sha256": hashlib.sha256(pairs_text.encode("utf-8")).hexdigest(),
              "source_sha256": checksums_digest(sources)}
    summary_path = out / "summary.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except ValueError:
            summary = {}
        if isinstance(summary.get("files"), dict) and all(summary.get(k) == v for k, v in wanted.items()) \
                and not verify_checksums(out, summary["files"]):
            return summary
    print(f"building the CelebA val set ({len(identities)} identities, {folds} x ({per_fold} + {per_fold}) pairs) "
          f"in {out} ...", flush=True)
    staging = out.with_name(out.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    for target, source in used.items():
        (staging / "images" / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(images) / source, staging / "images" / target)
    (staging / "pairs.txt").write_text(pairs_text, encoding="utf-8")
    (staging / "sources.txt").write_text("".join(f"{t} {s}\n" for t, s in used.items()), encoding="utf-8")
    files = file_checksums(staging)
    summary = {**wanted, "images": len(used), "files_sha256": checksums_digest(
        {name: digest for name, digest in files.items() if name.startswith("images/")}), "files": files}
    atomic_write_text(staging / "summary.json", json.dumps(summary, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return summary


def split_sets(split: str, wanted: Optional[Sequence[str]]) -> List[str]:
    """The split's set names (clean first), restricted to ``wanted`` (``--sets``; unknown names are an error)."""
    occluded = OCCLUDED_SETS if split == "test" else VAL_OCCLUDED_SETS
    names = [CLEAN_SET[split], *occluded]
    if not wanted:
        return names
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise ValueError(f"--sets: {', '.join(unknown)} not in the {split} split; choose from {', '.join(names)}")
    return [name for name in names if name in wanted]


# --- evaluation ----------------------------------------------------------------------------------------------------

def protocol_configs(roots: Mapping[str, Path], pairs_file: Path, variant: str, split: str = "test"
                     ) -> List[Dict[str, Any]]:
    """One ``PairVerification`` config per set, all scored on the same (official or subset) pairs file."""
    return [{"type": "PairVerification", "name": name, "root": str(root), "pairs_file": str(pairs_file),
             "parser": "lfw", "variant": variant, "split": split} for name, root in roots.items()]


def evaluate(model: torch.nn.Module, spec: Any, configs: Sequence[Mapping[str, Any]], device: str,
             batch_size: int, source: str, trained_families: Optional[Sequence[str]] = None
             ) -> Dict[str, Dict[str, Any]]:
    """``{set name: result row}`` from the toolbox's evaluation API (one extraction per set); rows are tagged
    against ``trained_families`` (None = unknown)."""
    start = time.perf_counter()
    rows = run_protocols(model.eval(), spec, build_protocols(configs), device, batch_size, checkpoint=source,
                         trained_families=trained_families)
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
    the device, torch, the pairs, the clean images (their checksums in ``summary.json``), the occluded sets' output
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


def fine_tune(config: Path, overrides: Sequence[str], work_dir: Path,
              validation: Sequence[Mapping[str, Any]] = (), train_images: int = 0) -> Dict[str, Any]:
    """Train with the Trainer from ``config`` + ``overrides``; returns the export folder, the fit summary, the
    occluder families the run trained on and, with ``validation`` (val-split protocol configs), the validation
    history: the Trainer evaluates them after every epoch (``eval.interval_steps`` = steps per epoch of
    ``train_images`` on one process; the checkpoint rule stays "last")."""
    from data_processor.train_dataset import trained_families
    from training_mode.trainer import Trainer
    from utils.config import load_config
    from utils.logging import setup_logging

    cfg = load_config(config, overrides)
    if validation and not cfg["eval"].get("val_protocols"):
        cfg["eval"].setdefault("interval_steps", 0)
        cfg["eval"]["interval_steps"] = (cfg["eval"]["interval_steps"]
                                         or max(1, train_images // int(cfg["data"]["batch_size"])))
        cfg["eval"]["val_protocols"] = [dict(entry) for entry in validation]
    families = trained_families(cfg["data"].get("occlusion"))
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
            "overrides": list(overrides), "images": len(trainer.dataset), "classes": trainer.num_class,
            "occlusion_mode": (cfg["data"].get("occlusion") or {}).get("mode"), "trained_families": families,
            "seed": int(cfg.get("runtime", {}).get("seed", 0)), "validation": val_history(work_dir)}


def val_history(work_dir: Path) -> List[Dict[str, Any]]:
    """``[{step, epoch, rows: {set: {accuracy, spread, tar}}}]`` from the run's ``val_history.json`` ([] without)."""
    path = work_dir / "val_history.json"
    entries = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    return [{"step": entry["step"], "epoch": entry["epoch"],
             "rows": {row["set"]: {"accuracy": row.get("accuracy"), "spread": row.get("spread"),
                                   "tar": row.get(TAR_KEY)} for row in entry["rows"]}} for entry in entries]


def format_validation(before: Mapping[str, Mapping[str, Any]], history: Sequence[Mapping[str, Any]]) -> str:
    """The val split during training: the untouched release, then the fine-tuned model after each epoch (accuracy
    per val set and their mean); names the epoch with the best mean (what val would pick for the epochs)."""
    sets = list(before)
    header = f"{'val (CelebA)':<19}" + "".join(f"{name:>18}" for name in sets) + f"{'mean':>8}"
    lines = [header, "-" * len(header)]

    def line(label: str, rows: Mapping[str, Mapping[str, Any]]) -> float:
        values = [rows[name]["accuracy"] for name in sets]
        cells = "".join(f"{rows[name]['accuracy']:>11.2f} ± {rows[name].get('spread') or 0:.2f}" for name in sets)
        lines.append(f"{label:<19}{cells}{sum(values) / len(values):>8.2f}")
        return sum(values) / len(values)

    line("untouched", before)
    means = [(line(f"epoch {entry['epoch']} (step {entry['step']})", entry["rows"]), entry) for entry in history]
    if means:
        best = max(means, key=lambda item: (round(item[0], 2), -item[1]["step"]))[1]
        lines.append(f"(accuracy %, ± = the protocol's fold spread; val identities are disjoint from training and "
                     f"from LFW; the best val mean is at epoch {best['epoch']} (step {best['step']}); the test rows "
                     f"are the last step's, {history[-1]['step']})")
    return "\n".join(lines)


def set_tags(kinds: Mapping[str, Optional[Sequence[str]]], trained: Optional[Sequence[str]]) -> Dict[str, str]:
    """``{set: clean | seen | held_out}`` from each set's occlusion kinds (its manifest's; None = clean) and the
    model's trained families (``seen_or_held_out``); ``unknown`` for an occluded set when ``trained`` is None (the
    release: unknown training occluders)."""
    return {name: (CLEAN if not families_of(set_kinds or []) else "unknown" if trained is None
                   else seen_or_held_out(set_kinds, trained)) for name, set_kinds in kinds.items()}


def tag_rows(rows: Mapping[str, Dict[str, Any]], kinds: Mapping[str, Optional[Sequence[str]]],
             trained: Optional[Sequence[str]], split: str) -> None:
    """Give every row ``split``, ``occluders`` and ``occluder_families`` from the manifests this benchmark built.

    The evaluation API tags rows from a manifest beside the set's pairs file; here every set is scored on the one
    official (or subset) pairs file, so that lookup finds none and would call an occluded set clean — the kinds
    are taken from the sets' manifests instead (the same rule, ``seen_or_held_out``)."""
    tags = set_tags(kinds, trained)
    for name, row in rows.items():
        row.update(split=split, occluders=tags[name], occluder_families=families_of(kinds[name] or []))


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    return None if not values or any(v is None for v in values) else round(sum(values) / len(values), 2)


def _delta(after: Optional[float], before: Optional[float]) -> Optional[float]:
    return None if after is None or before is None else round(after - before, 2)


def comparison(before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]],
               tags: Optional[Mapping[str, str]] = None) -> Dict[str, Dict[str, Any]]:
    """Per set (tagged by ``tags``; default: the first set clean, the others seen): accuracy and TAR@FAR=1e-3
    before / after / Δ; then the ``seen mean`` and ``held-out mean`` over the occluded sets of each tag (TAR means
    None when a set cannot resolve it)."""
    sets = list(before)
    tags = tags or {name: CLEAN if i == 0 else SEEN for i, name in enumerate(sets)}
    table: Dict[str, Dict[str, Any]] = {}
    for name in sets:
        b, a = before[name], after[name]
        table[name] = {"occluders": tags[name], "untouched": round(b["accuracy"], 2),
                       "fine_tuned": round(a["accuracy"], 2), "delta": round(a["accuracy"] - b["accuracy"], 2),
                       "tar_untouched": b.get(TAR_KEY), "tar_fine_tuned": a.get(TAR_KEY),
                       "tar_delta": _delta(a.get(TAR_KEY), b.get(TAR_KEY))}
    for tag, label in ((SEEN, "seen mean"), (HELD_OUT, "held-out mean")):
        members = [name for name in sets if tags[name] == tag]
        if not members:
            continue
        row = {"occluders": tag, "sets": members,
               "untouched": _mean([before[n]["accuracy"] for n in members]),
               "fine_tuned": _mean([after[n]["accuracy"] for n in members]),
               "tar_untouched": _mean([before[n].get(TAR_KEY) for n in members]),
               "tar_fine_tuned": _mean([after[n].get(TAR_KEY) for n in members])}
        row["delta"] = _delta(row["fine_tuned"], row["untouched"])
        row["tar_delta"] = _delta(row["tar_fine_tuned"], row["tar_untouched"])
        table[label] = row
    return table


def target_check(table: Mapping[str, Mapping[str, Any]], clean: str) -> Dict[str, Any]:
    """The issue's target on ``table``: each criterion met (True), missed (False) or not measurable (None, e.g. no
    held-out set, or too few negatives for TAR@1e-3); the verdict is MISSED when any is missed, met when all are
    met, incomplete otherwise."""
    held_out, clean_row = table.get("held-out mean"), table.get(clean)
    criteria = [("held-out occluded mean Δ acc", f"≥ +{TARGET_HELD_OUT_GAIN:.1f}",
                 held_out and held_out["delta"], TARGET_HELD_OUT_GAIN),
                (f"clean {clean} Δ acc", f"≥ −{TARGET_CLEAN_DROP:.1f}", clean_row and clean_row["delta"],
                 -TARGET_CLEAN_DROP),
                (f"clean {clean} Δ TAR@1e-3", f"≥ −{TARGET_CLEAN_TAR_DROP:.1f}", clean_row and clean_row["tar_delta"],
                 -TARGET_CLEAN_TAR_DROP)]
    results = [{"criterion": name, "threshold": text, "value": value,
                "met": None if value is None else bool(value >= bound - 1e-9)}
               for name, text, value, bound in criteria]
    flags = [r["met"] for r in results]
    verdict = "MISSED" if False in flags else "met" if all(flags) else "incomplete"
    return {"criteria": results, "verdict": verdict}


def _num(value: Optional[float], fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def format_comparison(table: Mapping[str, Mapping[str, Any]], before: Mapping[str, Mapping[str, Any]],
                      after: Mapping[str, Mapping[str, Any]], seeds: int = 1) -> str:
    """The before/after table (accuracy ± fold spread, TAR@FAR=1e-3, Δ, occluder tag per set)."""
    kinds = sorted({rows[name].get("spread_kind", "?") for rows in (before, after) for name in rows})
    folds = sorted({rows[name].get("num_folds", 10) for rows in (before, after) for name in rows})
    header = (f"{'set':<17} {'occluders':<9} {'acc before':>15} {'acc after':>15} {'Δ acc':>7}  "
              f"{'TAR before':>10} {'TAR after':>9} {'Δ TAR':>7}")
    lines = [header, "-" * len(header)]
    for name, row in table.items():
        def spread(rows: Mapping[str, Mapping[str, Any]]) -> str:
            return f" ± {rows[name]['spread']:.2f}" if name in rows and "spread" in rows[name] else ""

        label = name if name in before else f"{name} ({len(row['sets'])})"
        lines.append(f"{label:<17} {row['occluders']:<9} {_num(row['untouched']) + spread(before):>15} "
                     f"{_num(row['fine_tuned']) + spread(after):>15} {_num(row['delta'], '{:+.2f}'):>7}  "
                     f"{_num(row['tar_untouched']):>10} {_num(row['tar_fine_tuned']):>9} "
                     f"{_num(row['tar_delta'], '{:+.2f}'):>7}")
    spread_text = " / ".join(f"{spread_label(kind)} ({kind_variant(kind)}, {'/'.join(map(str, folds))} folds)"
                             for kind in kinds)
    lines.append(f"(accuracy %, ± = {spread_text}: the protocol's fold spread; {seeds} training seed"
                 f"{'s' if seeds != 1 else ''}, no seed spread. TAR = TAR@FAR=1e-3 %, '-' where the pairs hold "
                 f"fewer than 1,000 negatives. occluders: the fine-tuned model's trained families; release: unknown "
                 f"training occluders, its rows are the reference)")
    return "\n".join(lines)


def kind_variant(kind: str) -> str:
    """The protocol variant that reports a spread kind (sem: facexzoo, std: insightface)."""
    return {"sem": "facexzoo", "std": "insightface"}.get(kind, kind)


def format_target(check: Mapping[str, Any], judged: bool, pairs: int, split: str) -> str:
    """One line: each criterion met / MISSED / n/a and the verdict, with whether it is judged."""
    parts = [f"{c['criterion']} {c['threshold']}: "
             + ("n/a" if c["met"] is None else f"{'met' if c['met'] else 'MISSED'} ({c['value']:+.2f})")
             for c in check["criteria"]]
    scope = ("judged on all 6,000 LFW pairs" if judged else
             f"{split} split: where settings are chosen, not the test verdict" if split != "test" else
             f"not judged: {pairs} of the 6,000 pairs scored (--pairs) or a --sets subset")
    return f"target (issue 12): {'; '.join(parts)} -> {check['verdict']} [{scope}]"


# --- command line --------------------------------------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gfro_real_faces", description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"), help="the shared data folder")
    parser.add_argument("--json", type=Path, help="write the before/after rows, timings and settings here")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="test: LFW + occluded LFW (seen and held-out); val: CelebA identities held out of "
                             "fine-tuning, where settings are chosen (default: %(default)s)")
    parser.add_argument("--sets", type=lambda text: [s.strip() for s in text.split(",") if s.strip()],
                        help="comma-separated subset of the split's sets (quick runs), e.g. LFW,LFW-CROP,LFW-OBJECT")
    parser.add_argument("--pairs", type=int, help="pairs to score (default: all: 6,000 on test, 2,000 on val)")
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
    parser.add_argument("--val-root", type=Path,
                        help="CelebA val sets (default: $FACE_DATA_ROOT/celeba_val, or celeba_val_side_one)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128, help="evaluation batch size")
    parser.add_argument("--workers", type=int, default=2, help="alignment / occlusion processes")
    parser.add_argument("--no-cache", action="store_true",
                        help="evaluate the untouched release again even if an identical evaluation (same evaluating "
                             "code, weights sha256, device, pairs, images, variant, torch) is stored in the folder "
                             "of --work-dir")
    return parser.parse_args(argv)


def prepare_test(args: argparse.Namespace, names: Sequence[str], tmp: Path, face_data_root: Path
                 ) -> Tuple[Path, Dict[str, Path], Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """(scored pairs file, {set: images root}, clean summary, {occluded set: manifest}) of the LFW test split."""
    official_pairs = args.shared / "data" / "lfw" / "pairs.txt"
    aligned = args.aligned or face_data_root / "lfw_aligned"
    occluded_root = args.occluded_root or face_data_root / ("lfw_occluded" if args.side == "both"
                                                            else "lfw_occluded_side_one")
    pairs_file = official_pairs
    if args.pairs is not None and args.pairs != FULL_TEST_PAIRS:
        pairs_file = subset_pairs_file(official_pairs, args.pairs, tmp / "pairs.txt")
    alignment = ensure_aligned_lfw(args.shared / "data" / "lfw" / "images", aligned, args.workers, [pairs_file])
    occluded = {name: OCCLUDED_SETS[name] for name in names if name in OCCLUDED_SETS}
    manifests = ensure_occluded_sets(aligned, official_pairs, occluded_root, args.side, args.workers, pairs_file,
                                     sets=occluded)
    roots = {name: aligned if name == "LFW" else occluded_root / OCCLUDED_SETS[name] / "images" for name in names}
    return pairs_file, roots, alignment, manifests


def prepare_val(args: argparse.Namespace, names: Sequence[str], tmp: Path, face_data_root: Path, celeba: Path
                ) -> Tuple[Path, Dict[str, Path], Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """(scored pairs file, {set: images root}, clean summary, {occluded set: manifest}) of the CelebA val split."""
    val_root = args.val_root or face_data_root / ("celeba_val" if args.side == "both" else "celeba_val_side_one")
    summary = ensure_val_set(celeba, val_root / "clean")
    full_pairs = val_root / "clean" / "pairs.txt"
    pairs_file = full_pairs
    if args.pairs is not None and args.pairs != 2 * VAL_FOLDS * VAL_PAIRS_PER_FOLD:
        pairs_file = subset_pairs_file(full_pairs, args.pairs, tmp / "val_pairs.txt")
    occluded = {name: VAL_OCCLUDED_SETS[name] for name in names if name in VAL_OCCLUDED_SETS}
    manifests = ensure_occluded_sets(val_root / "clean", full_pairs, val_root, args.side, args.workers, pairs_file,
                                     sets=occluded, template="arcface_112x112", keys=None)
    roots = {name: val_root / "clean" / "images" if name == CLEAN_SET["val"]
             else val_root / VAL_OCCLUDED_SETS[name] / "images" for name in names}
    return pairs_file, roots, summary, manifests


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from face_sdk.released import load_released_recognizer, released_weights_path

    names = split_sets(args.split, args.sets)
    weights_dir = args.shared / "weights"
    os.environ.setdefault("FACE_SDK_WEIGHTS_DIR", str(weights_dir))  # init_weights / teacher resolve the release
    celeba = args.shared / "data" / "celeba_subset_112" / "images"
    face_data_root = data_roots()["FACE_DATA_ROOT"]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        prepare = prepare_test if args.split == "test" else prepare_val
        extra = () if args.split == "test" else (celeba,)
        pairs_file, roots, clean_summary, manifests = prepare(args, names, Path(tmp), face_data_root, *extra)
        if args.split == "val":
            val_configs = None
        else:   # the val split is also evaluated during training (after every epoch): never the test sets
            val_pairs_file, val_roots, _, _ = prepare_val(args, split_sets("val", None), Path(tmp), face_data_root,
                                                          celeba)
            val_configs = protocol_configs(val_roots, val_pairs_file, args.variant, "val")
        prepare_seconds = time.perf_counter() - start
        train_ids, val_ids = celeba_split(celeba)
        clean = CLEAN_SET[args.split]
        kinds = {name: (None if name == clean else manifests[name]["kinds"]) for name in names}
        configs = protocol_configs(roots, pairs_file, args.variant, args.split)
        val_configs = val_configs or configs
        model, meta = load_released_recognizer(MODEL, weights_dir)
        record = untouched_record(model, released_weights_path(MODEL, weights_dir), args.device, pairs_file,
                                  clean_summary, manifests, args.variant, args.batch_size)
        cache = args.work_dir.parent / f"untouched_{MODEL}_{record_digest(record)}.json"
        before = None if args.no_cache else cached_rows(cache, record)
        if before is not None:
            print(f"untouched {MODEL}: reusing the rows of an identical evaluation in {cache}", flush=True)
        else:
            before = evaluate(model, meta.preprocess, configs, args.device, args.batch_size, f"released {MODEL}",
                              trained_families=None)
            tag_rows(before, kinds, None, args.split)
            atomic_write_text(cache, json.dumps({"provenance": record, "rows": before}, indent=2, default=float)
                              + "\n")
        before_val = before if val_configs is configs else evaluate(
            model, meta.preprocess, val_configs, args.device, args.batch_size, f"released {MODEL}")
        train_list = write_train_list(celeba, train_ids, args.work_dir / "celeba_train_list.txt")
        train_data = {"type": "ImageListDataset", "root": str(celeba), "list_file": str(train_list),
                      "landmarks_file": None}
        overrides = [f"data.train={json.dumps(train_data)}", *args.overrides]
        if args.max_steps is not None:
            overrides.append(f"runtime.max_steps={args.max_steps}")
        training = fine_tune(args.config, overrides, args.work_dir, val_configs,
                             len(train_list.read_text(encoding="utf-8").splitlines()))
        training["identities"] = len(train_ids)
        from test_protocol.model_loading import load_export

        tuned = load_export(training["export"])
        trained = training["trained_families"]
        after = evaluate(tuned.model, tuned.spec, configs, args.device, args.batch_size, tuned.source,
                         trained_families=trained)

    tag_rows(after, kinds, trained, args.split)
    tags = set_tags(kinds, trained)
    table = comparison(before, after, tags)
    num_pairs = before[names[0]]["num_pairs"]
    check = target_check(table, clean)
    judged = args.split == "test" and num_pairs == FULL_TEST_PAIRS and list(names) == split_sets("test", None)
    figure = plot_accuracy_bars([{**row, "model": label} for label, rows in (("untouched release", before),
                                                                            ("GFRO fine-tuned", after))
                                 for row in rows.values()], args.work_dir / "before_after.png", group_key="model",
                                title=f"{MODEL} on {args.split} sets ({num_pairs} pairs, {args.variant})",
                                ylim=(50, 100))
    print(f"\nGFRO fine-tuning of {MODEL} on {training['images']} CelebA faces ({training['classes']} ids; "
          f"{len(val_ids)} val ids and {', '.join(LFW_OVERLAP_IDENTITIES)} (in LFW) left out), occlusion mode "
          f"{training['occlusion_mode']} (trained families: {', '.join(trained) or 'none'}), {training['steps']} "
          f"steps in {training['train_seconds']:.0f} s, seed {training['seed']} (1 seed); split {args.split}, "
          f"{num_pairs} pairs, variant {args.variant}, occluded side {args.side}")
    print("before = untouched release (release: unknown training occluders); after = GFRO fine-tuned; "
          "occluders column = the fine-tuned model's seen / held_out")
    print(format_comparison(table, before, after, seeds=1))
    if training["validation"]:
        print(format_validation(before_val, training["validation"]))
    print(format_target(check, judged, num_pairs, args.split))
    reading = "this run reads the test split: nothing is chosen on it" if args.split == "test" else "val split"
    print(f"settings and the split that chose them ({reading}):")
    for setting, origin in SETTINGS_CHOSEN_ON.items():
        print(f"  - {setting}: {origin}")
    print(f"figure: {figure}")
    verdict = check["verdict"] if judged else None
    if args.json:
        arguments = sys.argv[1:] if argv is None else list(argv)
        payload = {"command": "python -m benchmarks.gfro_real_faces " + " ".join(arguments),
                   "machine": machine(), "device": args.device, "model": MODEL, "split": args.split,
                   "sets": list(names), "pairs": num_pairs, "seeds": [training["seed"]],
                   "pairs_sha256": before[names[0]].get("pairs_sha256"), "variant": args.variant, "side": args.side,
                   "comparison": table, "tags": tags, "target": {**check, "judged": judged}, "bar": verdict,
                   "trained_families": trained, "release_trained_families": None,
                   "validation": {"untouched": {name: {"accuracy": row["accuracy"], "spread": row.get("spread"),
                                                       "tar": row.get(TAR_KEY)} for name, row in before_val.items()},
                                  "during_training": training["validation"]},
                   "settings_chosen_on": SETTINGS_CHOSEN_ON, "training": training,
                   "celeba_split": {"train_identities": train_ids, "val_identities": val_ids,
                                    "left_out_lfw_overlap": list(LFW_OVERLAP_IDENTITIES),
                                    "val_fraction": VAL_FRACTION},
                   "prepare_seconds": round(prepare_seconds, 1), "clean_set": clean_summary_brief(clean_summary),
                   "occluded_sets": {name: {"output_sha256": m.get("output_sha256"), "counts": m.get("counts"),
                                            "kinds": m.get("kinds"), "config": m.get("config")}
                                     for name, m in manifests.items()},
                   "config_sha256": sha256_file(args.config),
                   "untouched_provenance": record,
                   "rows_untouched": list(before.values()), "rows_fine_tuned": list(after.values())}
        atomic_write_text(args.json, json.dumps(payload, indent=2, default=float) + "\n")
    return 1 if verdict == "MISSED" else 0


def clean_summary_brief(summary: Mapping[str, Any]) -> Dict[str, Any]:
    """The clean set's summary without its per-file checksums."""
    return {key: value for key, value in summary.items() if key not in ("files", "identities")}


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
