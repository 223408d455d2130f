r"""What a budget buys: the cost of a run, projected from a short pilot run.

:meth:`~captum_neuron_shapley.NeuronShapley.estimate_cost` runs a few chains
(or a few seconds) of the same game and returns a :class:`CostEstimate`: the
measured setup time, seconds per evaluation on this device, evaluations per
chain, and for a given budget how many chains it buys and the standard error a
unit's value would then have. Print it for a table.

Chains get cheaper as a top-k run goes (units whose place is settled leave the
chains), so the projection of chains per budget is for every unit sampled: a
lower bound on what a top-k run completes, and the standard errors an upper
bound for the units still undecided.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch

from .result import ShapleyResult

__all__ = ["CostEstimate", "BudgetEstimate"]


@dataclass
class BudgetEstimate:
    r"""What one budget buys.

    Attributes:
        evaluations (int): Coalitions evaluated in all (setup included).
        seconds (float): Wall time, setup included.
        chains (float): Permutation chains completed with every unit sampled.
        stderr (float, optional): The typical (median over units) standard error
            of a unit's value after those chains; None when the pilot measured
            no spread.
    """

    evaluations: int
    seconds: float
    chains: float
    stderr: Optional[float]


@dataclass
class CostEstimate:
    r"""The cost of a run on one game, measured on a pilot run.

    Attributes:
        n_units (int): Units in the game.
        setup_seconds (float): Seconds before sampling (intact pass, baselines,
            ``V(none)``).
        setup_evaluations (int): Evaluations before sampling.
        seconds_per_evaluation (float): Measured while sampling.
        evaluations_per_chain (float): Measured on the pilot's completed chains,
            or projected from a chain it cut short (``measured`` False).
        measured (bool): Whether a chain was completed.
        samples_per_chain (float): Samples of a unit per chain (1 for
            independent chains, ``1 / strata`` for stratified cycles).
        sample_sd (float, optional): Median over units of the standard deviation
            of one sample of a unit's value (None before two samples).
        batch_size (int, optional): Examples per chain (None: all of them).
        examples_per_evaluation (float): Examples through the model per
            evaluation while sampling.
    """

    n_units: int
    setup_seconds: float
    setup_evaluations: int
    seconds_per_evaluation: float
    evaluations_per_chain: float
    measured: bool
    samples_per_chain: float
    sample_sd: Optional[float]
    batch_size: Optional[int]
    examples_per_evaluation: float

    @classmethod
    def from_result(cls, result: ShapleyResult) -> "CostEstimate":
        r"""The estimate from a (pilot) run's result."""
        c = result.cost
        if c.evaluations_per_chain is None:
            raise ValueError(
                "the run evaluated no coalition of a chain: give the pilot more "
                "time (`pilot_time`)"
            )
        evals = result.n_evaluations - c.setup_evaluations - result.refine_evaluations
        seconds = c.seconds - c.setup_seconds - c.refine_seconds
        chains = max(result.n_permutations, 1)
        counts = result.counts.to(torch.float64)
        var = result.flat_stderr.pow(2) * counts
        ok = (counts >= 2) & torch.isfinite(var)
        sd = float(var[ok].median().sqrt()) if bool(ok.any()) else None
        return cls(
            n_units=result.n_units,
            setup_seconds=c.setup_seconds,
            setup_evaluations=c.setup_evaluations,
            seconds_per_evaluation=seconds / max(evals, 1),
            evaluations_per_chain=float(c.evaluations_per_chain),
            measured=result.n_permutations > 0,
            samples_per_chain=(
                float(counts.max()) / chains if result.n_permutations else 1.0
            ),
            sample_sd=sd,
            batch_size=c.batch_size,
            examples_per_evaluation=_per_eval(result),
        )

    def budget(
        self, max_evaluations: Optional[int] = None, max_time: Optional[float] = None
    ) -> BudgetEstimate:
        r"""What a run with these budgets buys (the tighter of the two).

        Args:
            max_evaluations (int, optional): A budget in evaluations.
            max_time (float, optional): A budget in seconds.
        """
        if max_evaluations is None and max_time is None:
            raise ValueError("give `max_evaluations`, `max_time` or both")
        left = math.inf
        if max_evaluations is not None:
            left = min(left, max_evaluations - self.setup_evaluations)
        if max_time is not None:
            left = min(
                left, (max_time - self.setup_seconds) / self.seconds_per_evaluation
            )
        left = max(left, 0.0)
        return self._after(left)

    def chains(self, n_chains: float) -> BudgetEstimate:
        r"""What ``n_chains`` chains with every unit sampled cost."""
        return self._after(n_chains * self.evaluations_per_chain)

    def _after(self, evaluations: float) -> BudgetEstimate:
        chains = evaluations / self.evaluations_per_chain
        samples = chains * self.samples_per_chain
        stderr = (
            None
            if self.sample_sd is None or samples < 1
            else self.sample_sd / math.sqrt(samples)
        )
        return BudgetEstimate(
            evaluations=int(self.setup_evaluations + evaluations),
            seconds=self.setup_seconds + evaluations * self.seconds_per_evaluation,
            chains=chains,
            stderr=stderr,
        )

    def __repr__(self) -> str:
        how = "measured" if self.measured else "projected from a cut chain"
        per = "all examples" if self.batch_size is None else f"{self.batch_size}"
        lines = [
            f"CostEstimate({self.n_units} units; setup {self.setup_seconds:.1f} s; "
            f"{self.seconds_per_evaluation * 1e3:.3g} ms per evaluation of "
            f"{self.examples_per_evaluation:.0f} examples; "
            f"{self.evaluations_per_chain:,.0f} evaluations per chain ({how}); "
            f"examples per chain: {per})",
            "  chains  evaluations      time  typical stderr",
        ]
        for n in (1, 5, 20, 100):
            b = self.chains(n)
            se = "-" if b.stderr is None else f"{b.stderr:.3g}"
            lines.append(
                f"  {n:6d}  {b.evaluations:11,d}  {_duration(b.seconds):>8}  {se:>14}"
            )
        return "\n".join(lines)


def _per_eval(result: ShapleyResult) -> float:
    r"""Examples per evaluation: the batch, or all examples (the intact pass
    counts as one evaluation of them)."""
    c = result.cost
    if c.batch_size is not None:
        return float(c.batch_size)
    return c.examples / (result.n_evaluations + 1)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


#: ``attribute`` keywords that a pilot sets itself.
_PILOT_OWN = (
    "top_k",
    "epsilon",
    "refine",
    "max_evaluations",
    "max_permutations",
    "max_time",
    "stop",
    "return_result",
    "return_convergence_delta",
)


def pilot(
    attr: Any,
    inputs: Any,
    args: Tuple[Any, ...],
    kwargs: Dict[str, Any],
    chains: int,
    seconds: float,
) -> CostEstimate:
    r"""Run ``attr.attribute(inputs, *args, **kwargs)`` as a pilot (every unit
    in every chain, until ``chains`` chains or ``seconds``) and project from it
    (:meth:`~captum_neuron_shapley.NeuronShapley.estimate_cost`)."""
    from ._run import UnestimatedWarning

    for key in _PILOT_OWN:
        if key in kwargs:
            raise ValueError(
                f"`{key}` does not apply to estimate_cost (it runs a pilot of "
                "`pilot_chains` chains or `pilot_time` seconds)"
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnestimatedWarning)
        result = attr.attribute(
            inputs,
            *args,
            max_permutations=chains,
            max_time=seconds,
            epsilon=0.0,  # every unit in every chain
            return_result=True,
            **kwargs,
        )
    return CostEstimate.from_result(result)
