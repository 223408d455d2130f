r"""The benchmark's figure (``precision.png``): each row's running top-k
precision against the examples pushed through the model (top panels) and
against the CPU time spent (bottom panels), one column per cell."""

from __future__ import annotations

from pathlib import Path

import torch

from .rows import BASE_ROWS
from .summary import TopkResults

__all__ = ["plot_precision"]


def plot_precision(results: TopkResults, path: Path) -> Path:
    r"""Mean (over seeds) precision of each row's running top-k (the cell's largest
    k) against the examples spent (in full-set evaluations) and against the CPU
    time (in full-set forward passes), on logarithmic axes, one column per cell;
    a run that stopped keeps its final estimate to the end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .topk import derive, SUMMARY_AXES

    cells = results.cells
    fig, axes = plt.subplots(
        2, len(cells), figsize=(4.6 * len(cells), 7.4), squeeze=False
    )
    panels = (("full_set", "examples (full-set evaluations)"),)
    panels += (("fwd_cpu", "CPU time (full-set forward passes)"),)
    for col, cell in enumerate(cells):
        k = str(max(cell.ks))
        for r, (axis, label) in enumerate(panels):
            ax = axes[r][col]
            a = SUMMARY_AXES.index(axis)
            top = 1.0
            curves_by_row = {}
            for name, row in cell.rows.items():
                if k not in row.trajectories:
                    continue
                runs = row.runs_at(int(k))
                trajs = [
                    derive(t, cell.n_examples, next(i for i in runs if i["seed"] == s))
                    for t, s in zip(
                        row.trajectories[k], sorted(i["seed"] for i in runs)
                    )
                ]
                top = max([top] + [t[-1][a] for t in trajs if t])
                curves_by_row[name] = trajs
            grid = torch.logspace(0, float(torch.tensor(top).log10()), 240)
            for name, trajs in curves_by_row.items():
                curves = []
                for traj in trajs:
                    xs = torch.tensor([p[a] for p in traj], dtype=torch.float64)
                    pr = torch.tensor([p[-1] for p in traj], dtype=torch.float64)
                    i = torch.searchsorted(xs, grid.double(), right=True) - 1
                    curves.append(torch.where(i >= 0, pr[i.clamp_min(0)], 0.0))
                style = "-" if name in BASE_ROWS else "--"
                ax.plot(grid, torch.stack(curves).mean(0), style, label=name, lw=1.2)
            ax.axhline(0.9, color="k", ls=":", lw=1)
            if axis == "fwd_cpu":
                ax.axvline(200, color="grey", ls=":", lw=1)
            ax.set_xscale("log")
            ax.set_title(f"{cell.game}, top-{k}, eps {cell.eps:g}", fontsize=9)
            ax.set_xlabel(label)
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
        axes[0][col].set_ylabel("top-k precision (mean of seeds)")
        axes[1][col].set_ylabel("top-k precision (mean of seeds)")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
