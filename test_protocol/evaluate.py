"""Run protocols on a model: one extraction per image set, shared by every protocol (and variant) on that set.

``evaluate_model(model, spec, cfg["eval"]["protocols"], device)`` is what the Trainer calls after training;
``format_table(rows)`` prints the result rows as one aligned table. A protocol config is the keyword arguments of a
class in ``PROTOCOLS`` (``type`` defaults to ``PairVerification``), or ``set: NAME`` for a set of
``test_protocol/data_conf.yaml`` (other keys override it); ``variant: both`` expands to the two variants.
A set whose root or pairs file is absent gives a ``not available: <path> missing`` row; a set that exists but misses
an image raises.

Every row also says which data it is (``test_protocol.robustness.annotate_row``): ``split`` (test / val, from
data_conf's ``split``), ``occluders`` (clean / seen / held_out / unknown, against ``trained_families``: the
occluder families the evaluated model trained on, ``None`` = not known), ``occluder_families`` and, for sets with
per-image hidden fractions, ``hidden_fraction_bins``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from data_processor.preprocess import PreprocessSpec
from test_protocol import PROTOCOLS
from test_protocol.data_conf import set_config
from test_protocol.extract import extract_views
from test_protocol.protocol_base import SetNotAvailable
from test_protocol.robustness import annotate_row, set_occlusion_kinds

Row = Dict[str, Any]


def expand_variants(cfg: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """``set: NAME`` resolved from data_conf.yaml, ``type`` filled in, ``variant: both`` → one config per variant."""
    cfg = dict(cfg)
    if "set" in cfg:
        cfg = {**set_config(cfg.pop("set")), **cfg}
    cfg = {"type": "PairVerification", **cfg}
    if cfg.get("variant") == "both":
        return [{**cfg, "variant": variant} for variant in ("facexzoo", "insightface")]
    return [cfg]


def build_protocols(protocol_cfgs: Sequence[Mapping[str, Any]]) -> List[Union[Any, Row]]:
    """Protocol objects (each with ``split`` set from its config's ``split``, default ``test``), or a 'not
    available' row for each set whose data is absent."""
    built: List[Union[Any, Row]] = []
    for position, raw_cfg in enumerate(protocol_cfgs):
        for cfg in expand_variants(raw_cfg):
            split = cfg.pop("split", "test")
            try:
                protocol = PROTOCOLS.build(cfg, where=f"eval.protocols[{position}]")
                protocol.split = split
                built.append(protocol)
            except SetNotAvailable as missing:
                built.append({"set": missing.name, "variant": cfg.get("variant", "-"), "split": split,
                              "status": f"not available: {missing.missing} missing"})
    return built


def run_protocols(model: torch.nn.Module, spec: PreprocessSpec, protocols: Sequence[Union[Any, Row]],
                  device: Union[str, torch.device], batch_size: int = 128, checkpoint: str = "",
                  num_workers: int = 0, trained_families: Optional[Sequence[str]] = None) -> List[Row]:
    """Extract each distinct image set once (with the flip view if any protocol on it needs it), then compute;
    rows are tagged by ``annotate_row`` against ``trained_families`` (the model's; ``None`` = unknown)."""
    groups: Dict[Tuple[str, ...], List[Any]] = {}
    for protocol in protocols:
        if not isinstance(protocol, dict):
            protocol.pair_scorer = getattr(model, "pair_scorer", None)  # e.g. OAML: scores pairs of descriptors
            groups.setdefault(tuple(protocol.image_paths()), []).append(protocol)
    oracle = getattr(model, "flag_source", None) == "oracle" and hasattr(model, "set_oracle_flag")
    for members in groups.values():
        if oracle:  # FaceT's oracle flag: 1 on an occluded set (ours occlude every image), 0 on a clean one
            model.set_oracle_flag(1 if set_occlusion_kinds(members[0]) else 0)
        with_flip = any(protocol.needs_flip for protocol in members)
        views = extract_views(model, members[0].images(), spec, device, batch_size, with_flip=with_flip,
                              num_workers=num_workers, desc=members[0].name)
        for protocol in members:
            protocol.process(range(len(views)), views)
    rows = [{**protocol, "checkpoint": checkpoint} if isinstance(protocol, dict)
            else annotate_row(protocol.compute(checkpoint=checkpoint), protocol, trained_families,
                              getattr(protocol, "split", "test"))
            for protocol in protocols]
    return [{**row, "flag": "oracle"} for row in rows] if oracle else rows


def evaluate_model(model: torch.nn.Module, spec: PreprocessSpec, protocol_cfgs: Sequence[Mapping[str, Any]],
                   device: Union[str, torch.device], batch_size: int = 128, checkpoint: str = "<name>",
                   trained_families: Optional[Sequence[str]] = None) -> List[Row]:
    """Build every protocol of ``protocol_cfgs`` and evaluate ``model`` on it; one row per (set, variant)."""
    return run_protocols(model, spec, build_protocols(protocol_cfgs), device, batch_size, checkpoint,
                         trained_families=trained_families)


TABLE_COLUMNS = (
    ("set", "set", "{}"), ("split", "split", "{}"), ("occluders", "occluders", "{}"), ("variant", "variant", "{}"),
    ("flip", "flip", "{}"), ("flag", "flag", "{}"), ("rule", "threshold_rule", "{}"),
    ("acc %", "accuracy", "{:.2f}"), ("±", "spread", "{:.2f}"), ("spread", "spread_kind", "{}"),
    ("AUC", "auc", "{:.4f}"), ("TAR@1e-3", "tar@far=1e-3", "{:.2f}"), ("TAR@1e-4", "tar@far=1e-4", "{:.2f}"),
    ("min FAR", "far_floor", "{:.1e}"),
    ("rank-1", "rank1", "{:.2f}"), ("pairs", "num_pairs", "{}"), ("pairs sha256", "pairs_sha256", "{}"),
    ("checkpoint", "checkpoint", "{}"),
)


def table_cells(rows: Sequence[Row]) -> Tuple[List[str], List[List[str]]]:
    """(header, cells per row) over the columns any row has; a 'not available' row is its cells up to the variant
    column (set, split, occluders, variant: '-' where unknown) then its status."""
    columns = [column for column in TABLE_COLUMNS if any(column[1] in row for row in rows)]
    lead = _status_lead(columns)
    body = []
    for row in rows:
        if "status" in row:
            body.append([str(row.get(key, "-")) for _, key, _ in columns[:lead]] + [row["status"]])
        else:
            body.append([fmt.format(row[key]) if row.get(key) is not None else "-" for _, key, fmt in columns])
    return [title for title, _, _ in columns], body


def _status_lead(columns: Sequence[Tuple[str, str, str]]) -> int:
    """How many leading columns a 'not available' row fills (through ``variant``)."""
    keys = [key for _, key, _ in columns]
    return keys.index("variant") + 1 if "variant" in keys else min(1, len(keys))


def format_table(rows: Sequence[Row]) -> str:
    """One aligned text table; every row names its protocol variant; 'not available' rows show their status."""
    header, body = table_cells(rows)
    lead = _status_lead([column for column in TABLE_COLUMNS if any(column[1] in row for row in rows)])
    full = [cells for cells, row in zip(body, rows) if "status" not in row]
    status = [cells[:lead] for cells, row in zip(body, rows) if "status" in row]
    widths = [max(len(cells[i]) for cells in [header, *full, *status] if i < len(cells)) for i in range(len(header))]

    def join(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths))

    lines = [join(header).rstrip(), "-" * len(join(header).rstrip())]
    for cells, row in zip(body, rows):
        lines.append(join(cells[:lead]) + "  " + cells[lead] if "status" in row else join(cells).rstrip())
    return "\n".join(lines)
