r"""The benchmark's cells: which game, which ``k``, which budget and which
estimator rows (:data:`CELLS`, :data:`QUICK_CELLS`), and each game with its
reference values (:func:`load_cell_game`, :func:`target_values`) and tolerance
(:func:`game_epsilon`).

The games are those of :mod:`comparisons.bench.nets` (reference values from
long independent runs, cached), and, for ``--quick``, the tests' 7-filter CNN
with exact values by enumeration (:class:`QuickGame`).

Budgets are in examples pushed through the model, counted in *full-set
evaluations*: one evaluation of a coalition on all of the game's examples (397
validation digits). A chain on a batch of 64 examples costs 64 / 397 of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from captum_neuron_shapley import FilterShapley

from .rows import BASE_ROWS, BATCH_ROWS, REUSE_ROWS

__all__ = [
    "Cell",
    "CELLS",
    "QUICK_CELLS",
    "QUICK_GAME",
    "QuickGame",
    "load_cell_game",
    "resolve_batch",
    "target_key",
    "target_values",
    "game_epsilon",
    "COST",
    "BATCH_REFERENCE_CHAINS",
]

#: ``(game, ks, budget in full-set evaluations, rows)``; no rows: every row.
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

#: The cells. The residual CNN with zero removal runs the most rows (plain
#: truncated MC on batches of 32 to 256, sample reuse, the selection
#: policies); the digits CNN and the MLP the base rows and sample reuse (on
#: the MLP also on batches, and stratified SVARM). Sized so that the top-k part
#: takes about an hour of CPU time.
CELLS: List[Cell] = [
    (
        "digits-resnet/zero",
        (3, 10),
        3000,
        BASE_ROWS
        + BATCH_ROWS
        + REUSE_ROWS[:1]
        + (
            "stratified truncated MC (bandit off)",
            "LUCB boundary arms",
            "border-uncertainty sampling",
            "gradient prior (sampling order only)",
            "prior screening",
            "default, perturbations_per_eval=4",
        ),
    ),
    ("digits-cnn/mean", (10,), 2500, BASE_ROWS + REUSE_ROWS[:1]),
    ("digits-mlp/zero", (10,), 25000, BASE_ROWS + REUSE_ROWS),
]
QUICK_CELLS: List[Cell] = [(QUICK_GAME, (3,), 300, ())]

#: Rough CPU seconds per evaluation on all examples on one core (orders the
#: tasks, longest first).
COST = {"digits-cnn": 9e-3, "digits-resnet": 5.5e-3, "digits-mlp": 7e-4}

#: Untruncated chains on batches behind a batched truncated target
#: (:func:`~comparisons.bench.targets.chain_batch_values`).
BATCH_REFERENCE_CHAINS = 200

_LOADED: Dict[str, Tuple[Any, Dict[str, torch.Tensor]]] = {}


def load_cell_game(name: str) -> Tuple[Any, Dict[str, torch.Tensor]]:
    r"""The game called ``name`` and its reference values (``"truncated"``: the
    target of ``truncation="auto"`` chains on all examples; ``"untruncated"``:
    Shapley values; batched targets are added by :func:`target_values`)."""
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
            "threshold": torch.tensor(thr),
        }
    else:
        from .nets import bench_game, reference

        bg = bench_game(name)
        ref = reference(bg)
    _LOADED[name] = (bg, ref)
    return bg, ref


def resolve_batch(bg: Any, batch: Union[None, int, str]) -> Optional[int]:
    r"""Examples per chain of a row's ``batch``: ``"auto"`` is the library's
    choice for the game; None, or a batch of at least all examples, is None."""
    if batch == "auto":
        from captum_neuron_shapley.sampler import auto_batch_size

        batch = auto_batch_size(bg.game())
    if batch is None or int(batch) >= len(bg.x):
        return None
    return int(batch)


def target_key(target: str, batch: Optional[int]) -> str:
    r"""The reference a row is scored against: ``"untruncated"`` (the Shapley
    values, also the target of untruncated estimators on batches),
    ``"truncated"`` (truncated chains on all examples) or ``"truncated_b64"``
    (truncated chains on random batches of 64)."""
    if target == "untruncated" or batch is None:
        return target
    return f"{target}_b{batch}"


def target_values(name: str, key: str) -> torch.Tensor:
    r"""The reference values ``key`` (:func:`target_key`) of the game ``name``;
    a batched truncated target is computed the first time and cached (on disk
    for the digits games): exactly, averaged over 20,000 batches, on the quick
    game; from :data:`BATCH_REFERENCE_CHAINS` untruncated chains on batches
    (:func:`~comparisons.bench.targets.chain_batch_values`) on the others."""
    bg, ref = load_cell_game(name)
    if key in ref:
        return ref[key]
    batch = int(key.split("_b")[1])
    if name == QUICK_GAME:
        from .targets import exact_batch_values

        out = exact_batch_values(bg.game(), float(ref["threshold"]), batch)
        ref[key], ref[key + "_se"] = out["values"], out["se"]
        return ref[key]
    from captum_neuron_shapley.examples import _cache_dir

    from .nets import REFERENCE_SEED
    from .targets import chain_batch_values

    path = _cache_dir(None) / f"bench_reference_{name.replace('/', '_')}_{key}_v1.pt"
    if path.exists():
        saved = torch.load(path, weights_only=True)
    else:
        out = chain_batch_values(
            bg.game(16),
            ref["untruncated"],
            ref["untruncated_se"],
            float(ref["threshold"]),
            batch,
            BATCH_REFERENCE_CHAINS,
            REFERENCE_SEED + 2 + batch,
        )
        saved = {"values": out["values"], "se": out["se"]}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(saved, tmp)
        os.replace(tmp, path)
    ref[key], ref[key + "_se"] = saved["values"], saved["se"]
    return ref[key]


def game_epsilon(ref: Dict[str, torch.Tensor]) -> float:
    r"""A cell's tolerance: 15% of the mean of the three largest Shapley values (the
    reference's), rounded to 0.0005, so that it scales with the game's values
    (0.005 on the digits CNN with mean removal)."""
    top3 = torch.topk(ref["untruncated"], 3).values.mean()
    return max(0.0005, round(float(0.15 * top3) / 0.0005) * 0.0005)
