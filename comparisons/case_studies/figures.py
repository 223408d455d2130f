r"""One figure per case study (``applications_<case>.png``), drawn from its
summary alone: the removal curves of the primary metric and, beside it, what
the removal costs."""

from __future__ import annotations

from pathlib import Path

from .summary import CaseSummary

__all__ = ["plot_case"]

#: Metrics that decide winners but are not drawn (differences of the drawn ones).
NOT_DRAWN = ("vulnerability", "recall_minus_others")


def plot_case(case: CaseSummary, path: Path) -> Path:
    r"""Removal curves of one case: one panel per metric (the primary one and
    what the removal costs), every method and random removal (median with
    min-max band), ``k`` on integer ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    j = case.judged
    metrics = [m for m in j.metrics if m not in NOT_DRAWN]
    ks = case.ks
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(4.6 * len(metrics), 3.8), squeeze=False
    )
    for ax, m in zip(axes[0], metrics):
        before = j.before[m]
        for name, c in j.curves.items():
            pts = [(k, v) for k, v in zip(ks, c[m]) if v is not None]
            style = dict(lw=2.2) if name.startswith("shapley") else dict(lw=1.2)
            ax.plot(
                [0] + [p[0] for p in pts],
                [before] + [p[1] for p in pts],
                marker="o",
                ms=3,
                label=name,
                **style,
            )
        r = j.random
        if m in r.median:
            ax.plot(
                [0] + ks,
                [before] + r.median[m],
                color="k",
                ls="--",
                label="random (median, min-max)",
            )
            ax.fill_between(
                [0] + ks,
                [before] + r.min[m],
                [before] + r.max[m],
                color="k",
                alpha=0.12,
            )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("units removed (k)")
        ax.set_ylabel(f"{m} (test)")
        ax.grid(alpha=0.3)
    axes[0][0].set_title(case.title, fontsize=10)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
