r"""Settings of the report (:class:`Options`, what the command-line flags set)
and how a time budget is shared between the methods of a question
(:data:`STAGES`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from captum_neuron_shapley import PermutationSampler
from captum_neuron_shapley.metrics import Accuracy, NegativeCrossEntropy

from ..budget import shapley_budget, Stage

__all__ = ["Options", "QUICK_TIME_BUDGET", "STAGES", "metric_named", "shapley_kwargs"]

#: Seconds ``--quick`` gives the methods of all three questions together (data
#: and model loading, figures and files come on top).
QUICK_TIME_BUDGET = 130.0

#: Relative shares of a question's time under a time budget, in the order the
#: stages run (time a stage leaves unused goes to the later ones).
STAGES = (
    Stage("shapley", 4.0),
    Stage("refine", 1.5),
    Stage("full-greedy", 1.0),
    Stage("leave-one-out", 1.0),
    Stage("influence", 0.4),
    Stage("influence-path", 1.0),
    Stage("conductance", 1.0),
    Stage("grad-x-act", 0.4),
    Stage("activation", 0.2),
    Stage("curves", 2.5),
)

#: Examples per permutation chain under ``--quick`` (when there are more).
QUICK_BATCH = 64


@dataclass
class Options:
    r"""Settings of :func:`~comparisons.report.run_report` (the command-line
    flags).

    Attributes:
        out (Path): Output folder.
        quick (bool): Small budgets and a time limit (``time_budget``).
        seeds (int): Shapley seeds per question.
        top_k (int): The bandit's ``k`` and the removal set's size.
        max_k (int, optional): Curves run to this ``K`` (default ``2 * top_k``).
        metric (str): The overall metric, ``"accuracy"`` or ``"cross-entropy"``.
        recall_class (int): Class of the recall question.
        pair (tuple of int): Classes of the comparative question.
        exclude_fraction (float): Share of each method's top units for the
            overall metric that it may not remove in the recall question.
        random_seeds (int): Random removal orders.
        n_steps (int): Integration points of the path methods.
        command (str): The command line, for the report.
        time_budget (float, optional): Seconds for the methods of all questions
            (default: :data:`QUICK_TIME_BUDGET` with ``quick``, else no limit).
        refine_pool (int, optional): Pool of the greedy refinement (default
            ``refine.default_pool_size``).
        full_greedy_max_evaluations (int): The full greedy search runs when it
            needs at most this many evaluations (and, under a time budget, fits
            its share of the time).
        perturbations_per_eval (int): Coalitions per forward pass.
        plain_tmc (bool): Also run truncated Monte Carlo with the bandit off
            for as many chains as the bandit walked (not with ``quick``).
        max_evaluations (int, optional): Each Shapley run's evaluation budget
            (default :func:`~comparisons.budget.shapley_budget`).
        device (str): The torch device (recorded in the environment).
    """

    out: Path
    quick: bool = False
    seeds: int = 3
    top_k: int = 10
    max_k: Optional[int] = None
    metric: str = "accuracy"
    recall_class: int = 3
    pair: Tuple[int, int] = (3, 8)
    exclude_fraction: float = 0.2
    random_seeds: int = 10
    n_steps: int = 20
    command: str = "python -m comparisons"
    time_budget: Optional[float] = None
    refine_pool: Optional[int] = None
    full_greedy_max_evaluations: int = 5000
    perturbations_per_eval: int = 8
    plain_tmc: bool = True
    max_evaluations: Optional[int] = None
    device: str = "cpu"


def metric_named(name: str) -> Any:
    r"""The overall metric called ``name``."""
    if name == "accuracy":
        return Accuracy()
    if name == "cross-entropy":
        return NegativeCrossEntropy()
    raise ValueError(f"--metric must be 'accuracy' or 'cross-entropy', got {name!r}")


def shapley_kwargs(
    opts: Options, n_units: int, n_examples: int, main: bool
) -> Dict[str, Any]:
    r"""The ``attribute`` keywords of one question's Shapley runs: the
    evaluation budget (scaled to the units) and, with ``--quick``, chains on
    batches of :data:`QUICK_BATCH` examples."""
    if opts.max_evaluations is not None and opts.max_evaluations < 1:
        raise ValueError(
            f"`max_evaluations` must be positive or None, got {opts.max_evaluations}"
        )
    kw: Dict[str, Any] = {
        "max_evaluations": opts.max_evaluations
        or shapley_budget(n_units, opts.quick, main),
        "perturbations_per_eval": opts.perturbations_per_eval,
    }
    if opts.quick and n_examples > QUICK_BATCH:
        kw["sampler"] = PermutationSampler(batch_size=QUICK_BATCH)
    return kw
