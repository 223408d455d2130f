r"""The benchmark's figure (``precision.png``): each row's running top-k
precision against the evaluations spent, one panel per cell."""

from __future__ import annotations

from pathlib import Path

import torch

from .rows import BASE_ROWS
from .summary import TopkResults

__all__ = ["plot_precision"]


def plot_precision(results: TopkResults, path: Path) -> Path:
    r"""Mean (over seeds) precision of each row's running top-k (the cell's largest
    k) against the evaluations spent, one panel per cell; a run that stopped keeps
    its final estimate to the end of the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cells = results.cells
    fig, axes = plt.subplots(
        1, len(cells), figsize=(4.4 * len(cells), 3.8), squeeze=False
    )
    for ax, cell in zip(axes[0], cells):
        k = str(max(cell.ks))
        grid = torch.linspace(0, cell.budget, 201, dtype=torch.float64)
        for name, row in cell.rows.items():
            if k not in row.trajectories:
                continue
            curves = []
            for traj in row.trajectories[k]:
                ev = torch.tensor([e for e, _ in traj], dtype=torch.float64)
                pr = torch.tensor([p for _, p in traj], dtype=torch.float64)
                i = torch.searchsorted(ev, grid, right=True) - 1
                curves.append(torch.where(i >= 0, pr[i.clamp_min(0)], float("nan")))
            style = "-" if name in BASE_ROWS else "--"
            ax.plot(grid, torch.stack(curves).nanmean(0), style, label=name, lw=1.3)
        ax.axhline(0.9, color="k", ls=":", lw=1)
        ax.set_title(f"{cell.game}, top-{k}, eps {cell.eps:g}", fontsize=9)
        ax.set_xlabel("model evaluations")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-k epsilon-precision (mean of seeds)")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
