r"""Per-unit running statistics of sampled marginal contributions (Welford),
mergeable across processes (Chan et al.)."""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

__all__ = ["RunningStats"]


class RunningStats:
    r"""Count, mean and sum of squared deviations of each unit's samples.

    Args:
        n (int): Number of units.
    """

    def __init__(self, n: int) -> None:
        self.count: Tensor = torch.zeros(n, dtype=torch.float64)
        self.mean: Tensor = torch.zeros(n, dtype=torch.float64)
        self.m2: Tensor = torch.zeros(n, dtype=torch.float64)

    def __len__(self) -> int:
        return int(self.count.numel())

    def update(self, units: Tensor, values: Tensor) -> None:
        r"""Add one sample ``values[i]`` for each unit ``units[i]`` (units distinct)."""
        values = values.to(torch.float64)
        self.count[units] += 1
        delta = values - self.mean[units]
        self.mean[units] += delta / self.count[units]
        self.m2[units] += delta * (values - self.mean[units])

    def merge(self, other: "RunningStats") -> "RunningStats":
        r"""Combine with the statistics of disjoint samples, in place."""
        n = self.count + other.count
        safe = n.clamp_min(1)
        delta = other.mean - self.mean
        self.m2 += other.m2 + delta.pow(2) * self.count * other.count / safe
        self.mean += delta * other.count / safe
        self.count = n
        return self

    @property
    def variance(self) -> Tensor:
        r"""Unbiased sample variance (0 where fewer than two samples)."""
        return torch.where(
            self.count > 1, self.m2 / (self.count - 1).clamp_min(1), 0.0
        ).clamp_min(0.0)

    @property
    def stderr(self) -> Tensor:
        r"""Standard error of each mean (``inf`` where fewer than two samples)."""
        se = (self.variance / self.count.clamp_min(1)).sqrt()
        return torch.where(self.count > 1, se, torch.inf)

    def state_dict(self) -> Dict[str, Tensor]:
        return {
            "count": self.count.clone(),
            "mean": self.mean.clone(),
            "m2": self.m2.clone(),
        }

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        for key in ("count", "mean", "m2"):
            value = state[key].to(torch.float64)
            if value.shape != self.count.shape:
                raise ValueError(
                    f"statistics for {value.numel()} units, expected {len(self)}"
                )
            setattr(self, key, value.clone())
