r"""The report's figures, drawn from its summary alone (matplotlib, PNG files, no
display needed), so that a saved ``results.json`` can be drawn again:

- ``removal_curves.png``: every method's removal curve per question;
- ``top_units_by_layer.png``: where each method's first ``k`` units sit,
  Shapley's removal set and the full greedy search included;
- ``shapley_values.png``: the sorted Shapley values with their intervals, the
  top-``k`` boundary and the ``epsilon`` band of the stopping rule;
- ``conductance_top_unit.png`` (drawn during the run, from the model): neuron
  conductance through the top Shapley unit, with its colour scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from torch import Tensor  # noqa: E402

from ..text import plural  # noqa: E402
from .summary import QuestionSummary, ReportSummary, ShapleyValues  # noqa: E402

__all__ = [
    "draw_all",
    "plot_removal_curves",
    "plot_top_units_by_layer",
    "plot_shapley_values",
    "plot_conductance_map",
]

STYLE: Dict[str, Dict[str, object]] = {
    "shapley": dict(color="C0", ls="-", lw=2.0, marker="o"),
    "shapley-greedy": dict(color="C3", ls="--", lw=2.0, marker="s"),
    "full-greedy": dict(color="k", ls=":", lw=2.0, marker="^"),
    "leave-one-out": dict(color="C5", ls="-", lw=1.0, marker="."),
    "influence": dict(color="C2", ls="-", lw=1.0, marker="."),
    "influence-path": dict(color="C8", ls="-", lw=1.0, marker="."),
    "conductance": dict(color="C1", ls="-", lw=1.2, marker="."),
    "grad-x-act": dict(color="C4", ls="-", lw=1.2, marker="."),
    "activation": dict(color="C7", ls="-", lw=1.0, marker="."),
}

#: Methods whose bars are hatched in the layer figure: removal sets, not rankings.
SETS = ("shapley-greedy", "full-greedy")


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_all(summary: ReportSummary, out: Path) -> Dict[str, str]:
    r"""Draw every figure of ``summary`` into ``out``; ``{name: file name}``."""
    figs = {
        "removal_curves": plot_removal_curves(
            summary.questions, out / "removal_curves.png"
        )
    }
    overall = next(iter(summary.questions.values()))
    figs["top_units_by_layer"] = plot_top_units_by_layer(
        overall.top_units,
        summary.layers,
        summary.layer_sizes,
        overall.k,
        out / "top_units_by_layer.png",
    )
    if summary.shapley_values is not None:
        figs["shapley_values"] = plot_shapley_values(
            summary.shapley_values, out / "shapley_values.png"
        )
    return {name: p.name for name, p in figs.items()}


def _curve_panel(ax: plt.Axes, q: QuestionSummary) -> None:
    ks = np.asarray(q.ks, dtype=float)
    for name, m in q.methods.items():
        y = np.asarray(m.curve, dtype=float)
        if name == "random":
            sd = np.asarray(m.std, dtype=float)
            ax.plot(ks, y, color="0.4", ls="--", lw=1.0, label="random (mean ± std)")
            ax.fill_between(ks, y - sd, y + sd, color="0.4", alpha=0.15)
            continue
        style = STYLE.get(name, dict(lw=1.0, marker="."))
        label = q.label(name)
        if len(m.runs) > 1:
            label += f" ({m.aggregate})"
            lo, hi = np.asarray(m.min, dtype=float), np.asarray(m.max, dtype=float)
            ax.fill_between(ks, lo, hi, color=style.get("color"), alpha=0.15)
        ax.plot(ks, y, ms=3, label=label, **style)  # type: ignore[arg-type]
    ax.axvline(q.k, color="0.6", lw=0.8, ls="-.")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(q.title, fontsize=10)
    ax.set_xlabel("units removed (k)")
    ax.set_ylabel((q.metric or "metric") + " (test)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5)


def plot_removal_curves(questions: Mapping[str, QuestionSummary], path: Path) -> Path:
    r"""One panel per question: the metric on the test split after removing each
    method's first ``k`` units, ``k = 0..K`` (integer ticks). Shapley by value
    (solid blue), its greedy removal set (dashed red) and the full greedy
    search (dotted black) are drawn in distinct styles, Shapley's lines as
    medians over seeds with the seeds' range shaded; random removal as mean +-
    std. A dagger in the legend marks a method that stopped on its budget; the
    dash-dotted line is the headline ``k``.

    Args:
        questions (dict): ``{key: QuestionSummary}``.
        path (Path): PNG file to write.
    """
    n = len(questions)
    fig, axes = plt.subplots(1, n, figsize=(5.6 * n, 4.6), squeeze=False)
    for ax, q in zip(axes[0], questions.values()):
        _curve_panel(ax, q)
    return _save(fig, path)


def plot_top_units_by_layer(
    top_units: Mapping[str, Sequence[Sequence[object]]],
    layer_names: Sequence[str],
    sizes: Sequence[int],
    k: int,
    path: Path,
) -> Path:
    r"""How many of each method's first ``k`` units sit in each layer: the
    rankings, and (hatched) the removal sets of Shapley's greedy refinement and
    of the full greedy search.

    Args:
        top_units (dict): ``{method: [(layer, unit), ...]}``, its first ``k``.
        layer_names (sequence of str): The layers, in order.
        sizes (sequence of int): Units per layer.
        k (int): How many units each method's list holds.
        path (Path): PNG file to write.
    """
    names = list(top_units)
    fig, ax = plt.subplots(figsize=(2.2 + 1.5 * len(layer_names), 4.2))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(layer_names))
    for i, name in enumerate(names):
        counts = [sum(1 for u in top_units[name] if u[0] == lay) for lay in layer_names]
        style = STYLE.get(name, {})
        ax.bar(
            x + i * width - 0.4 + width / 2,
            counts,
            width,
            label=name + (" (removal set)" if name in SETS else ""),
            color=style.get("color"),
            hatch="//" if name in SETS else None,
            edgecolor="white" if name in SETS else None,
        )
    ax.set_xticks(x)
    ax.set_xticklabels(
        [f"{n}\n({s} units)" for n, s in zip(layer_names, sizes)], fontsize=8
    )
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"units among the method's first {k}")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(
        f"Where each method's first {k} units sit, by layer (hatched: removal sets)"
    )
    return _save(fig, path)


def _values_panel(ax: plt.Axes, sv: ShapleyValues, order: np.ndarray) -> None:
    vals = np.asarray(sv.values, dtype=float)
    lo, hi = np.asarray(sv.lower, dtype=float), np.asarray(sv.upper, dtype=float)
    layer_of = np.repeat(np.arange(len(sv.layer_sizes)), sv.layer_sizes)
    x = np.arange(len(order))
    v = vals[order]
    err = np.stack([np.clip(v - lo[order], 0, None), np.clip(hi[order] - v, 0, None)])
    finite = np.isfinite(err).all(0)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for li, name in enumerate(sv.layer_names):
        m = (layer_of[order] == li) & finite
        if m.any():
            ax.errorbar(
                x[m],
                v[m],
                yerr=err[:, m],
                fmt="o",
                ms=3,
                lw=0.8,
                color=colors[li % len(colors)],
                label=name,
            )
    if (~finite).any():  # too few samples for an interval (see min_samples)
        ax.plot(
            x[~finite], v[~finite], "x", ms=4, color="0.5", label="no finite interval"
        )
    boundary = sv.boundary()
    if boundary is not None and sv.top_k is not None:
        eps = sv.epsilon or 0.0
        inside = int((np.abs(vals - boundary) <= eps).sum())
        ax.axhspan(
            boundary - eps,
            boundary + eps,
            color="C3",
            alpha=0.12,
            label=f"boundary ± epsilon ({eps:.3g}): "
            f"{plural(inside, 'unit')} inside, tied at this tolerance",
        )
        ax.axhline(boundary, color="C3", lw=1.0, label=f"top-{sv.top_k} boundary")
        if sv.top_k < len(order):
            ax.axvline(sv.top_k - 0.5, color="C3", lw=0.8, ls=":")
    ax.axhline(0, color="k", lw=0.6)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("units, sorted by Shapley value (0: highest)")
    ax.set_ylabel("Shapley value (confidence interval)")
    ax.grid(alpha=0.3)


def plot_shapley_values(sv: ShapleyValues, path: Path, top: int = 40) -> Path:
    r"""Sorted Shapley values with their confidence intervals: all units, and a
    zoom on the ``top`` highest; the top-``k`` boundary (midpoint between the
    ``k``-th and ``(k+1)``-th values), the band ``boundary ± epsilon`` within
    which the stopping rule treats units as tied, and the run's status."""
    vals = np.asarray(sv.values, dtype=float)
    order = np.argsort(-vals, kind="stable")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    _values_panel(axes[0], sv, order)
    _values_panel(axes[1], sv, order[:top])
    status = (
        "converged"
        if sv.converged
        else f"not converged: stopped by {sv.stop_reason} "
        f"after {plural(sv.permutations, 'chain')}"
    )
    axes[0].set_title(f"All {len(order)} units (seed 0; {status})", fontsize=10)
    axes[1].set_title(f"Top {min(top, len(order))}", fontsize=10)
    axes[1].legend(fontsize=7)
    return _save(fig, path)


