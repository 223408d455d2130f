r"""Truncated permutation chains.

A chain draws a random order of the units and removes them one by one from the
intact model. The drop in the metric when a unit is removed is one sample of its
Shapley value (the coalition before removal is uniformly distributed in the
Shapley sense). Only the states around *active* units are evaluated: consecutive
inactive units are removed together without an evaluation. Once the metric falls
to the truncation threshold the chain stops and the remaining marginals count as 0.
The whole chain uses the same evaluation examples (paired differences).

:class:`CoalitionSampler` (``attribute(sampler="msr")``) samples differently:
random coalitions stratified by size, each of which gives a (regression-adjusted)
sample of every unit's untruncated Shapley value.
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .game import UnitGame

__all__ = [
    "ChainSampler",
    "CoalitionSampler",
    "make_sampler",
    "SAMPLERS",
    "resolve_strata",
    "truncation_threshold",
    "AUTO_TRUNCATION_FRACTION",
]


class _Walk:
    r"""The state of one chain: which states it needs, what it has measured."""

    def __init__(
        self, perm: Tensor, active: Tensor, v_full: float, thr: Optional[float]
    ) -> None:
        n = perm.numel()
        self.perm = perm
        self.pos = active[perm].nonzero().flatten()  # positions of active units
        self.rank = torch.empty(n, dtype=torch.long)
        self.rank[perm] = torch.arange(n)
        self.values = torch.full((n + 1,), float("nan"), dtype=torch.float64)
        self.values[0] = v_full
        needed = torch.unique(torch.cat([self.pos, self.pos + 1]))
        self.needed = needed[needed > 0]
        self.cursor, self.below = 0, 0
        self.stop: Optional[int] = None
        if self.pos.numel() == 0 or (thr is not None and v_full <= thr):
            self.stop = 0
            self.cursor = self.needed.numel()

    @property
    def remaining(self) -> int:
        r"""States still to evaluate (at most; truncation may stop it sooner)."""
        return self.needed.numel() - self.cursor

    @property
    def done(self) -> bool:
        return self.cursor >= self.needed.numel()

    def take(self, k: int) -> Tensor:
        r"""The next ``k`` positions to evaluate, as ``(k, n)`` present-unit masks."""
        p = self.needed[self.cursor : self.cursor + k]
        self.cursor += p.numel()
        self.pending = p
        return self.rank.unsqueeze(0) >= p.unsqueeze(1)  # present: not yet removed

    def record(self, values: Tensor, thr: Optional[float], patience: int) -> None:
        r"""Store the values of the last positions taken; check truncation."""
        self.values[self.pending] = values
        if thr is None:
            return
        for q, v in zip(self.pending.tolist(), values.tolist()):
            self.below = self.below + 1 if v <= thr else 0
            if self.below >= patience:
                self.stop, self.cursor = q, self.needed.numel()
                return

    def result(self) -> Optional[Tuple[Tensor, Tensor]]:
        r"""``(units, marginals)``, or None for a walk cut short by the budget."""
        if not self.done:
            return None
        values = self.values
        if self.stop is not None:
            values[self.stop + 1 :] = values[self.stop]
        return self.perm[self.pos], values[self.pos] - values[self.pos + 1]


class ChainSampler:
    r"""Draws truncated permutation chains over a :class:`UnitGame`.

    Args:
        game (UnitGame): The game.
        generator (torch.Generator): Source of all randomness (CPU).
        truncation (float, optional): Stop a chain once ``V`` is at most this
            value; ``None`` never truncates.
        patience (int): Number of consecutive evaluated states at or below the
            threshold before truncating (1; the original code used 6).
        subset_size (int, optional): Evaluate each chain on this many examples
            drawn at random without replacement (all examples if None).
        antithetic (bool): Pair each chain with its reversed order.
        strata (int): Draw chains in cycles of ``strata`` cyclic shifts of one
            random order (1: independent chains). Over a cycle every unit is
            removed once in each band of ``n / strata`` positions (exactly when
            ``strata`` divides ``n``, within a position otherwise), so the cycle's
            mean marginal is a stratified sample of the unit's Shapley value:
            unbiased (each chain is a uniformly random order), with the variance
            between bands of positions removed. Exclusive with ``antithetic``.
        chains_per_round (int): Sets of chains (one chain, an antithetic pair or
            a cycle of ``strata`` shifts) drawn per round and walked in lockstep, so
            that the states of several chains share each forward pass (of
            ``perturbations_per_eval`` coalitions). With ``subset_size`` each
            chain has its own examples and the chains are walked one by one.
    """

    def __init__(
        self,
        game: UnitGame,
        generator: torch.Generator,
        truncation: Optional[float] = None,
        patience: int = 1,
        subset_size: Optional[int] = None,
        antithetic: bool = False,
        chains_per_round: int = 1,
        strata: int = 1,
    ) -> None:
        if antithetic and strata > 1:
            raise ValueError(
                "`antithetic` and `strata` > 1 cannot be combined; choose one"
            )
        self.game = game
        self.generator = generator
        self.truncation = truncation
        self.patience = patience
        self.subset_size = subset_size
        self.antithetic = antithetic
        self.chains_per_round = chains_per_round
        self.strata = strata

    def _subset(self) -> Optional[Tensor]:
        n = self.game.n_examples
        if self.subset_size is None or self.subset_size >= n:
            return None
        return torch.randperm(n, generator=self.generator)[: self.subset_size]

    @property
    def set_size(self) -> int:
        r"""Chains whose marginals are averaged into one sample."""
        return 2 if self.antithetic else self.strata

    def _draw_set(self, size: int) -> List[Tensor]:
        r"""One random removal order and its companions: its reverse (antithetic),
        or its ``strata`` cyclic shifts by ``j * n / strata`` places, so that over
        the set every unit is removed once in each ``n / strata``-wide band of
        positions. Each order on its own is a uniformly random permutation."""
        n = self.game.n_units
        perm = torch.randperm(n, generator=self.generator)
        if self.antithetic:
            return [perm, perm.flip(0)][:size]
        return [perm.roll(j * n // self.strata) for j in range(size)]

    def sample(
        self,
        active: Tensor,
        max_evaluations: Optional[int] = None,
        max_chains: Optional[int] = None,
        deadline: Optional[float] = None,
    ) -> Tuple[List[Tuple[Tensor, Tensor]], int]:
        r"""Draw up to ``chains_per_round`` sets of chains (a set is one chain, an
        antithetic pair or a cycle of ``strata`` shifts; at most ``max_chains``
        chains in all, the last set cut short if needed) and walk them.

        Returns the samples, one ``(units, marginals)`` per set (the marginals of
        a unit along the set's chains are averaged into one sample, since they
        are not independent), and the number of chains completed. Chains cut short
        by ``max_evaluations`` (a limit on the game's evaluation count) are
        dropped: their evaluations count, their marginals, which come only from
        the large coalitions early in the chain, do not; a set whose chains were
        not all completed gives the mean of those that were. Chains still running
        at ``deadline`` (a ``time.monotonic()`` value) are cut short likewise.
        """
        limit = self.chains_per_round * self.set_size
        if max_chains is not None:
            limit = min(limit, max_chains)
        groups: List[Tuple[List[Tensor], Optional[Tensor]]] = []  # walked together
        sizes: List[int] = []  # chains per set, in walking order
        drawn = 0
        while drawn < limit:
            chains = self._draw_set(min(self.set_size, limit - drawn))
            drawn += len(chains)
            sizes.append(len(chains))
            idx = self._subset()  # one set, the same examples
            if idx is None and groups:
                groups[0][0].extend(chains)
            else:
                groups.append((chains, idx))
        walked: List[Optional[Tuple[Tensor, Tensor]]] = []
        for perms, idx in groups:
            walked.extend(self.walk(perms, active, idx, max_evaluations, deadline))
        done = sum(w is not None for w in walked)
        if self.set_size > 1:
            walked = self._set_means(walked, sizes)
        return [w for w in walked if w is not None], done

    def _set_means(
        self, walked: List[Optional[Tuple[Tensor, Tensor]]], sizes: List[int]
    ) -> List[Optional[Tuple[Tensor, Tensor]]]:
        r"""One sample per set: the mean of its completed chains' marginals (each
        chain is a uniformly random order; None when no chain of the set was
        completed)."""
        out: List[Optional[Tuple[Tensor, Tensor]]] = []
        i = 0
        for size in sizes:
            chains = [c for c in walked[i : i + size] if c is not None]
            i += size
            if not chains:
                out.append(None)
                continue
            dense = torch.zeros(len(chains), self.game.n_units, dtype=torch.float64)
            for row, (units, marginals) in zip(dense, chains):
                row[units] = marginals
            units = chains[0][0]
            out.append((units, dense[:, units].mean(0)))
        return out

    def chain(
        self,
        perm: Tensor,
        active: Tensor,
        idx: Optional[Tensor] = None,
        max_evaluations: Optional[int] = None,
    ) -> Optional[Tuple[Tensor, Tensor]]:
        r"""Walk one removal order ``perm``; returns ``(units, marginals)``, or
        None when ``max_evaluations`` cut it short."""
        return self.walk([perm], active, idx, max_evaluations)[0]

    def walk(
        self,
        perms: List[Tensor],
        active: Tensor,
        idx: Optional[Tensor] = None,
        max_evaluations: Optional[int] = None,
        deadline: Optional[float] = None,
    ) -> List[Optional[Tuple[Tensor, Tensor]]]:
        r"""Walk removal orders on the same examples in lockstep: each forward pass
        evaluates up to ``perturbations_per_eval`` states, shared fairly among the
        chains still running; truncation is checked per chain after each pass.
        Stops once the game's evaluation count reaches ``max_evaluations``; when
        what is left of it may not finish every chain, the chains are served in
        order instead, so that as many as possible complete. Stops (leaving the
        running chains unfinished) once ``time.monotonic()`` passes
        ``deadline``."""
        thr = self.truncation
        v_full = self.game.full_value(idx)
        walks = [_Walk(p, active, v_full, thr) for p in perms]
        while True:
            running = [w for w in walks if not w.done]
            budget = left = self.game.perturbations_per_eval
            if max_evaluations is not None:
                left = max_evaluations - self.game.n_evaluations
                budget = min(budget, left)
            if not running or budget <= 0:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            if left < sum(w.remaining for w in running):
                # the budget may not finish every chain: finish them in order, so
                # that as many as possible complete (a cut chain is dropped)
                share = budget
            else:
                share = -(-budget // len(running))  # fair share: ceil
            masks: List[Tensor] = []
            takers = []
            for w in running:
                k = min(share, budget - sum(m.shape[0] for m in masks))
                if k <= 0:
                    break
                masks.append(w.take(k))
                takers.append(w)
            values = self.game.value(torch.cat(masks), idx)
            start = 0
            for w, m in zip(takers, masks):
                w.record(values[start : start + m.shape[0]], thr, self.patience)
                start += m.shape[0]
        return [w.result() for w in walks]


DEFAULT_STRATA = 4


def resolve_strata(
    strata: Optional[int], antithetic: bool, independent: bool, n_units: int
) -> int:
    r"""The user's ``strata``, or the default: ``DEFAULT_STRATA`` shifts per cycle
    (at most ``n_units``), 1 with ``antithetic`` or when ``independent`` chains are
    wanted."""
    if strata is None:
        return 1 if antithetic or independent else min(DEFAULT_STRATA, n_units)
    if strata > n_units:
        raise ValueError(
            f"`strata` must be at most the number of units ({n_units}), got {strata}"
        )
    return strata


AUTO_TRUNCATION_FRACTION = 0.05


def truncation_threshold(
    truncation: Any, v_all: float, v_none: float
) -> Optional[float]:
    r"""The threshold a chain stops at, from the user's ``truncation``: a number,
    ``None`` (never) or ``"auto"``: ``AUTO_TRUNCATION_FRACTION`` of the way from
    ``V(none)`` to ``V(all)``, or no truncation when ``V(all) <= V(none)``."""
    if truncation is None:
        return None
    if isinstance(truncation, str):
        if truncation != "auto":
            raise ValueError(
                f"`truncation` must be a number, 'auto' or None, got {truncation!r}"
            )
        if v_all <= v_none:
            return None  # removing every unit does not hurt: nothing to truncate
        return v_none + AUTO_TRUNCATION_FRACTION * (v_all - v_none)
    if isinstance(truncation, bool) or not isinstance(truncation, (int, float)):
        raise ValueError(
            f"`truncation` must be a number, 'auto' or None, got {truncation!r}"
        )
    if not math.isfinite(truncation):
        raise ValueError(f"`truncation` must be finite, got {truncation}")
    if v_all <= truncation:
        raise ValueError(
            f"the intact model's metric ({v_all:.4g}) is already at or below "
            f"`truncation` ({truncation:.4g}): every chain would stop at once. Lower "
            "`truncation` or pass None"
        )
    return float(truncation)


class CoalitionSampler:
    r"""Maximum-sample-reuse sampling: random coalitions, stratified by size, each
    giving one sample of *every* unit's Shapley value.

    The Shapley value of unit ``i`` is

    .. math::
        \phi_i = \frac{V(N) - V(\emptyset)}{n} + \frac1n \sum_{t=1}^{n-1} D_{i,t},
        \qquad D_{i,t} = \mathbb E[V(A) \mid i \in A] - \mathbb E[V(A) \mid
        i \notin A]

    over uniformly random coalitions ``A`` of ``t`` units. A round draws sizes
    ``t`` with probabilities ``w_t`` and a uniformly random coalition of each
    size; with ``p = t / n`` and ``H_i = [i \in A] / p - [i \notin A] / (1 - p)``
    the sample of unit ``i`` is

    .. math::
        Y_i = \frac{(V(A) - c(A)) H_i + g_t \kappa_i}{n w_t}
        + \frac{V(N) - V(\emptyset)}{n},

    where the control ``c(A) = m_t + g_t (z(A) - t B / n)`` removes most of the
    variation of ``V`` between coalitions: ``m_t`` is the mean of ``V`` at size
    ``t`` (smoothed over neighbouring sizes), ``z(A)`` the sum of the current
    estimates ``b`` of the units in ``A``, ``B = \sum_j b_j``, and ``g_t`` a
    slope per band of sizes; ``\kappa_i = b_i - (B - b_i) / (n - 1)`` adds the
    control's own contribution back exactly (regression-adjusted Monte Carlo).
    The allocation ``w`` follows where ``V`` varies (Neyman allocation learnt
    from the residuals, mixed with the uniform one). Every fitted quantity
    comes from earlier rounds only, so ``E[Y_i] = phi_i`` exactly (no truncation:
    the target is the Shapley value itself), and the samples of one coalition add
    up to ``V(N) - V(\emptyset)``: the estimates satisfy efficiency at every
    step.

    Unlike permutation chains, whose marginal contributions are paired
    differences, ``Y`` is an unpaired contrast between coalitions; stratifying
    by size and the control make it competitive, and since every evaluation
    informs every unit it wins where marginals are small and noisy compared with
    the differences between units (many redundant units). The active set is
    ignored: every unit gets a sample from every coalition.

    Args:
        game (UnitGame): The game (at least 2 units).
        generator (torch.Generator): Source of all randomness (CPU).
        coalitions_per_round (int, optional): Coalitions evaluated per round
            (default: ``max(8, perturbations_per_eval)``).
        uniform_mix (float): Weight of the uniform size distribution in ``w``.
    """

    name = "msr"
    truncation = None
    subset_size = None
    antithetic = False
    strata = 1
    chains_per_round = 1
    set_size = 1

    def __init__(
        self,
        game: UnitGame,
        generator: torch.Generator,
        coalitions_per_round: Optional[int] = None,
        uniform_mix: float = 0.3,
    ) -> None:
        n = game.n_units
        if n < 2:
            raise ValueError(f"sampler='msr' needs at least 2 units, the game has {n}")
        self.game, self.generator, self.n = game, generator, n
        self.per_round = coalitions_per_round or max(8, game.perturbations_per_eval)
        self.uniform_mix = float(uniform_mix)
        self.v_all, self.v_none = game.full_value(), game.empty_value()
        self.sizes = torch.arange(n + 1, dtype=torch.float64)
        self.n_bands = min(8, n - 1)
        band = ((self.sizes - 1).clamp_min(0) * self.n_bands / (n - 1)).long()
        self.band = band.clamp(max=self.n_bands - 1)
        self.uniform = torch.zeros(n + 1, dtype=torch.float64)
        self.uniform[1:n] = 1.0 / (n - 1)
        # everything below is fitted on earlier rounds (the state of a checkpoint)
        self.state: Dict[str, Tensor] = {
            "w": self.uniform.clone(),
            "m": self.v_none + (self.v_all - self.v_none) * self.sizes / n,
            "g": torch.zeros(self.n_bands, dtype=torch.float64),
            "b": torch.zeros(n, dtype=torch.float64),
            "sum_v": torch.zeros(n + 1, dtype=torch.float64),
            "sum_r2": torch.zeros(n + 1, dtype=torch.float64),
            "count": torch.zeros(n + 1, dtype=torch.float64),
            "sum_y": torch.zeros(n, dtype=torch.float64),
            "zz": torch.zeros(self.n_bands, dtype=torch.float64),
            "zr": torch.zeros(self.n_bands, dtype=torch.float64),
        }

    def state_dict(self) -> Dict[str, Tensor]:
        return {k: v.clone() for k, v in self.state.items()}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        for k, v in self.state.items():
            if state[k].shape != v.shape:
                raise ValueError(f"sampler state {k!r} has the wrong shape")
            self.state[k] = state[k].to(torch.float64).clone()

    def sample(
        self,
        active: Tensor,
        max_evaluations: Optional[int] = None,
        max_chains: Optional[int] = None,
        deadline: Optional[float] = None,
    ) -> Tuple[List[Tuple[Tensor, Tensor]], int]:
        r"""Evaluate up to ``coalitions_per_round`` coalitions (fewer when
        ``max_evaluations``, a limit on the game's evaluation count, or
        ``max_chains``, here a number of coalitions, is smaller); returns one
        ``(all units, samples)`` per coalition and the number of coalitions."""
        m = self.per_round
        if max_evaluations is not None:
            m = min(m, max_evaluations - self.game.n_evaluations)
        if max_chains is not None:
            m = min(m, max_chains)
        if m <= 0:
            return [], 0
        t = torch.multinomial(self.state["w"], m, True, generator=self.generator)
        keys = torch.rand(m, self.n, generator=self.generator)
        keep = keys.argsort(1).argsort(1) < t.unsqueeze(1)
        v = self.game.value(keep)
        y, z, resid = self.contributions(keep, t, v)
        self._update(t, v, y, z, resid)
        units = torch.arange(self.n)
        return [(units, y[j]) for j in range(m)], m

    def contributions(
        self, keep: Tensor, t: Tensor, v: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor]:
        r"""``(m, n)`` samples of every unit from coalitions ``keep`` of sizes
        ``t`` with values ``v`` (and the control's covariate and residuals)."""
        st, n = self.state, self.n
        td = t.to(torch.float64)
        p = (td / n).unsqueeze(1)
        a = keep.to(torch.float64)
        h = a / p - (1 - a) / (1 - p)
        b = st["b"]
        big_b = float(b.sum())
        g = st["g"][self.band[t]]
        z = a @ b - td * big_b / n
        resid = v - st["m"][t] - g * z
        kappa = b - (big_b - b) / (n - 1)
        scale = (n * st["w"][t]).unsqueeze(1)
        y = (resid.unsqueeze(1) * h + g.unsqueeze(1) * kappa) / scale
        return y + (self.v_all - self.v_none) / n, z, resid

    def _update(self, t: Tensor, v: Tensor, y: Tensor, z: Tensor, r: Tensor) -> None:
        st, n = self.state, self.n
        st["sum_v"].index_add_(0, t, v)
        st["count"].index_add_(0, t, torch.ones_like(v))
        st["sum_r2"].index_add_(0, t, r.pow(2))
        st["sum_y"] += y.sum(0)
        # slopes of the residual of the size mean on z, per band of sizes
        r0 = v - st["m"][t]
        st["zz"].index_add_(0, self.band[t], z.pow(2))
        st["zr"].index_add_(0, self.band[t], z * r0)
        total = float(st["count"].sum())
        st["b"] = st["sum_y"] / total
        st["g"] = torch.where(st["zz"] > 0, st["zr"] / st["zz"].clamp_min(1e-300), 0.0)
        # size means: count-weighted moving average over neighbouring sizes
        num, den = self._smooth(st["sum_v"]), self._smooth(st["count"])
        line = self.v_none + (self.v_all - self.v_none) * self.sizes / n
        st["m"] = torch.where(den > 0, num / den.clamp_min(1e-300), line)
        st["m"][0], st["m"][n] = self.v_none, self.v_all
        # Neyman allocation from the residual spread, mixed with uniform
        if total >= 4 * self.per_round:
            var = self._smooth(st["sum_r2"]) / den.clamp_min(1)
            pooled = float(st["sum_r2"].sum()) / total
            var = torch.where(den > 0, var, pooled)
            p = self.sizes / n
            a = (var / (p * (1 - p)).clamp_min(1e-300)).sqrt()
            a[0] = a[n] = 0.0
            if float(a.sum()) > 0:
                mix = self.uniform_mix
                st["w"] = (1 - mix) * a / a.sum() + mix * self.uniform

    def _smooth(self, x: Tensor) -> Tensor:
        h = max(2, self.n // 40)
        kernel = torch.ones(1, 1, 2 * h + 1, dtype=torch.float64)
        return torch.nn.functional.conv1d(x.view(1, 1, -1), kernel, padding=h).view(-1)


#: The samplers ``attribute`` can use, by name.
SAMPLERS = ("chains", "msr")


#: ``min_samples`` default of ``sampler="msr"`` (coalitions): four rounds of 8.
MSR_MIN_SAMPLES = 32


def make_sampler(
    name: str,
    game: UnitGame,
    generator: torch.Generator,
    threshold: Optional[float],
    patience: int,
    subset_size: Optional[int],
    antithetic: bool,
    chains_per_round: int,
    strata: int,
    bound: Any,
    default_min_samples: bool,
) -> Any:
    r"""The sampler called ``name`` (one of :data:`SAMPLERS`) for ``attribute``;
    sets the bound's default ``min_samples`` for it when ``default_min_samples``
    (chains: 20 chains' worth, at least 5 samples; msr: :data:`MSR_MIN_SAMPLES`
    coalitions)."""
    if name not in SAMPLERS:
        raise ValueError(
            f"`sampler` must be one of {', '.join(map(repr, SAMPLERS))}, got {name!r}"
        )
    if name == "msr":
        for arg, bad in (
            ("subset_size", subset_size is not None),
            ("antithetic", antithetic),
            ("strata", strata > 1),
        ):
            if bad:
                raise ValueError(f"`{arg}` applies to sampler='chains' only")
        if default_min_samples and bound.asymptotic:
            bound.min_samples = MSR_MIN_SAMPLES
        return CoalitionSampler(game, generator)
    if default_min_samples and bound.asymptotic:  # 20 chains' worth
        bound.min_samples = max(5, -(-20 // (2 if antithetic else strata)))
    return ChainSampler(
        game,
        generator,
        threshold,
        patience,
        subset_size,
        antithetic,
        chains_per_round,
        strata,
    )
