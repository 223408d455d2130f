r"""Truncated permutation chains.

A chain draws a random order of the units and removes them one by one from the
intact model. The drop in the metric when a unit is removed is one sample of its
Shapley value (the coalition before removal is uniformly distributed in the
Shapley sense). Only the states around *active* units are evaluated: consecutive
inactive units are removed together without an evaluation. Once the metric falls
to the truncation threshold the chain stops and the remaining marginals count as 0.
The whole chain uses the same evaluation examples (paired differences).
"""

from __future__ import annotations

import math
import time
from typing import Any, List, Optional, Tuple

import torch
from torch import Tensor

from .game import UnitGame

__all__ = [
    "ChainSampler",
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
