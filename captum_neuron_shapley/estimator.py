r"""The truncated multi-armed-bandit loop: sample chains for the active units,
update statistics, apply the stopping rule, checkpoint, report progress."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .bandit import BoundConfig, TopKRule
from .result import atomic_save, safe_load
from .sampler import ChainSampler
from .statistics import RunningStats

__all__ = ["Budget", "TMABEstimator"]


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

    def exhausted(self, n_eval: int, n_perm: int, elapsed: float) -> bool:
        return (
            (self.max_evaluations is not None and n_eval >= self.max_evaluations)
            or (self.max_permutations is not None and n_perm >= self.max_permutations)
            or (self.max_time is not None and elapsed >= self.max_time)
        )


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
        show_progress (bool): Show a progress bar.
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
        self.stats = RunningStats(self.game.n_units)
        self.n_permutations = 0
        self.elapsed = 0.0
        self.observed = torch.tensor([0.0, 0.0], dtype=torch.float64)  # min, max
        self.history: List[List[float]] = []
        self.converged = False

    # -- bounds ----------------------------------------------------------------
    def radius(self) -> Tensor:
        rng = self.value_range
        if rng is None:
            rng = float(self.observed[1] - self.observed[0])
        return self.bound.radius(self.stats, rng)

    # -- main loop ---------------------------------------------------------------
    def run(self) -> "TMABEstimator":
        if self.checkpoint is not None and os.path.exists(self.checkpoint):
            self.load(self.checkpoint)
        start, last_save = time.monotonic() - self.elapsed, time.monotonic()
        bar = tqdm(
            total=self.budget.max_permutations,
            initial=self.n_permutations,
            disable=not self.show_progress,
            desc="Neuron Shapley",
            unit="chain",
        )
        try:
            while True:
                active = self.rule.active(self.stats.mean, self.radius())
                n_active = int(active.sum())
                self.converged = n_active == 0
                self.elapsed = time.monotonic() - start
                if self.converged or self.budget.exhausted(
                    self.game.n_evaluations, self.n_permutations, self.elapsed
                ):
                    break
                self.history.append(
                    [self.n_permutations, self.game.n_evaluations, n_active]
                )
                chains = self.sampler.sample(active, self.budget.max_evaluations)
                for units, marginals in chains:
                    self.stats.update(units, marginals)
                    if marginals.numel():
                        self.observed[0] = min(self.observed[0], marginals.min())
                        self.observed[1] = max(self.observed[1], marginals.max())
                    self.n_permutations += 1
                    bar.update(1)
                bar.set_postfix(active=n_active, evals=self.game.n_evaluations)
                if self.checkpoint is not None and (
                    time.monotonic() - last_save >= self.checkpoint_interval
                ):
                    self.elapsed = time.monotonic() - start
                    self.save(self.checkpoint)
                    last_save = time.monotonic()
        finally:
            bar.close()
        self.elapsed = time.monotonic() - start
        if self.checkpoint is not None:
            self.save(self.checkpoint)
        return self

    # -- checkpoint ----------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {
            "fingerprint": dict(self.fingerprint),
            "stats": self.stats.state_dict(),
            "generator": self.sampler.generator.get_state(),
            "n_permutations": self.n_permutations,
            "game": self.game.state(),
            "elapsed": self.elapsed,
            "observed": self.observed.clone(),
            "history": self.history_tensor(),
        }

    def history_tensor(self) -> Tensor:
        r"""Rows of (permutations, evaluations, active units) before each round."""
        return torch.tensor(self.history, dtype=torch.float64).reshape(-1, 3)

    def save(self, path: str) -> None:
        atomic_save(self.state_dict(), path)

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
        self.sampler.generator.set_state(state["generator"])
        self.n_permutations = int(state["n_permutations"])
        self.game.n_evaluations = int(state["game"]["n_evaluations"])
        self.game.n_forward = int(state["game"]["n_forward"])
        self.elapsed = float(state["elapsed"])
        self.observed = state["observed"].to(torch.float64)
        self.history = state["history"].tolist()
