r"""Every baseline scored on one question (:func:`score_baselines`), each timed
and counted separately in the same run, and each held to its share of a time
budget: a gradient method averages over as many examples as fit (and says so),
leave-one-out is skipped, with the reason, when its evaluations do not fit."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from captum_neuron_shapley.game import UnitGame
from torch import nn, Tensor

from ..cost import Cost, count_cost
from ..scenario import QuantityPart, Scenario
from . import BASELINES, baselines as B
from .status import MethodStatus

__all__ = ["score_baselines"]

#: ``name -> (score of one part of the data, examples per chunk, budget note)``
Runner = Tuple[Callable[[QuantityPart], Tensor], int, str]


def _slice_target(target: Any, a: int, b: int) -> Any:
    if isinstance(target, Tensor) and target.dim() > 0:
        return target[a:b]
    return target


def _limited_mean(
    parts: Sequence[QuantityPart],
    fn: Callable[[QuantityPart], Tensor],
    seconds: Optional[float],
    chunk: int,
) -> Tuple[Tensor, int, int]:
    r"""The examples-weighted mean of ``fn`` over ``parts``; with ``seconds``, each
    part is scored in chunks of ``chunk`` examples while its share of the time
    lasts (at least one chunk). Returns ``(scores, examples used, examples)``."""
    total = sum(p.inputs.shape[0] for p in parts)
    if seconds is None:
        out = None
        for p in parts:
            s = fn(p) * (p.inputs.shape[0] / total)
            out = s if out is None else out + s
        assert out is not None
        return out, total, total
    out, used = None, 0
    per_part = seconds / len(parts)
    for p in parts:
        n = p.inputs.shape[0]
        t0 = time.perf_counter()
        acc, m = None, 0
        while m < n:
            b = min(chunk, n - m)
            sub = QuantityPart(
                p.inputs[m : m + b], _slice_target(p.target, m, m + b), p.contrast
            )
            s = fn(sub) * b
            acc = s if acc is None else acc + s
            m += b
            spent = time.perf_counter() - t0
            if spent * (m + chunk) / m > per_part:  # the next chunk would not fit
                break
        used += m
        assert acc is not None
        s = acc / m * (n / total)  # the part keeps its weight in the mixture
        out = s if out is None else out + s
    assert out is not None
    return out, used, total


def _gradient_runners(
    model: nn.Module, layers: Sequence[nn.Module], n_steps: int
) -> Dict[str, Runner]:
    layers = list(layers)
    return {
        "influence": (
            lambda p: B.distributional_influence(
                model, layers, p.inputs, p.target, p.contrast
            ),
            16,
            "",
        ),
        "influence-path": (
            lambda p: B.distributional_influence(
                model, layers, p.inputs, p.target, p.contrast, "path", n_steps=n_steps
            ),
            2,
            f", {n_steps} steps",
        ),
        "conductance": (
            lambda p: B.layer_conductance(
                model, layers, p.inputs, p.target, p.contrast, n_steps=n_steps
            ),
            2,
            f", {n_steps} steps",
        ),
        "grad-x-act": (
            lambda p: B.gradient_x_activation(
                model, layers, p.inputs, p.target, p.contrast
            ),
            16,
            "",
        ),
        "activation": (
            lambda p: B.activation_magnitude(model, layers, p.inputs),
            32,
            "",
        ),
    }


def _leave_one_out(
    model: nn.Module,
    game: Optional[UnitGame],
    limit: Optional[float],
    seconds_per_eval: Optional[float],
) -> Tuple[Optional[Tensor], Optional[Cost], MethodStatus]:
    r"""Leave-one-out on the question's game, unless its ``n_units``
    evaluations do not fit in ``limit`` seconds."""
    if game is None:
        raise ValueError("leave-one-out needs the scenario's `game`")
    n = game.n_units
    need = n * (seconds_per_eval or 0.0)
    if limit is not None and need > limit:
        return (
            None,
            None,
            MethodStatus(
                f"{limit:.1f} s",
                "",
                complete=False,
                skipped=True,
                reason=f"needs {n} evaluations, about {need:.0f} s; its share "
                f"of the time was {limit:.1f} s",
            ),
        )
    with count_cost(model) as c:
        before = game.n_evaluations
        scores = B.leave_one_out(game)
    c.model_evaluations = game.n_evaluations - before
    status = MethodStatus(
        f"{n} evaluations" + ("" if limit is None else f" ({limit:.1f} s)"),
        f"{c.model_evaluations} evaluations",
    )
    return scores, c, status


def score_baselines(
    model: nn.Module,
    layers: Sequence[nn.Module],
    scenario: Scenario,
    game: Optional[UnitGame] = None,
    n_steps: int = 20,
    methods: Sequence[str] = BASELINES,
    seconds: Optional[Callable[[str], Optional[float]]] = None,
    seconds_per_eval: Optional[float] = None,
) -> Tuple[Dict[str, Tensor], Dict[str, Cost], Dict[str, MethodStatus]]:
    r"""Score every unit of ``layers`` by each baseline on the scenario's
    validation data, timing and counting each one separately.

    Args:
        model (nn.Module): The model.
        layers (list of nn.Module): The layers (same for every method).
        scenario (Scenario): The question.
        game (UnitGame, optional): The scenario's game on its validation data
            (needed by leave-one-out; its removal rule decides the units' order).
        n_steps (int): Integration points of the path methods.
        methods (sequence of str): Which of :data:`~comparisons.methods.BASELINES`
            to run.
        seconds (Callable, optional): ``seconds(method)``: the method's time
            (None: no limit). A gradient method then averages over as many
            examples as fit (at least one chunk); leave-one-out, which needs
            one evaluation per unit, is skipped when ``n_units`` times
            ``seconds_per_eval`` does not fit.
        seconds_per_eval (float, optional): Seconds per coalition of ``game``.

    Returns:
        tuple: ``(scores, costs, statuses)``: flat float64 scores, a
        :class:`~comparisons.cost.Cost` and a
        :class:`~comparisons.methods.MethodStatus` per method (skipped methods
        have a status but no score).
    """
    parts = scenario.parts
    scores: Dict[str, Tensor] = {}
    costs: Dict[str, Cost] = {}
    status: Dict[str, MethodStatus] = {}
    n_parts = sum(p.inputs.shape[0] for p in parts)
    gradient = _gradient_runners(model, layers, n_steps)
    for name in methods:
        limit = None if seconds is None else seconds(name)
        if name == "leave-one-out":
            s, c, status[name] = _leave_one_out(model, game, limit, seconds_per_eval)
            if s is not None and c is not None:
                scores[name], costs[name] = s, c
            continue
        if name not in gradient:
            raise ValueError(f"unknown method {name!r}; choose from {BASELINES}")
        fn, chunk, extra = gradient[name]
        with count_cost(model) as c:
            scores[name], used, total = _limited_mean(parts, fn, limit, chunk)
        costs[name] = c
        budget = (
            f"all {n_parts} examples{extra}"
            if limit is None
            else f"{limit:.1f} s over {n_parts} examples{extra}"
        )
        st = MethodStatus(budget, f"{used} of {total} examples")
        if used < total:
            st.complete = False
            st.reason = f"averaged over {used} of {total} examples (time limit)"
        status[name] = st
    return scores, costs, status