def plot_conductance_map(
    images: Tensor, maps: Tensor, title: str, path: Path, labels: List[str]
) -> Path:
    r"""Input images (top row) and the conductance through one unit (bottom),
    summed over input channels, on one symmetric colour scale with its colour
    bar (red raises the quantity, blue lowers it)."""
    n = images.shape[0]
    fig, axes = plt.subplots(
        2, n, figsize=(1.9 * n + 1.2, 4), squeeze=False, layout="constrained"
    )
    cms = [maps[i].detach().cpu().float().sum(0) for i in range(n)]
    lim = max(float(cm.abs().max()) for cm in cms) or 1.0
    shown = None
    for i in range(n):
        img = images[i].detach().cpu().float()
        pic = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
        if img.shape[0] != 1:
            pic = (pic - pic.min()) / (pic.max() - pic.min() + 1e-12)
        axes[0][i].imshow(pic.numpy(), cmap="gray" if img.shape[0] == 1 else None)
        axes[0][i].set_title(labels[i], fontsize=8)
        shown = axes[1][i].imshow(cms[i].numpy(), cmap="bwr", vmin=-lim, vmax=lim)
        for r in range(2):
            axes[r][i].axis("off")
    fig.suptitle(title, fontsize=9)
    if shown is not None:
        bar = fig.colorbar(shown, ax=list(axes[:, -1]), shrink=0.8)
        bar.set_label("conductance (summed over input channels)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
