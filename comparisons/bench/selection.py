r"""Top-k selection inside the library's own bandit loop: the one place where
the benchmark plugs into how the library samples, through ``attribute``'s
public ``sampler=`` argument (no library attribute is replaced and no private
method overridden).

:class:`SelectingSampler` wraps the library's sampler (its permutation chains by
default) and lets a *selector* choose which of the active units the next round
samples; the estimates, their intervals and the stopping rule stay the
library's. The selectors:

- :func:`lucb_selector`: LUCB (Kalyanakrishnan et al. 2012): once every unit is
  explored, sample only the two arms at the boundary: the member of the current
  top-k with the lowest lower bound and the non-member with the highest upper
  bound.
- :func:`border_selector`: border-uncertainty sampling: the ``b`` active units
  whose intervals reach furthest across the boundary region.
- :func:`prior_selector`: a cheap gradient ranking (gradient x activation) only
  decides which units are explored first.
- :func:`screening_selector`: prior-ordered screening for big layers: explore
  the units a block at a time in the order of a cheap ranking, each block
  sampled together with the current contenders for the top-k, so that a chain
  evaluates only the states around a few dozen units.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import torch

from captum_neuron_shapley import PermutationSampler, Sampler
from captum_neuron_shapley.game import UnitGame
from captum_neuron_shapley.stopping import Limits
from torch import Tensor

__all__ = [
    "SelectingSampler",
    "selecting",
    "lucb_selector",
    "border_selector",
    "prior_selector",
    "screening_selector",
]

#: ``selector(run, active) -> mask`` of the units the next round samples.
Selector = Callable[[Any, Tensor], Tensor]


class SelectingSampler(Sampler):
    r"""The library's sampler (default: its permutation chains) with a
    ``selector(run, active) -> mask`` choosing which of the active units the
    next round samples (all of them when it chooses none). It changes which
    marginals are drawn, never how they are averaged, nor the stopping rule.
    ``run`` is the library's running estimator (its statistics, intervals and
    bound)."""

    def __init__(
        self,
        selector: Selector,
        inner: Optional[Sampler] = None,
    ) -> None:
        self.selector = selector
        self.inner = PermutationSampler() if inner is None else inner
        self.name = self.inner.name

    def bind(
        self,
        game: UnitGame,
        generator: torch.Generator,
        truncation: Optional[float] = None,
        paper: bool = False,
    ) -> Sampler:
        bound = super().bind(game, generator, truncation, paper)
        assert isinstance(bound, SelectingSampler)
        bound.inner = self.inner.bind(game, generator, truncation, paper)
        return bound

    @property
    def truncation(self) -> Optional[float]:
        return self.inner.truncation

    @property
    def min_samples(self) -> int:
        return self.inner.min_samples

    @property
    def batch_size(self) -> Any:
        r"""The inner sampler's examples per chain (``result.cost`` reports
        it)."""
        return getattr(self.inner, "batch_size", None)

    def chain_cost(self) -> Optional[float]:
        return self.inner.chain_cost()

    def settings(self) -> Dict[str, Any]:
        return {**self.inner.settings(), "selector": repr(self.selector)}

    def state_dict(self) -> Dict[str, Tensor]:
        return self.inner.state_dict()

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        self.inner.load_state_dict(state)

    def sample(self, active: Tensor, limits: Limits, run: Any = None) -> Any:
        chosen = self.selector(run, active) & active
        return self.inner.sample(chosen if bool(chosen.any()) else active, limits, run)


def selecting(selector: Selector) -> SelectingSampler:
    r"""The library's default sampler, choosing with ``selector``."""
    return SelectingSampler(selector)


def _bounds(est) -> Tuple[Tensor, Tensor, Tensor]:
    mean = est.stats.mean
    rad = est.radius()
    return mean, mean - rad, mean + rad


def lucb_selector(top_k: int) -> Callable:
    r"""LUCB's two arms once every unit has its ``min_samples``: the current top-k
    member with the lowest lower bound and the best non-member's upper bound."""

    def select(est, active: Tensor) -> Tensor:
        if bool((est.stats.count < est.bound.min_samples).any()):
            return active
        mean, low, up = _bounds(est)
        top = torch.zeros_like(active)
        top[torch.topk(mean, top_k).indices] = True
        chosen = torch.zeros_like(active)
        low_top = torch.where(top & active, low, torch.inf)
        up_rest = torch.where(~top & active, up, -torch.inf)
        if bool(torch.isfinite(low_top).any()):
            chosen[low_top.argmin()] = True
        if bool(torch.isfinite(up_rest).any()):
            chosen[up_rest.argmax()] = True
        return chosen

    return select


def border_selector(top_k: int, width: Optional[int] = None) -> Callable:
    r"""Border-uncertainty sampling: once every unit has its ``min_samples``,
    the ``width`` (default ``top_k``, at least 2) active units whose intervals
    reach furthest across the boundary region ``boundary +- epsilon``."""
    width = width or max(2, top_k)

    def select(est, active: Tensor) -> Tensor:
        if bool((est.stats.count < est.bound.min_samples).any()):
            return active
        mean, low, up = _bounds(est)
        top = torch.topk(mean, top_k + 1).values
        boundary = 0.5 * (top[-2] + top[-1])
        eps = est.epsilon
        reach = torch.minimum(up - (boundary + eps), (boundary - eps) - low)
        reach = torch.where(active, reach, -torch.inf)
        chosen = torch.zeros_like(active)
        chosen[reach.argsort(descending=True)[:width]] = True
        return chosen

    return select


def prior_selector(prior: Tensor, pool: int) -> Callable:
    r"""Explore the ``pool`` units ranked highest by ``prior`` first: while any of
    them has fewer than ``min_samples`` samples, sample only those (that are
    active); then every active unit. The prior changes the order in which units
    are sampled, never their estimates."""
    first = torch.zeros(prior.numel(), dtype=torch.bool)
    first[torch.topk(prior, min(pool, prior.numel())).indices] = True

    def select(est, active: Tensor) -> Tensor:
        need = est.stats.count < est.bound.min_samples
        if bool((need & first & active).any()):
            return first & active
        return active

    return select


def screening_selector(
    prior: Tensor, top_k: int, block: Optional[int] = None
) -> Callable:
    r"""Prior-ordered screening. Units are explored in the order of ``prior``
    (highest first), ``block`` (default ``3 top_k``) at a time: each round
    samples the next ``block`` active units of that order that still lack
    ``min_samples``, together with the ``2 top_k`` active units of highest
    estimate among those already explored (the contenders for the top-k); once
    every unit is explored, only the contenders. A chain evaluates only the
    states around the selected units, so on a layer of thousands of units it
    costs a few dozen evaluations instead of thousands, and the units a good
    prior ranks high are measured first. Units not yet explored keep an
    infinite interval: the stopping rule cannot stop before every unit is
    explored, and the estimates are the library's (the prior changes which
    units are sampled, never how samples are averaged)."""
    order = prior.argsort(descending=True)
    block = block or 3 * top_k

    def select(est, active: Tensor) -> Tensor:
        need = est.stats.count < est.bound.min_samples
        pending = order[(need & active)[order]]
        chosen = torch.zeros_like(active)
        chosen[pending[:block]] = True
        explored = active & ~need
        if bool(explored.any()):
            mean = torch.where(explored, est.stats.mean, -torch.inf)
            n = min(2 * top_k, int(explored.sum()))
            chosen[torch.topk(mean, n).indices] = True
        return chosen & active

    return select
