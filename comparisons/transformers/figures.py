r"""The transformer comparison's figures, drawn from its summary alone
(matplotlib, PNG files, no display needed):

- ``removal_curves.png``: every method's removal curve, one panel per study
  (rows: training seeds; columns: heads for the induction task, heads for the
  four tasks, MLP neurons of the modular model);
- ``mechanism_ranks.png``: where each method ranks the induction circuit's
  heads, one panel per model;
- ``head_values.png``: the Shapley estimates of the heads (seed 0) with their
  confidence intervals beside the exact values, one panel per model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .summary import StudySummary, TransformerSummary  # noqa: E402

__all__ = [
    "draw_all",
    "plot_removal_curves",
    "plot_mechanism_ranks",
    "plot_head_values",
    "STYLE",
]

STYLE: Dict[str, Dict[str, object]] = {
    "shapley": dict(color="C0", ls="-", lw=2.0, marker="o"),
    "shapley-greedy": dict(color="C3", ls="--", lw=2.0, marker="s"),
    "full-greedy": dict(color="k", ls=":", lw=1.6, marker="^"),
    "exact-shapley": dict(color="C9", ls=":", lw=1.6, marker="d"),
    "leave-one-out": dict(color="C5", ls="-", lw=1.0, marker="."),
    "michel": dict(color="C2", ls="-", lw=1.2, marker="."),
    "atp": dict(color="C6", ls="-", lw=1.2, marker="."),
    "conductance": dict(color="C1", ls="-", lw=1.2, marker="."),
    "grad-x-act": dict(color="C4", ls="-", lw=1.2, marker="."),
}

#: Columns of the curves grid.
COLUMNS = ("induction", "overall", "modular")


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _seed(st: StudySummary) -> int:
    name = st.key.split("-")[0]
    return int("".join(c for c in name if c.isdigit()) or 0)


def _curve_panel(ax: plt.Axes, st: StudySummary, legend: bool) -> None:
    ks = np.asarray(st.ks, dtype=float)
    for name, m in st.methods.items():
        y = np.asarray(m.curve, dtype=float)
        if name == "random":
            sd = np.asarray(m.std, dtype=float)
            ax.plot(ks, y, color="0.4", ls="--", lw=1.0, label="random (mean ± std)")
            ax.fill_between(ks, y - sd, y + sd, color="0.4", alpha=0.15)
            continue
        style = STYLE.get(name, dict(lw=1.0, marker="."))
        label = st.label(name)
        if len(m.runs) > 1:
            lo, hi = np.asarray(m.min, dtype=float), np.asarray(m.max, dtype=float)
            ax.fill_between(ks, lo, hi, color=style.get("color"), alpha=0.12)
            label += f" ({m.aggregate})"
        ax.plot(ks, y, ms=3, label=label, **style)  # type: ignore[arg-type]
    ax.axvline(st.k, color="0.6", lw=0.8, ls="-.")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(st.title, fontsize=8)
    ax.set_xlabel(f"{st.units} removed (k)", fontsize=8)
    ax.set_ylabel(st.metric + " (test)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=6)


def plot_removal_curves(summary: TransformerSummary, path: Path) -> Path:
    r"""One panel per study: the metric on the test split after removing each
    method's first ``k`` units, ``k = 0..K``; Shapley's lines are medians over
    estimator seeds with their range shaded, random removal the mean ± std of
    its orders; a dagger marks a method that stopped on its budget, the
    dash-dotted line the headline ``k``."""
    studies = list(summary.studies.values())
    seeds = sorted({_seed(s) for s in studies})
    cols = [c for c in COLUMNS if any(s.question == c for s in studies)]
    fig, axes = plt.subplots(
        len(seeds),
        len(cols),
        figsize=(4.8 * len(cols), 3.8 * len(seeds)),
        squeeze=False,
    )
    for ax in axes.flat:
        ax.axis("off")
    for st in studies:
        ax = axes[seeds.index(_seed(st))][cols.index(st.question)]
        ax.axis("on")
        _curve_panel(ax, st, legend=_seed(st) == seeds[0])
    return _save(fig, path)


def _mechanism_studies(summary: TransformerSummary) -> List[StudySummary]:
    return [
        s
        for s in summary.studies.values()
        if s.mechanism is not None and s.question == "induction"
    ]


def plot_mechanism_ranks(summary: TransformerSummary, path: Path) -> Path:
    r"""For each model, the rank (1 = removed first) each method gives the
    heads of the induction circuit (read from the attention patterns): a
    method whose first ranks are the circuit's heads found it."""
    studies = _mechanism_studies(summary)
    fig, axes = plt.subplots(
        1, len(studies), figsize=(3.6 * len(studies), 3.8), squeeze=False
    )
    for ax, st in zip(axes[0], studies):
        mech = st.mechanism
        assert mech is not None
        methods = list(mech.ranks)
        grid = np.asarray([mech.ranks[m] for m in methods], dtype=float)
        ax.imshow(grid, cmap="viridis_r", vmin=1, vmax=st.n_units, aspect="auto")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:g}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="w" if grid[i, j] > st.n_units / 2 else "k",
                )
        ax.set_xticks(range(len(mech.names)))
        ax.set_xticklabels(
            [f"{n}\n{r}" for n, r in zip(mech.names, mech.roles)], fontsize=6.5
        )
        ax.set_yticks(range(len(methods)))
        ax.set_yticklabels([st.label(m) for m in methods], fontsize=7)
        ax.set_title(f"{st.model.split(' (')[0]} seed {_seed(st)}", fontsize=8)
    fig.suptitle("Rank of each induction-circuit head (1 = removed first)", fontsize=9)
    return _save(fig, path)


