r"""Estimators measured by the benchmark (``python -m comparisons bench``) beside
the library's default, implemented here for the benchmark only. Each works on a
:class:`~captum_neuron_shapley.game.UnitGame` and reports its running estimate
through a callback ``record(n_evaluations, values)``, so that the benchmark
scores all of them the same way.

Sampling that lets each evaluated coalition inform every unit:

- :func:`msr`: maximum-sample-reuse Monte Carlo, regression-adjusted: the
  library's :class:`~captum_neuron_shapley.msr.MSRSampler`
  (``attribute(sampler="msr")``) with the bandit off: random coalitions
  stratified by size, each giving a sample of every unit.
- :func:`kernel_shap`: kernel SHAP regression (Lundberg & Lee 2017) with paired
  sampling (each coalition with its complement) and the efficiency constraint.
- :func:`stratified_svarm`: stratified SVARM (Kolpaczki et al., AAAI 2024): exact
  strata of sizes 1 and n - 1, then coalitions of uniformly random size; each
  updates the "with i" or "without i" stratum mean of every unit.

Comparable marginal contributions:

- :func:`cmcs_greedy`: comparable marginal contributions sampling (Kolpaczki,
  Nielen & Hüllermeier 2025) with greedy selection: one random coalition ``S``
  per step and ``V(S + i) - V(S)`` for every selected unit ``i`` outside it,
  so the selected units' marginals are measured against the same coalition.

Each can run on all examples or, through :class:`RandomBatches`, with every
coalition evaluated on its own random batch of examples (unbiased for a metric
that is a mean over examples, as none of them truncates).

Top-k selection for the library's own chains and bandit loop lives in
:mod:`comparisons.bench.selection`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from captum_neuron_shapley.game import UnitGame
from captum_neuron_shapley.msr import MSRSampler
from captum_neuron_shapley.stopping import Limits
from torch import Tensor

__all__ = ["msr", "kernel_shap", "stratified_svarm", "cmcs_greedy", "RandomBatches"]

Record = Callable[[int, Tensor], None]


class RandomBatches:
    r"""``game`` with every coalition of :meth:`value` evaluated on its own
    random batch of ``size`` examples (drawn as the library's chains draw
    theirs); everything else is the game's (``V(all)`` and ``V(none)`` on all
    examples, the counts). For a metric that is a mean over examples, ``V`` of a
    coalition on a random batch is an unbiased estimate of ``V`` on all of them.
    """

    def __init__(self, game: UnitGame, size: int, seed: int) -> None:
        self.game = game
        self.size = size
        self.generator = torch.Generator().manual_seed(seed + 7_919)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.game, name)

    def value(self, keep: Tensor, rows: Any = None) -> Tensor:
        batches = [self.game.draw(self.generator, self.size) for _ in keep]
        return self.game.value(keep, batches)


def _random_coalitions(sizes: Tensor, n: int, generator: torch.Generator) -> Tensor:
    r"""``(m, n)`` masks, row ``j`` a uniformly random coalition of ``sizes[j]``."""
    keys = torch.rand(sizes.numel(), n, generator=generator)
    ranks = keys.argsort(1).argsort(1)
    return ranks < sizes.unsqueeze(1)


def msr(
    game: UnitGame, budget: int, seed: int, record: Record, per_round: int = 8
) -> Tensor:
    r"""Maximum-sample-reuse Monte Carlo with the regression-adjusted control of
    :class:`MSRSampler`: the running mean of every unit's samples (one per
    evaluated coalition), recorded after every round of ``per_round``
    coalitions."""
    smp = MSRSampler(per_round).bind(game, torch.Generator().manual_seed(seed))
    start = game.n_evaluations
    total = torch.zeros(game.n_units, dtype=torch.float64)
    count = 0
    while game.n_evaluations - start < budget:
        samples, m = smp.sample(
            torch.ones(game.n_units, dtype=torch.bool),
            Limits(max_evaluations=start + budget),
        )
        if m == 0:
            break
        for _, y in samples:
            total += y
        count += m
        record(game.n_evaluations - start, total / count)
    return total / max(count, 1)


# -- kernel SHAP -------------------------------------------------------------------


def kernel_shap(
    game: UnitGame,
    budget: int,
    seed: int,
    record: Record,
    batch: int = 32,
) -> Tensor:
    r"""Kernel SHAP with paired sampling: coalition sizes drawn from the Shapley
    kernel's distribution (``p(t) ~ (n - 1) / (t (n - t))``, ``t = 1..n-1``), each
    coalition evaluated together with its complement; the values solve the
    least-squares fit of ``V(A) - V(0)`` by the sum of the values of ``A``'s units
    under the constraint that they add up to ``V(N) - V(0)`` (Lundberg & Lee 2017;
    Covert & Lee 2021 for the paired variant). Refit after every ``batch`` pairs."""
    n = game.n_units
    g = torch.Generator().manual_seed(seed)
    v0, v1 = game.empty_value(), game.full_value()
    t = torch.arange(1, n, dtype=torch.float64)
    p_size = (n - 1) / (t * (n - t))
    p_size /= p_size.sum()
    start = game.n_evaluations
    ata = 1e-9 * torch.eye(n, dtype=torch.float64)
    aty = torch.zeros(n, dtype=torch.float64)
    ones = torch.ones(n, dtype=torch.float64)
    phi = torch.full((n,), (v1 - v0) / n, dtype=torch.float64)
    while game.n_evaluations - start + 2 * batch <= budget:
        sizes = torch.multinomial(p_size, batch, replacement=True, generator=g) + 1
        keep = _random_coalitions(sizes, n, g)
        both = torch.cat([keep, ~keep])
        a = both.to(torch.float64)
        ata += a.T @ a
        aty += a.T @ (game.value(both) - v0)
        # minimise |a phi - y|^2 subject to sum(phi) = v1 - v0
        inv_aty = torch.linalg.solve(ata, aty)
        inv_one = torch.linalg.solve(ata, ones)
        lam = (float(ones @ inv_aty) - (v1 - v0)) / float(ones @ inv_one)
        phi = inv_aty - lam * inv_one
        record(game.n_evaluations - start, phi)
    return phi


# -- stratified SVARM ----------------------------------------------------------------


def stratified_svarm(
    game: UnitGame,
    budget: int,
    seed: int,
    record: Record,
    batch: int = 16,
) -> Tensor:
    r"""Stratified SVARM (Kolpaczki, Bengs, Muschalik & Hüllermeier, AAAI 2024).

    ``phi_i = (V(N) - V(0)) / n + (1/n) sum_{t=1}^{n-1} (mean V of size-t
    coalitions with i - mean V of size-t coalitions without i)``: the strata of
    sizes 1 and ``n - 1`` are computed exactly first (``2n`` evaluations), then
    coalitions of uniformly random size in ``2..n-2`` update the "with" stratum of
    every member and the "without" stratum of every other unit (a stratum still
    empty counts 0)."""
    n = game.n_units
    g = torch.Generator().manual_seed(seed)
    v0, v1 = game.empty_value(), game.full_value()
    start = game.n_evaluations
    eye = torch.eye(n, dtype=torch.bool)
    singles = game.value(eye)
    leave_out = game.value(~eye)
    s_in = torch.zeros(n, n + 1, dtype=torch.float64)
    c_in = torch.zeros(n, n + 1, dtype=torch.float64)
    s_all = torch.zeros(n + 1, dtype=torch.float64)
    c_all = torch.zeros(n + 1, dtype=torch.float64)
    d_exact = torch.zeros(n, dtype=torch.float64)
    if n > 1:
        d_exact += singles - (singles.sum() - singles) / (n - 1)
        d_exact += (leave_out.sum() - leave_out) / (n - 1) - leave_out
    if n == 2:
        d_exact /= 2  # sizes 1 and n - 1 coincide

    def estimate() -> Tensor:
        s_out = s_all.unsqueeze(0) - s_in
        c_out = c_all.unsqueeze(0) - c_in
        ok = (c_in > 0) & (c_out > 0)
        d = torch.where(ok, s_in / c_in.clamp_min(1) - s_out / c_out.clamp_min(1), 0.0)
        return (v1 - v0) / n + (d_exact + d[:, 2 : n - 1].sum(1)) / n

    phi = estimate()
    record(game.n_evaluations - start, phi)
    while n > 3 and game.n_evaluations - start + batch <= budget:
        sizes = torch.randint(2, n - 1, (batch,), generator=g)
        keep = _random_coalitions(sizes, n, g)
        v = game.value(keep)
        s_in.index_put_(
            (torch.arange(n).repeat(batch), sizes.repeat_interleave(n)),
            (keep.to(torch.float64) * v.unsqueeze(1)).flatten(),
            accumulate=True,
        )
        c_in.index_put_(
            (torch.arange(n).repeat(batch), sizes.repeat_interleave(n)),
            keep.to(torch.float64).flatten(),
            accumulate=True,
        )
        s_all.index_add_(0, sizes, v)
        c_all.index_add_(0, sizes, torch.ones_like(v))
        phi = estimate()
        record(game.n_evaluations - start, phi)
    return phi


# -- comparable marginal contributions ------------------------------------------------


def cmcs_greedy(
    game: UnitGame,
    budget: int,
    seed: int,
    record: Record,
    top_k: int,
    explore: int = 2,
    width: Optional[int] = None,
) -> Tensor:
    r"""Comparable marginal contributions sampling with greedy selection.

    Each step draws a coalition ``S`` (size ``s`` with probability proportional to
    ``1 / (n - s)``, ``s = 0..n-1``, then uniformly given its size, so that for
    every unit ``i`` outside ``S`` the coalition is a Shapley-distributed
    coalition of the other units) and evaluates ``V(S)`` and ``V(S + i)`` for
    every selected unit ``i`` outside ``S``: the selected units' marginal
    contributions are measured against the same coalition. For the first
    ``explore`` samples of every unit all units are selected; then greedily the
    ``width`` (default ``2 * top_k``) units whose mean is closest to the boundary
    between the current k-th and (k+1)-th estimates, in standard errors (each
    variance shrunk toward the pooled one with the weight of 2 samples, so that
    a unit whose first samples agree is not taken for certain)."""
    n = game.n_units
    width = width or min(n, 2 * top_k)
    g = torch.Generator().manual_seed(seed)
    start = game.n_evaluations
    s = torch.arange(n, dtype=torch.float64)
    p_size = 1.0 / (n - s)
    p_size /= p_size.sum()
    cnt = torch.zeros(n, dtype=torch.float64)
    mean = torch.zeros(n, dtype=torch.float64)
    m2 = torch.zeros(n, dtype=torch.float64)
    while True:
        if bool((cnt < explore).any()):
            chosen = cnt < explore
        else:
            # variances shrunk toward the pooled one, as the library's bounds do
            pooled = m2.sum() / (cnt - 1).clamp_min(0).sum().clamp_min(1)
            var = (m2 + 2 * pooled) / ((cnt - 1).clamp_min(0) + 2)
            se = (var / cnt.clamp_min(1)).sqrt() + 1e-12
            top = torch.topk(mean, top_k + 1).values
            boundary = 0.5 * (top[-2] + top[-1])
            score = (mean - boundary).abs() / se
            chosen = torch.zeros(n, dtype=torch.bool)
            chosen[score.argsort()[:width]] = True
        size = torch.multinomial(p_size, 1, generator=g)
        keep = _random_coalitions(size, n, g)[0]
        units = (chosen & ~keep).nonzero().flatten()
        if units.numel() == 0:
            continue
        cost = 1 + units.numel() - int(size.item() == 0)
        if game.n_evaluations - start + cost > budget:
            break
        masks = keep.unsqueeze(0).repeat(units.numel() + 1, 1)
        masks[torch.arange(1, units.numel() + 1), units] = True
        v = game.value(masks)
        marg = v[1:] - v[0]
        cnt[units] += 1
        delta = marg - mean[units]
        mean[units] += delta / cnt[units]
        m2[units] += delta * (marg - mean[units])
        record(game.n_evaluations - start, mean.clone())
    return mean
