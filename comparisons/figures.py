r"""Figures of the report (matplotlib, written as PNG files, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from captum_neuron_shapley import ShapleyResult  # noqa: E402
from torch import Tensor  # noqa: E402

__all__ = [
    "plot_removal_curves",
    "plot_top_units_by_layer",
    "plot_shapley_values",
    "plot_conductance_map",
]


_STYLE = {
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


def plot_removal_curves(questions: Dict[str, Dict[str, Any]], path: Path) -> Path:
    r"""One panel per question: the metric on the test split after removing each
    method's first ``k`` units, ``k = 0..K``. Shapley by value (solid blue), its
    greedy removal set (dashed red) and the full greedy search (dotted black) are
    drawn in distinct styles, Shapley's lines as medians over seeds with the
    seeds' range shaded; random removal as mean +- std. A dagger in the legend
    marks a method that stopped on its budget.

    Args:
        questions (dict): ``{title: question}`` as in ``results.json``
            (``"ks"``, ``"methods"``, ``"status"``, ``"metric"``).
        path (Path): PNG file to write.
    """
    n = len(questions)
    fig, axes = plt.subplots(1, n, figsize=(5.6 * n, 4.6), squeeze=False)
    for col, (title, q) in enumerate(questions.items()):
        ax = axes[0][col]
        ks = q["ks"]
        for name, m in q["methods"].items():
            st = q.get("status", {}).get(name, {})
            mark = "†" if st and not st.get("complete", True) else ""
            y = torch.tensor(m["curve"], dtype=torch.float64).numpy()
            if name == "random":
                sd = torch.tensor(m["std"], dtype=torch.float64).numpy()
                ax.plot(
                    ks, y, color="0.4", ls="--", lw=1.0, label="random (mean ± std)"
                )
                ax.fill_between(ks, y - sd, y + sd, color="0.4", alpha=0.15)
                continue
            style = _STYLE.get(name, dict(lw=1.0, marker="."))
            label = name + mark
            if len(m["runs"]) > 1:
                label += f" ({m['aggregate']})"
                lo = torch.tensor(m["min"], dtype=torch.float64).numpy()
                hi = torch.tensor(m["max"], dtype=torch.float64).numpy()
                ax.fill_between(ks, lo, hi, color=style.get("color"), alpha=0.15)
            ax.plot(ks, y, ms=3, label=label, **style)
        ax.axvline(q["k"], color="0.6", lw=0.8, ls="-.")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("units removed (k)")
        ax.set_ylabel(q.get("metric", "metric") + " (test)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_top_units_by_layer(
    scores: Dict[str, Tensor],
    layer_names: Sequence[str],
    sizes: Sequence[int],
    k: int,
    path: Path,
) -> Path:
    r"""How many of each method's top-``k`` units sit in each layer."""
    offsets = torch.tensor([0] + list(sizes)).cumsum(0)
    names = list(scores)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(layer_names), 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        top = torch.argsort(scores[name], descending=True)[:k]
        layer = torch.bucketize(top, offsets[1:], right=True)
        counts = torch.bincount(layer, minlength=len(layer_names))
        xs = torch.arange(len(layer_names)) + i * width - 0.4 + width / 2
        ax.bar(xs.numpy(), counts.numpy(), width, label=name)
    ax.set_xticks(range(len(layer_names)))
    ax.set_xticklabels(
        [f"{n}\n({s} units)" for n, s in zip(layer_names, sizes)], fontsize=8
    )
    ax.set_ylabel(f"units among the method's top {k}")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"Where the top-{k} units sit, by layer")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _flat(x: Any) -> Tensor:
    return torch.cat([t.flatten() for t in x]) if isinstance(x, tuple) else x.flatten()


def plot_shapley_values(result: ShapleyResult, path: Path, top: int = 40) -> Path:
    r"""Sorted Shapley values with their confidence intervals (``result.lower`` to
    ``result.upper``): all units, and a zoom on the ``top`` highest."""
    vals = result.flat_values.double()
    lo, hi = _flat(result.lower).double(), _flat(result.upper).double()
    order = torch.argsort(vals, descending=True)
    sizes = [lay.n_units for lay in result.layers]
    layer_of = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, sel in ((axes[0], order), (axes[1], order[:top])):
        x = torch.arange(len(sel))
        v = vals[sel]
        err = torch.stack([(v - lo[sel]).clamp(min=0), (hi[sel] - v).clamp(min=0)])
        finite = torch.isfinite(err).all(0)
        for li, lay in enumerate(result.layers):
            m = (layer_of[sel] == li) & finite
            if m.any():
                ax.errorbar(
                    x[m].numpy(),
                    v[m].numpy(),
                    yerr=err[:, m].numpy(),
                    fmt="o",
                    ms=3,
                    lw=0.8,
                    color=colors[li % len(colors)],
                    label=lay.name,
                )
        if (~finite).any():  # too few samples for an interval (see min_samples)
            ax.plot(
                x[~finite].numpy(),
                v[~finite].numpy(),
                "x",
                ms=4,
                color="0.5",
                label="no finite interval yet",
            )
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlabel("units, sorted by Shapley value")
        ax.set_ylabel("Shapley value (confidence interval)")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"All {len(order)} units")
    axes[1].set_title(f"Top {min(top, len(order))}")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_conductance_map(
    images: Tensor, maps: Tensor, title: str, path: Path, labels: List[str]
) -> Path:
    r"""Input images (top row) and the conductance through one unit (bottom)."""
    n = images.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4), squeeze=False)
    for i in range(n):
        img = images[i].detach().cpu().float()
        cm = maps[i].detach().cpu().float().sum(0)
        show = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
        if img.shape[0] != 1:
            show = (show - show.min()) / (show.max() - show.min() + 1e-12)
        axes[0][i].imshow(show.numpy(), cmap="gray" if img.shape[0] == 1 else None)
        axes[0][i].set_title(labels[i], fontsize=8)
        lim = float(cm.abs().max()) or 1.0
        axes[1][i].imshow(cm.numpy(), cmap="bwr", vmin=-lim, vmax=lim)
        for r in range(2):
            axes[r][i].axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
