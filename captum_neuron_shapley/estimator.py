r"""The estimator loop (truncated multi-armed-bandit Shapley, Ghorbani & Zou 2020,
Alg. 1): ask the stopping rule which units still need samples, let the sampler
draw them, merge the statistics, repeat until the rule says stop.

It holds no policy of its own: what to sample is the sampler's
(:mod:`.sampler`), when to stop and which units are still undecided is the
stopping rule's (:mod:`.stopping`), the intervals are the bound's
(:mod:`.bounds`). With ``torch.distributed`` initialised, every rank runs this
loop on its own chains and the statistics are merged after every round (see
:mod:`.distributed`).
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
from captum._utils.progress import progress
from torch import Tensor

from .bounds import AnytimeBound, Bound
from .distributed import Collective
from .result import atomic_save, safe_load
from .sampler import Sampler
from .statistics import RunningStats
from .stopping import Limits, MaxEvaluations, MaxPermutations, MaxTime, StoppingRule

__all__ = ["ShapleyEstimator"]


class ShapleyEstimator:
    r"""Sample until a stopping rule is met.

    Args:
        sampler (Sampler): A sampler bound to the game (:meth:`Sampler.bind`).
        stop (StoppingRule): The resolved stopping rule
            (:meth:`StoppingRule.resolve`), observers included.
        bound (Bound, optional): The bound of the reported intervals (and of
            :meth:`radius`). Default: the first interval rule's, else
            :class:`~captum_neuron_shapley.bounds.AnytimeBound`
        value_range (float, optional): True range of a marginal contribution;
            None: the observed range of the samples.
        fingerprint (dict, optional): Settings a checkpoint must match.
        show_progress (bool): Show a progress bar (on rank 0).
        started (float, optional): ``time.monotonic()`` when the run began
            (setting up the game counts against a time budget; a resumed run
            moves it back by the time the checkpoint had spent). Default: now

    Attributes:
        stats (RunningStats): Count, mean and variance of every unit's samples.
        n_evaluations (int): Coalitions evaluated (all ranks; setup included).
        examples_evaluated (int): Examples pushed through the model (all ranks;
            setup included).
        n_permutations (int): Chains (or coalitions) completed.
        rounds (int): Rounds run.
        elapsed (float): Seconds since ``started``.
        setup_time (float): Seconds before the first round (the game's setup,
            and the part of a resumed run before it stopped).
        setup_evaluations (int): Evaluations before the first round.
        converged (bool): Whether an interval rule was met.
        stop_reason (str): Why the run stopped.

    Examples::

        >>> game = fs.game(x_val, target=y_val)
        >>> sampler = PermutationSampler().bind(game, torch.Generator().manual_seed(0))
        >>> defaults = RuleDefaults(0.01, AnytimeBound(), sampler.min_samples)
        >>> stop = (TopKSeparated(10) | MaxEvaluations(5000)).resolve(defaults)
        >>> run = ShapleyEstimator(sampler, stop).run()
        >>> run.stats.mean  # one value per unit
    """

    def __init__(
        self,
        sampler: Sampler,
        stop: StoppingRule,
        bound: Optional[Bound] = None,
        value_range: Optional[float] = None,
        fingerprint: Optional[Dict[str, Any]] = None,
        show_progress: bool = False,
        started: Optional[float] = None,
    ) -> None:
        self.sampler = sampler
        self.game = sampler.game
        self.stop = stop
        if bound is None:
            rules = [r for r in stop.leaves() if r.is_interval]
            bound = getattr(rules[0], "bound", None) if rules else None
        self.bound: Bound = (bound or AnytimeBound()).resolve(sampler.min_samples)
        self._value_range = value_range
        self.fingerprint = dict(fingerprint or {})
        self.show_progress = show_progress
        self.started = time.monotonic() if started is None else float(started)
        self.stats = RunningStats(self.game.n_units)
        self.n_permutations = 0
        self.rounds = 0
        self.elapsed = 0.0
        self.setup_time = 0.0
        self.setup_evaluations = 0
        self.observed = torch.tensor([0.0, 0.0], dtype=torch.float64)  # min, max
        self.history: List[List[float]] = []
        self.converged = False
        self.stop_reason = "not started"
        self.group = Collective()
        self._radii: Dict[Bound, Tensor] = {}
        # whole-run counts (all ranks); they start with what the game's setup used
        setup = self.group.sum([self.game.n_evaluations, self.game.examples_evaluated])
        self.n_evaluations = int(setup[0])
        self.examples_evaluated = int(setup[1])

    # -- what rules and samplers read ----------------------------------------------
    @property
    def value_range(self) -> float:
        r"""The range of a marginal contribution: the true one where known, else
        the observed one."""
        if self._value_range is not None:
            return self._value_range
        return float(self.observed[1] - self.observed[0])

    def radius(self, bound: Optional[Bound] = None) -> Tensor:
        r"""Half-width of every unit's interval under ``bound`` (default: the
        run's), computed once per round."""
        bound = self.bound if bound is None else bound
        if bound not in self._radii:
            self._radii[bound] = bound.radius(self.stats, self.value_range)
        return self._radii[bound]

    @property
    def epsilon(self) -> Optional[float]:
        r"""The tolerance of the first interval rule (None without one)."""
        rules = [r for r in self.stop.leaves() if r.is_interval]
        return getattr(rules[0], "epsilon", None) if rules else None

    def agree(self, flag: bool) -> bool:
        r"""Whether ``flag`` holds on any rank (the same answer on every rank)."""
        return bool(self.group.max([float(flag)])[0])

    # -- main loop -------------------------------------------------------------------
    def run(self) -> "ShapleyEstimator":
        r"""Sample until the stopping rule says stop; returns ``self``."""
        self.stop.start(self)
        self.setup_time = time.monotonic() - self.started
        self.setup_evaluations = self.n_evaluations
        bar = _Progress(self) if self.show_progress and self.group.rank == 0 else None
        try:
            while True:
                self.elapsed = self.group.max([time.monotonic() - self.started])[0]
                reason = self.stop.reason(self)
                if reason is not None:
                    # converged when an interval rule is met, whichever rule of
                    # a composition spoke first
                    self.converged = reason == "converged" or any(
                        r.is_interval and r.reason(self) == "converged"
                        for r in self.stop.leaves()
                    )
                    self.stop_reason = "converged" if self.converged else reason
                    break
                needs = self.stop.needs(self)
                active = (
                    torch.ones(self.game.n_units, dtype=torch.bool)
                    if needs is None
                    else needs
                )
                self.history.append(
                    [self.n_permutations, self.n_evaluations, int(active.sum())]
                )
                self._round(active, self.stop.limits(self))
                self.rounds += 1
                self._radii = {}
                if bar is not None:
                    bar.update(int(active.sum()))
                self.stop.after_round(self)
        finally:
            if bar is not None:
                bar.close()
        self.stop.finish(self)
        return self

    def _round(self, active: Tensor, limits: Limits) -> None:
        r"""Every rank draws its samples within its share of the budgets left; the
        statistics and counts (of completed chains) of all ranks are merged."""
        g = self.group
        max_evals = limits.max_evaluations
        before = self.game.n_evaluations
        rows_before = self.game.examples_evaluated
        if max_evals is not None:  # this rank's share of the evaluations left
            left = max(max_evals - self.n_evaluations, 0)
            max_evals = before + left // g.world + (g.rank < left % g.world)
        max_samples = limits.max_samples
        if max_samples is not None:  # this rank's share of the chains left
            max_samples = max_samples // g.world + (g.rank < max_samples % g.world)
        delta = RunningStats(self.game.n_units)
        low, high = float(self.observed[0]), float(self.observed[1])
        n_chains = 0
        if max_samples is None or max_samples > 0:
            samples, n_chains = self.sampler.sample(
                active, Limits(max_evals, max_samples, limits.deadline), self
            )
            for units, marginals in samples:
                delta.update(units, marginals)
                if marginals.numel():
                    low = min(low, float(marginals.min()))
                    high = max(high, float(marginals.max()))
        g.merge(self.stats, delta)
        d_eval, d_perm, d_rows = g.sum(
            [
                self.game.n_evaluations - before,
                n_chains,
                self.game.examples_evaluated - rows_before,
            ]
        )
        self.n_evaluations += int(d_eval)
        self.n_permutations += int(d_perm)
        self.examples_evaluated += int(d_rows)
        neg_low, high = g.max([-low, high])
        self.observed = torch.tensor([-neg_low, high], dtype=torch.float64)

    def history_tensor(self) -> Tensor:
        r"""Rows of (permutations, evaluations, active units) before each round."""
        return torch.tensor(self.history, dtype=torch.float64).reshape(-1, 3)

    # -- checkpoint ----------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        r"""The run's state (every rank takes part: generator states are
        gathered)."""
        return {
            "kind": "captum_neuron_shapley.checkpoint",
            "fingerprint": dict(self.fingerprint),
            "stats": self.stats.state_dict(),
            "generators": self.group.gather_states(self.sampler.generator.get_state()),
            "n_permutations": self.n_permutations,
            "n_evaluations": self.n_evaluations,
            "examples_evaluated": self.examples_evaluated,
            "rounds": self.rounds,
            "elapsed": self.elapsed,
            "observed": self.observed.clone(),
            "history": self.history_tensor(),
            "sampler": {
                k: self.group.gather_states(v)
                for k, v in self.sampler.state_dict().items()
            },
        }

    def save(self, path: str) -> None:
        r"""Rank 0 writes (atomically); every rank takes part in gathering."""
        state = self.state_dict()
        if self.group.rank == 0:
            atomic_save(state, path)
        self.group.barrier()

    def resume(self, path: str) -> None:
        r"""Load ``path`` if it exists (on every rank, or on none)."""
        exists = os.path.exists(path)
        seen = self.group.sum([float(exists)])[0]
        if seen not in (0.0, float(self.group.world)):
            raise ValueError(
                f"`checkpoint` {path!r} exists for some ranks only; it must be on a "
                "file system that every rank sees"
            )
        if exists:
            self.load(path)

    def load(self, path: str) -> None:
        r"""Restore the state saved at ``path`` (the settings must match)."""
        try:
            state = safe_load(path)
        except Exception as err:  # a corrupt or foreign file
            raise ValueError(f"`checkpoint` {path!r} cannot be read: {err}") from err
        if not isinstance(state, dict) or "fingerprint" not in state:
            raise ValueError(
                f"`checkpoint` {path!r} is not a checkpoint of this package (a saved "
                "ShapleyResult? load it with ShapleyResult.load)"
            )
        theirs, ours = state["fingerprint"], self.fingerprint
        if theirs != ours:
            keys = sorted(set(theirs) | set(ours), key=str)
            diff = [
                f"{k}: {theirs.get(k, '<missing>')!r} in the file, "
                f"{ours.get(k, '<missing>')!r} now"
                for k in keys
                if theirs.get(k, "<missing>") != ours.get(k, "<missing>")
            ]
            raise ValueError(
                f"`checkpoint` {path!r} was written by a run with other settings ("
                + "; ".join(diff)
                + "); delete it or pass another path"
            )
        self.stats.load_state_dict(state["stats"])
        self.sampler.generator.set_state(state["generators"][self.group.rank])
        self.n_permutations = int(state["n_permutations"])
        self.n_evaluations = int(state["n_evaluations"])
        self.examples_evaluated = int(state.get("examples_evaluated", 0))
        self.rounds = int(state.get("rounds", len(state["history"])))
        self.started -= float(state["elapsed"])  # a time budget counts it
        self.observed = state["observed"].to(torch.float64)
        self.history = state["history"].tolist()
        sampler_state = state.get("sampler") or {}
        if sampler_state:
            self.sampler.load_state_dict(
                {k: v[self.group.rank] for k, v in sampler_state.items()}
            )


class _Progress:
    r"""A progress bar (Captum's helper, a tqdm bar) over the binding budget: of
    the run's budgets (seconds, evaluations, chains), the one most used up, so
    that its total and ETA say when the run ends at the latest; without a
    budget, the units decided so far."""

    def __init__(self, run: ShapleyEstimator) -> None:
        self.run = run
        self.budgets: List[Tuple[str, float]] = []
        for rule in run.stop.leaves():
            if isinstance(rule, MaxTime):
                self.budgets.append(("s", rule.seconds))
            elif isinstance(rule, MaxEvaluations):
                self.budgets.append(("eval", float(rule.n)))
            elif isinstance(rule, MaxPermutations):
                self.budgets.append(("chain", float(rule.n)))
        self.kind = ""
        self.bar: Any = progress(total=1, desc="Neuron Shapley", disable=False)
        self.update(run.game.n_units)

    def _used(self, kind: str) -> float:
        run = self.run
        if kind == "s":
            return round(time.monotonic() - run.started, 1)
        return float(run.n_evaluations if kind == "eval" else run.n_permutations)

    def update(self, active: int) -> None:
        run = self.run
        if self.budgets:
            kind, total = max(self.budgets, key=lambda b: self._used(b[0]) / b[1])
            used = min(self._used(kind), total)
        else:
            kind, total, used = "unit", float(run.game.n_units), 0.0
            used = float(run.game.n_units - active)
        if kind != self.kind:  # another budget binds: restart the bar on it
            self.kind = kind
            self.bar.reset(total=total)
            self.bar.unit = kind
        self.bar.n = used
        self.bar.set_postfix(
            chains=run.n_permutations, evals=run.n_evaluations, active=active
        )

    def close(self) -> None:
        self.bar.close()
