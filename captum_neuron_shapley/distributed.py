r"""Running one estimate over several processes with ``torch.distributed``.

Each rank draws its own chains from a generator seeded independently (derived from
the user's seed and the rank); after every round the per-unit statistics of all
ranks are gathered and merged in rank order, so every rank holds the same
statistics, computes the same active set and stops in the same round. Counts of
evaluations and permutations are summed over ranks. Without an initialised process
group everything here reduces to the single-process case.
"""

from __future__ import annotations

from typing import Any, List

import torch
import torch.distributed as dist
from torch import Tensor

from .statistics import RunningStats

__all__ = ["Collective", "rank_seed"]

_GOLDEN = 0x9E3779B97F4A7C15


def rank_seed(seed: int, rank: int) -> int:
    r"""Independent seed of ``rank`` derived from ``seed`` (rank 0 keeps ``seed``)."""
    return (int(seed) + _GOLDEN * int(rank)) % (2**63)


class Collective:
    r"""The process group of the run (a group of one without ``torch.distributed``)."""

    def __init__(self) -> None:
        self.on: bool = dist.is_available() and dist.is_initialized()
        self.rank: int = dist.get_rank() if self.on else 0
        self.world: int = dist.get_world_size() if self.on else 1
        self.device: torch.device = torch.device("cpu")
        if self.on and dist.get_backend() == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())

    def _gather(self, t: Tensor) -> List[Tensor]:
        t = t.to(self.device)
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t)
        return [o.cpu() for o in out]

    def merge(self, stats: RunningStats, delta: RunningStats) -> None:
        r"""Merge every rank's ``delta`` into ``stats`` (in rank order, in place)."""
        if not self.on:
            stats.merge(delta)
            return
        packed = torch.stack([delta.count, delta.mean, delta.m2])
        for part in self._gather(packed):
            other = RunningStats(len(stats))
            other.count, other.mean, other.m2 = part[0], part[1], part[2]
            stats.merge(other)

    def _reduce(self, values: List[float], op: Any) -> List[float]:
        # op: a member of dist.ReduceOp (typed as its RedOpType)
        if not self.on:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=op)
        return t.cpu().tolist()

    def sum(self, values: List[float]) -> List[float]:
        r"""Element-wise sum over ranks."""
        return self._reduce(values, dist.ReduceOp.SUM)

    def max(self, values: List[float]) -> List[float]:
        r"""Element-wise maximum over ranks."""
        return self._reduce(values, dist.ReduceOp.MAX)

    def gather_states(self, state: Tensor) -> Tensor:
        r"""Every rank's generator state, stacked (rank-major)."""
        if not self.on:
            return state.unsqueeze(0)
        return torch.stack(self._gather(state))

    def barrier(self) -> None:
        if self.on:
            dist.barrier()
