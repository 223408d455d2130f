r"""Scoring every unit by every method for one question (a *scenario*), and
measuring what each method cost in the same run.

A scenario fixes the metric (what the Shapley game and the removal check
measure), the validation data the scores are computed on, and the quantity of
interest for the gradient methods: the target class, or a contrast between two
classes, over one or more parts of the data (the comparative question "``a``
versus ``b``" averages ``q = z_a - z_b`` over the ``a`` examples and
``q = z_b - z_a`` over the ``b`` examples).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from captum_neuron_shapley import FilterShapley, ShapleyResult

from . import baselines as B
from .cost import Cost, count_cost

__all__ = ["QuantityPart", "Scenario", "METHODS", "score_methods"]

_GAME_KEYS = ("layer_baselines", "perturbations_per_eval", "batch_size")

METHODS = (
    "shapley",
    "leave-one-out",
    "influence",
    "influence-path",
    "conductance",
    "grad-x-act",
    "activation",
    "random",
)


@dataclass
class QuantityPart:
    r"""Examples and the quantity of interest on them: ``target`` (class index or
    per-example labels) or ``contrast=(a, b)``."""

    inputs: Tensor
    target: Any = None
    contrast: Optional[Tuple[int, int]] = None


@dataclass
class Scenario:
    r"""One question to compare the methods on.

    Attributes:
        name (str): Short key (``"accuracy"``, ``"recall_3"``, ``"pair_3_8"``).
        title (str): Human-readable description.
        metric (Callable): ``metric(outputs, target)``, higher is better.
        val_inputs (Tensor): Data of the Shapley game and of leave-one-out.
        val_target (Any): Its labels.
        parts (list of QuantityPart): Data and quantity for the gradient methods.
        test_inputs (Tensor): Held-out data of the removal check.
        test_target (Any): Its labels.
        exclude_top_fraction (float): Each method may not pick its own top
            fraction of units for overall accuracy (0: none).
    """

    name: str
    title: str
    metric: Callable
    val_inputs: Tensor
    val_target: Any
    parts: List[QuantityPart]
    test_inputs: Tensor
    test_target: Any
    exclude_top_fraction: float = 0.0
    extra: Dict[str, Any] = field(default_factory=dict)


def _weighted(parts: Sequence[QuantityPart], fn: Callable) -> Tensor:
    total = sum(p.inputs.shape[0] for p in parts)
    out = None
    for p in parts:
        s = fn(p) * (p.inputs.shape[0] / total)
        out = s if out is None else out + s
    return out


def score_methods(
    model: nn.Module,
    layers: Sequence[nn.Module],
    scenario: Scenario,
    shapley_kwargs: Dict[str, Any],
    n_steps: int = 20,
    seed: int = 0,
    methods: Sequence[str] = METHODS,
) -> Tuple[Dict[str, Tensor], Dict[str, Cost], ShapleyResult]:
    r"""Score every unit of ``layers`` by each method on the scenario's
    validation data, timing and counting each one separately.

    Args:
        model (nn.Module): The model.
        layers (list of nn.Module): The layers (same for every method).
        scenario (Scenario): The question.
        shapley_kwargs (dict): Passed to ``FilterShapley.attribute`` (budgets,
            ``top_k``, ``bound``, ...).
        n_steps (int): Integration points of the path methods.
        seed (int): Seed of the Shapley run and of the random scores.
        methods (sequence of str): Which of :data:`METHODS` to run.

    Returns:
        tuple: ``(scores, costs, result)``: flat float64 scores and a
        :class:`~comparisons.cost.Cost` per method, and the Shapley result.
    """
    layers = list(layers)
    fs = FilterShapley(model, layers)
    scores: Dict[str, Tensor] = {}
    costs: Dict[str, Cost] = {}
    parts = scenario.parts
    x_all = torch.cat([p.inputs for p in parts])

    with count_cost(model) as c:
        result = fs.attribute(
            scenario.val_inputs,
            target=scenario.val_target,
            metric=scenario.metric,
            seed=seed,
            return_result=True,
            **shapley_kwargs,
        )
    c.model_evaluations = result.n_evaluations
    scores["shapley"], costs["shapley"] = result.flat_values.double(), c

    runners: Dict[str, Callable[[], Tensor]] = {
        "influence": lambda: _weighted(
            parts,
            lambda p: B.distributional_influence(
                model, layers, p.inputs, p.target, p.contrast
            ),
        ),
        "influence-path": lambda: _weighted(
            parts,
            lambda p: B.distributional_influence(
                model, layers, p.inputs, p.target, p.contrast, "path", n_steps=n_steps
            ),
        ),
        "conductance": lambda: _weighted(
            parts,
            lambda p: B.layer_conductance(
                model, layers, p.inputs, p.target, p.contrast, n_steps=n_steps
            ),
        ),
        "grad-x-act": lambda: _weighted(
            parts,
            lambda p: B.gradient_x_activation(
                model, layers, p.inputs, p.target, p.contrast
            ),
        ),
        "activation": lambda: B.activation_magnitude(model, layers, x_all),
        "random": lambda: B.random_scores(result.n_units, seed),
    }
    for name in methods:
        if name == "shapley":
            continue
        if name == "leave-one-out":
            with count_cost(model) as c:
                game = fs.game(
                    scenario.val_inputs,
                    target=scenario.val_target,
                    metric=scenario.metric,
                    **{k: shapley_kwargs[k] for k in _GAME_KEYS if k in shapley_kwargs},
                )
                scores[name] = B.leave_one_out(game)
            c.model_evaluations = game.n_evaluations
            costs[name] = c
            continue
        if name not in runners:
            raise ValueError(f"unknown method {name!r}; choose from {METHODS}")
        with count_cost(model) as c:
            scores[name] = runners[name]()
        costs[name] = c
    return scores, costs, result
