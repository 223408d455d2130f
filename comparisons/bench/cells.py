r"""The benchmark's cells: which game, which ``k``, which budget and which
estimator rows (:data:`CELLS`, :data:`QUICK_CELLS`), and each game with its
reference values (:func:`load_cell_game`) and tolerance (:func:`game_epsilon`).

The games are those of :mod:`comparisons.bench.nets` (reference values from
long independent runs, cached), and, for ``--quick``, the tests' 7-filter CNN
with exact values by enumeration (:class:`QuickGame`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import torch

from captum_neuron_shapley import FilterShapley

from .rows import BASE_ROWS, REUSE_ROWS, TOPK_ROWS

__all__ = [
    "Cell",
    "CELLS",
    "QUICK_CELLS",
    "QUICK_GAME",
    "QuickGame",
    "load_cell_game",
    "game_epsilon",
    "COST",
]

#: ``(game, ks, evaluations per run, rows)``; no rows: every row.
Cell = Tuple[str, Tuple[int, ...], int, Tuple[str, ...]]


@dataclass
class QuickGame:
    r"""The tests' 7-filter CNN on blob images (``--quick``), with exact values by
    enumeration as its reference: a cell that runs in seconds."""

    name: str
    attr: Any
    x: torch.Tensor
    y: torch.Tensor
    baselines: str = "zero"

    def game(self, perturbations_per_eval: int = 1):
        return self.attr.game(
            self.x,
            target=self.y,
            layer_baselines=self.baselines,
            perturbations_per_eval=perturbations_per_eval,
        )

    def attribute(self, **kwargs: Any):
        return self.attr.attribute(
            self.x,
            target=self.y,
            layer_baselines=self.baselines,
            return_result=True,
            **kwargs,
        )


QUICK_GAME = "tiny-cnn/zero"

#: The cells. Sized so that the whole top-k benchmark takes about 40 minutes on 2
#: CPU cores (of which the digits CNN evaluates about 110 coalitions per second per
#: core): every row runs on the fast 128-neuron MLP, the top-k selection rows
#: also on the residual network, the estimators that reuse every evaluation on
#: most cells.
CELLS: List[Cell] = [
    (
        "digits-cnn/mean",
        (10,),
        3000,
        BASE_ROWS + REUSE_ROWS + ("kernel SHAP, paired", "min_samples=2 (2 cycles)"),
    ),
    ("digits-cnn/zero", (10,), 3000, BASE_ROWS + REUSE_ROWS[:1]),
    ("digits-resnet/zero", (3, 10), 3000, BASE_ROWS + REUSE_ROWS + TOPK_ROWS),
    ("digits-resnet/mean", (10,), 3000, BASE_ROWS + REUSE_ROWS[:1]),
    (
        "digits-mlp/zero",
        (3, 10),
        25000,
        BASE_ROWS
        + ("stratified truncated MC (bandit off)", "kernel SHAP, paired")
        + REUSE_ROWS
        + TOPK_ROWS
        + ("min_samples=2 (2 cycles)", "default, perturbations_per_eval=8"),
    ),
]
QUICK_CELLS: List[Cell] = [(QUICK_GAME, (3,), 300, ())]

#: Rough seconds per evaluation on one core (orders the tasks, longest first).
COST = {"digits-cnn": 9e-3, "digits-resnet": 5.5e-3, "digits-mlp": 7e-4}

_LOADED: Dict[str, Tuple[Any, Dict[str, torch.Tensor]]] = {}


def load_cell_game(name: str) -> Tuple[Any, Dict[str, torch.Tensor]]:
    r"""The game called ``name`` and its reference values (``"truncated"``: the
    target of ``truncation="auto"`` chains; ``"untruncated"``: Shapley values)."""
    if name in _LOADED:
        return _LOADED[name]
    if name == QUICK_GAME:
        from captum_neuron_shapley.exact import exact_values
        from captum_neuron_shapley.sampler import truncation_threshold

        from ..games import blobs, train_tiny

        x, y = blobs(200, torch.Generator().manual_seed(0))
        model = train_tiny(x, y)
        bg: Any = QuickGame(
            name, FilterShapley(model, [model.conv1, model.conv2]), x, y
        )
        game = bg.game()
        thr = truncation_threshold("auto", game.full_value(), game.empty_value())
        ref = {
            "truncated": exact_values(game, thr),
            "untruncated": exact_values(game),
        }
    else:
        from .nets import bench_game, reference

        bg = bench_game(name)
        ref = reference(bg)
    _LOADED[name] = (bg, ref)
    return bg, ref


def game_epsilon(ref: Dict[str, torch.Tensor]) -> float:
    r"""A cell's tolerance: 15% of the mean of the three largest Shapley values (the
    reference's), rounded to 0.0005, so that it scales with the game's values
    (0.005 on the digits CNN with mean removal, the value of earlier runs)."""
    top3 = torch.topk(ref["untruncated"], 3).values.mean()
    return max(0.0005, round(float(0.15 * top3) / 0.0005) * 0.0005)