def plot_head_values(summary: TransformerSummary, path: Path) -> Path:
    r"""For each model, the heads' Shapley values for the induction accuracy:
    seed 0's estimate with its confidence interval, and the exact value (all
    coalitions)."""
    studies = _mechanism_studies(summary)
    fig, axes = plt.subplots(
        1, len(studies), figsize=(3.8 * len(studies), 3.4), squeeze=False
    )
    for ax, st in zip(axes[0], studies):
        x = np.arange(st.n_units)
        v = np.asarray(st.scores["shapley"], dtype=float)
        lo = np.asarray(st.shapley_lower, dtype=float)
        hi = np.asarray(st.shapley_upper, dtype=float)
        err = np.stack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
        err = np.where(np.isfinite(err), err, 0.0)
        ax.bar(x, v, color="C0", alpha=0.7, label="estimate (seed 0)")
        ax.errorbar(x, v, yerr=err, fmt="none", color="k", lw=0.8, capsize=2)
        if st.exact is not None:
            ax.plot(x, st.exact, "d", color="C3", ms=5, label="exact")
        mech = set(st.mechanism.units if st.mechanism else [])
        ax.set_xticks(x)
        ax.set_xticklabels(
            [n + ("*" if i in mech else "") for i, n in enumerate(st.unit_names)],
            fontsize=7,
        )
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"seed {_seed(st)} (* induction circuit)", fontsize=8)
        ax.set_ylabel("Shapley value, induction accuracy", fontsize=8)
        ax.legend(fontsize=7)
    return _save(fig, path)


def draw_all(summary: TransformerSummary, out: Path) -> Dict[str, str]:
    r"""Every figure of ``summary`` into ``out``; ``{name: file name}``."""
    figs = {"removal_curves": plot_removal_curves(summary, out / "removal_curves.png")}
    if _mechanism_studies(summary):
        figs["mechanism_ranks"] = plot_mechanism_ranks(
            summary, out / "mechanism_ranks.png"
        )
        figs["head_values"] = plot_head_values(summary, out / "head_values.png")
    return {name: p.name for name, p in figs.items()}
