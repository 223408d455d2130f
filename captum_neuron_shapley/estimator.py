r"""The truncated multi-armed-bandit loop: sample chains for the active units,
update statistics, apply the stopping rule, checkpoint, report progress."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import torch
from captum._utils.progress import progress
from torch import Tensor

from .bandit import BoundConfig, TopKRule
from .distributed import Collective
from .metrics import Metric
from .result import atomic_save, safe_load
from .sampler import ChainSampler
from .statistics import RunningStats

__all__ = ["Budget", "TMABEstimator", "fingerprint"]


@dataclass
class Budget:
    r"""When to stop regardless of convergence (``None``: no limit)."""

    max_evaluations: Optional[int] = None
    max_permutations: Optional[int] = None
    max_time: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ("max_evaluations", "max_permutations", "max_time"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not v > 0):
                raise ValueError(f"`{name}` must be positive or None, got {v!r}")

    def exhausted(self, n_eval: int, n_perm: int, elapsed: float) -> Optional[str]:
        r"""The name of the first budget used up, or None."""
        if self.max_evaluations is not None and n_eval >= self.max_evaluations:
            return "max_evaluations"
        if self.max_permutations is not None and n_perm >= self.max_permutations:
            return "max_permutations"
        if self.max_time is not None and elapsed >= self.max_time:
            return "max_time"
        return None


class TMABEstimator:
    r"""Truncated Multi-Armed Bandit Shapley (Ghorbani & Zou 2020, Alg. 1).

    Args:
        sampler (ChainSampler): Draws chains over the game.
        rule (TopKRule): Active set and stopping.
        bound (BoundConfig): Confidence intervals.
        budget (Budget): Limits.
        value_range (float, optional): True range of a marginal contribution; if
            None the observed range of the samples is used.
        checkpoint (str, optional): File to save the state to and resume from.
        checkpoint_interval (float): Seconds between checkpoint saves (always saved
            at the end).
        fingerprint (dict): Settings a checkpoint must match to be resumed.
        show_progress (bool): Show a progress bar (on rank 0).
        callback (Callable, optional): Called with the estimator after every round
            (``stats``, ``n_evaluations``, ``n_permutations`` are current); a
            true return value stops the run (``converged`` stays False,
            ``stop_reason`` is ``"callback"``).
        elapsed (float): Seconds already spent on this run before sampling starts
            (setting up the game), counted against ``max_time``.

    ``max_time`` is checked between forward passes, so a run overshoots it by at
    most one pass (of ``perturbations_per_eval`` coalitions) and the statistics
    merge; chains it cuts short are dropped, as with ``max_evaluations``.

    With ``torch.distributed`` initialised, every rank runs this loop on its own
    chains; see :mod:`captum_neuron_shapley.distributed`. Budgets and counts are
    those of the whole run.
    """

    def __init__(
        self,
        sampler: ChainSampler,
        rule: TopKRule,
        bound: BoundConfig,
        budget: Budget,
        value_range: Optional[float] = None,
        checkpoint: Optional[str] = None,
        checkpoint_interval: float = 60.0,
        fingerprint: Optional[Dict[str, Any]] = None,
        show_progress: bool = False,
        callback: Optional[Callable[["TMABEstimator"], Optional[bool]]] = None,
        elapsed: float = 0.0,
    ) -> None:
        self.sampler = sampler
        self.game = sampler.game
        self.rule = rule
        self.bound = bound
        self.budget = budget
        self.value_range = value_range
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.checkpoint_interval = checkpoint_interval
        self.fingerprint = fingerprint or {}
        self.show_progress = show_progress
        self.callback = callback
        self.stats = RunningStats(self.game.n_units)
        self.n_permutations = 0
        self.elapsed = 0.0
        self._setup_s = float(elapsed)
        self._deadline: Optional[float] = None
        self.observed = torch.tensor([0.0, 0.0], dtype=torch.float64)  # min, max
        self.history: List[List[float]] = []
        self.converged = False
        self.stop_reason = "not started"
        self.group = Collective()
        # whole-run count (all ranks); starts with what the game used to set up
        self.n_evaluations = int(self.group.sum([self.game.n_evaluations])[0])

    # -- bounds ----------------------------------------------------------------
    def radius(self) -> Tensor:
        rng = self.value_range
        if rng is None:
            rng = float(self.observed[1] - self.observed[0])
        return self.bound.radius(self.stats, rng)

    # -- main loop ---------------------------------------------------------------
    def run(self) -> "TMABEstimator":
        if self.checkpoint is not None:
            exists = float(os.path.exists(self.checkpoint))
            if self.group.sum([exists])[0] not in (0.0, float(self.group.world)):
                raise ValueError(
                    f"`checkpoint` {self.checkpoint!r} exists for some ranks only; "
                    "it must be on a file system that every rank sees"
                )
            if exists:
                self.load(self.checkpoint)
        start = time.monotonic() - self.elapsed - self._setup_s
        last_save = time.monotonic()
        if self.budget.max_time is not None:
            self._deadline = start + self.budget.max_time
        bar: Any = progress(  # Captum's helper (a tqdm bar)
            total=self.budget.max_permutations,
            initial=self.n_permutations,
            disable=not self.show_progress or self.group.rank != 0,
            desc="Neuron Shapley",
            unit="chain",
        )
        try:
            while True:
                active = self.rule.active(self.stats.mean, self.radius())
                n_active = int(active.sum())
                self.converged = n_active == 0
                self.elapsed = self.group.max([time.monotonic() - start])[0]
                reason = "converged" if self.converged else None
                reason = reason or self.budget.exhausted(
                    self.n_evaluations, self.n_permutations, self.elapsed
                )
                if reason is not None:
                    self.stop_reason = reason
                    break
                self.history.append([self.n_permutations, self.n_evaluations, n_active])
                self._round(active)
                bar.n = self.n_permutations
                bar.set_postfix(active=n_active, evals=self.n_evaluations)
                # decisions every rank must take together
                stop, save = self.group.max(
                    [
                        float(bool(self.callback and self.callback(self))),
                        float(
                            self.checkpoint is not None
                            and time.monotonic() - last_save >= self.checkpoint_interval
                        ),
                    ]
                )
                if save and self.checkpoint is not None:
                    self.save(self.checkpoint)
                    last_save = time.monotonic()
                if stop:
                    self.stop_reason = "callback"
                    self.elapsed = self.group.max([time.monotonic() - start])[0]
                    break
        finally:
            bar.close()
        if self.checkpoint is not None:
            self.save(self.checkpoint)
        return self

    def _round(self, active: Tensor) -> None:
        r"""Every rank draws its chains within its share of the budgets left; the
        statistics and counts (of completed chains) of all ranks are merged."""
        g = self.group
        perms_left = _left(self.budget.max_permutations, self.n_permutations)
        evals_left = _left(self.budget.max_evaluations, self.n_evaluations)
        if evals_left is not None:  # this rank's share of the evaluations left
            evals_left = evals_left // g.world + (g.rank < evals_left % g.world)
        delta = RunningStats(self.game.n_units)
        before, n_chains = self.game.n_evaluations, 0
        low, high = float(self.observed[0]), float(self.observed[1])
        if perms_left is not None:  # this rank's share of the chains left
            perms_left = perms_left // g.world + (g.rank < perms_left % g.world)
        if perms_left is None or perms_left > 0:
            limit = None if evals_left is None else before + evals_left
            samples, n_chains = self.sampler.sample(
                active, limit, perms_left, self._deadline
            )
            for units, marginals in samples:
                delta.update(units, marginals)
                if marginals.numel():
                    low = min(low, float(marginals.min()))
                    high = max(high, float(marginals.max()))
        g.merge(self.stats, delta)
        d_eval, d_perm = g.sum([self.game.n_evaluations - before, n_chains])
        self.n_evaluations += int(d_eval)
        self.n_permutations += int(d_perm)
        neg_low, high = g.max([-low, high])
        self.observed = torch.tensor([-neg_low, high], dtype=torch.float64)

    # -- checkpoint ----------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {
            "fingerprint": dict(self.fingerprint),
            "stats": self.stats.state_dict(),
            "generators": self.group.gather_states(self.sampler.generator.get_state()),
            "n_permutations": self.n_permutations,
            "n_evaluations": self.n_evaluations,
            "elapsed": self.elapsed,
            "observed": self.observed.clone(),
            "history": self.history_tensor(),
            "sampler": {
                k: self.group.gather_states(v) for k, v in self._sampler_state().items()
            },
        }

    def _sampler_state(self) -> Dict[str, Tensor]:
        get = getattr(self.sampler, "state_dict", None)
        return get() if get is not None else {}

    def history_tensor(self) -> Tensor:
        r"""Rows of (permutations, evaluations, active units) before each round."""
        return torch.tensor(self.history, dtype=torch.float64).reshape(-1, 3)

    def save(self, path: str) -> None:
        r"""Rank 0 writes (atomically); every rank takes part in gathering."""
        state = self.state_dict()
        if self.group.rank == 0:
            atomic_save(state, path)
        self.group.barrier()

    def load(self, path: str) -> None:
        try:
            state = safe_load(path)
        except Exception as err:  # a corrupt or foreign file
            raise ValueError(f"`checkpoint` {path!r} cannot be read: {err}") from err
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"`checkpoint` {path!r} was written by a run with different settings "
                f"({state.get('fingerprint')} vs {self.fingerprint}); delete it or "
                "pass another path"
            )
        self.stats.load_state_dict(state["stats"])
        self.sampler.generator.set_state(state["generators"][self.group.rank])
        self.n_permutations = int(state["n_permutations"])
        self.n_evaluations = int(state["n_evaluations"])
        self.elapsed = float(state["elapsed"])
        self.observed = state["observed"].to(torch.float64)
        self.history = state["history"].tolist()
        sampler_state = state.get("sampler") or {}
        if sampler_state:
            self.sampler.load_state_dict(  # type: ignore[attr-defined]
                {k: v[self.group.rank] for k, v in sampler_state.items()}
            )


def _left(limit: Optional[int], used: int) -> Optional[int]:
    return None if limit is None else max(limit - used, 0)


def fingerprint(
    sampler: ChainSampler,
    seed: Optional[int],
    top_k: Optional[int],
    epsilon: float,
    bound: BoundConfig,
) -> dict:
    r"""The settings a checkpoint must match to be resumed."""
    game = sampler.game
    metric = game.metric
    return {
        "layers": [u.name for u in game.units],
        "metric": (
            repr(metric)
            if isinstance(metric, Metric)
            else getattr(metric, "__qualname__", type(metric).__name__)
        ),
        "full_value": game.full_value(),
        "empty_value": game.empty_value(),
        "n_units": game.n_units,
        "n_examples": game.n_examples,
        "seed": seed,
        "truncation": sampler.truncation,
        "top_k": top_k,
        "epsilon": float(epsilon),
        "bound": bound.mode,
        "delta": None if bound.delta is None else float(bound.delta),
        "min_samples": bound.min_samples,
        "subset_size": sampler.subset_size,
        "antithetic": sampler.antithetic,
        "strata": sampler.strata,
        "sampler": getattr(sampler, "name", "chains"),
        "chains_per_round": sampler.chains_per_round,
        "perturbations_per_eval": game.perturbations_per_eval,
        "world_size": Collective().world,
    }
