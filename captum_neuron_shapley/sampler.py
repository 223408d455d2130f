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
from typing import Any, List, Optional, Tuple

import torch
from torch import Tensor

from .game import UnitGame

__all__ = ["ChainSampler", "truncation_threshold", "AUTO_TRUNCATION_FRACTION"]


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
    """

    def __init__(
        self,
        game: UnitGame,
        generator: torch.Generator,
        truncation: Optional[float] = None,
        patience: int = 1,
        subset_size: Optional[int] = None,
        antithetic: bool = False,
    ) -> None:
        self.game = game
        self.generator = generator
        self.truncation = truncation
        self.patience = patience
        self.subset_size = subset_size
        self.antithetic = antithetic

    def _subset(self) -> Optional[Tensor]:
        n = self.game.n_examples
        if self.subset_size is None or self.subset_size >= n:
            return None
        return torch.randperm(n, generator=self.generator)[: self.subset_size]

    def sample(
        self, active: Tensor, max_evaluations: Optional[int] = None
    ) -> List[Tuple[Tensor, Tensor]]:
        r"""Draw one chain (two if antithetic) and return, per chain, the active
        units it measured and their marginal contributions.

        With ``max_evaluations`` the walk stops once the game's evaluation count
        reaches it; the last chain is then partial and only the units it reached
        are returned (their marginals come from the larger coalitions early in the
        chain, a bias confined to that one chain).
        """
        perm = torch.randperm(self.game.n_units, generator=self.generator)
        idx = self._subset()
        chains = [perm, perm.flip(0)] if self.antithetic else [perm]
        out = []
        for p in chains:
            if (
                max_evaluations is not None
                and self.game.n_evaluations >= max_evaluations
            ):
                break
            out.append(self.chain(p, active, idx, max_evaluations))
        return out

    def chain(
        self,
        perm: Tensor,
        active: Tensor,
        idx: Optional[Tensor] = None,
        max_evaluations: Optional[int] = None,
    ) -> Tuple[Tensor, Tensor]:
        r"""Walk one removal order ``perm`` (until the game's evaluation count
        reaches ``max_evaluations``, if given); returns ``(units, marginals)``."""
        n = self.game.n_units
        pos = active[perm].nonzero().flatten()  # chain positions of active units
        if pos.numel() == 0:
            return pos, torch.zeros(0, dtype=torch.float64)
        rank = torch.empty(n, dtype=torch.long)
        rank[perm] = torch.arange(n)
        values = torch.full((n + 1,), float("nan"), dtype=torch.float64)
        values[0] = self.game.full_value(idx)
        needed = torch.unique(torch.cat([pos, pos + 1]))
        needed = needed[needed > 0]
        stop = self._walk(needed, rank, values, idx, max_evaluations)
        if stop is not None:
            values[stop + 1 :] = values[stop]
        marginals = values[pos] - values[pos + 1]
        measured = ~marginals.isnan()  # all of them unless the budget ran out
        return perm[pos[measured]], marginals[measured]

    def _walk(
        self,
        needed: Tensor,
        rank: Tensor,
        values: Tensor,
        idx: Optional[Tensor],
        max_evaluations: Optional[int],
    ) -> Optional[int]:
        r"""Evaluate the states at ``needed`` positions in order, batch by batch;
        returns the truncation position (or None)."""
        thr = self.truncation
        if thr is not None and values[0] <= thr:
            return 0
        below, a = 0, 0
        while a < needed.numel():
            step = self.game.perturbations_per_eval
            if max_evaluations is not None:
                step = min(step, max_evaluations - self.game.n_evaluations)
                if step <= 0:
                    return None
            p = needed[a : a + step]
            a += step
            keep = rank.unsqueeze(0) >= p.unsqueeze(1)  # present: not yet removed
            values[p] = self.game.value(keep, idx)
            if thr is None:
                continue
            for q in p.tolist():
                below = below + 1 if values[q] <= thr else 0
                if below >= self.patience:
                    return q
        return None


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
