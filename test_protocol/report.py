"""Markdown evaluation report: the result table, ROC curves per variant and a per-set accuracy bar chart (PNG)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from test_protocol.evaluate import table_cells
from test_protocol.verification_metrics import spread_label
from utils.checkpoint import atomic_write_text

Curve = Tuple[np.ndarray, np.ndarray]


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    header, body = table_cells(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cells in body:
        lines.append("| " + " | ".join(cells + [""] * (len(header) - len(cells))) + " |")
    return "\n".join(lines)


def plot_roc_curves(curves: Mapping[Tuple[str, str], Curve], path: Path) -> List[Path]:
    """One PNG per variant, ``roc_<variant>.png``: TPR against FPR (log scale) for every set."""
    from matplotlib.figure import Figure

    written = []
    for variant in sorted({variant for _, variant in curves}):
        figure = Figure(figsize=(6, 4.5))
        axes = figure.add_subplot()
        for (name, curve_variant), (fpr, tpr) in curves.items():
            if curve_variant == variant:
                keep = fpr > 0
                axes.plot(fpr[keep], tpr[keep], label=name)
        axes.set(xscale="log", xlabel="false accept rate", ylabel="true accept rate", ylim=(0, 1.01),
                 title=f"ROC ({variant})")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(loc="lower right", fontsize=8)
        figure.tight_layout()
        out = path / f"roc_{variant}.png"
        figure.savefig(out, dpi=120)
        written.append(out)
    return written


def plot_accuracy_bars(rows: Sequence[Mapping[str, Any]], out: Path, group_key: str = "variant",
                       title: str = "", ylim: Tuple[float, float] = (0, 100)) -> Path:
    """Bars per set, one per ``group_key`` value (the variant; or a model / ablation row): 10-fold accuracy
    (MeGlass: Rank-1), with the spread as error bar (the axis label says which: s.e. or std) and the value on top."""
    from matplotlib.figure import Figure

    scored = [row for row in rows if "status" not in row]
    sets = list(dict.fromkeys(row["set"] for row in scored))
    groups = list(dict.fromkeys(row[group_key] for row in scored))
    width = 0.8 / max(len(groups), 1)
    figure = Figure(figsize=(max(6, 0.6 * len(sets) * (len(groups) + 1)), 4))
    axes = figure.add_subplot()
    for offset, group in enumerate(groups):
        values = {row["set"]: row for row in scored if row[group_key] == group}
        heights = [values[s].get("accuracy", values[s].get("rank1", np.nan)) if s in values else np.nan for s in sets]
        errors = [values[s].get("spread", 0.0) if s in values else 0.0 for s in sets]
        bars = axes.bar(np.arange(len(sets)) + offset * width, heights, width, yerr=errors, label=group, capsize=3)
        axes.bar_label(bars, fmt="%.1f", fontsize=6, padding=2)
    axes.set_xticks(np.arange(len(sets)) + width * (len(groups) - 1) / 2, sets, rotation=30, ha="right")
    rank1 = any("accuracy" not in row and "rank1" in row for row in scored)
    kinds = sorted({row["spread_kind"] for row in scored if "spread_kind" in row})
    bars_are = f"; error bars ± {' / '.join(spread_label(kind) for kind in kinds)}" if kinds else ""
    axes.set(ylabel="accuracy %" + (" (MeGlass: rank-1 %)" if rank1 else "") + bars_are,
             ylim=(ylim[0], ylim[1] + 3))
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    return out


def write_report(out_dir: str | Path, rows: Sequence[Mapping[str, Any]], curves: Dict[Tuple[str, str], Curve],
                 title: str, details: Sequence[str] = ()) -> Path:
    """``out_dir/report.md`` with the table, ``roc_<variant>.png`` and ``accuracy_by_set.png``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""] + [f"- {line}" for line in details] + ["", markdown_table(rows), ""]
    if any("status" not in row for row in rows):
        bars = plot_accuracy_bars(rows, out_dir / "accuracy_by_set.png")
        lines += ["## Accuracy per set", "", f"![accuracy per set]({bars.name})", ""]
    if curves:
        lines += ["## ROC curves", ""]
        lines += [f"![{png.stem}]({png.name})" for png in plot_roc_curves(curves, out_dir)] + [""]
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines))
    return report
