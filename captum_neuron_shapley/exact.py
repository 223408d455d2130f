r"""Exact values of small games by enumerating every coalition.

For games with up to :data:`MAX_EXACT_UNITS` units, :func:`exact_values`
evaluates all ``2^n`` coalitions and returns the Shapley values, or, with a
truncation threshold, the exact expectation that the truncated permutation
chains of :mod:`captum_neuron_shapley.sampler` estimate. It is the ground truth
of the tests and of ``python -m comparisons coverage``.

Truncated target. A chain removes units in a uniformly random order and counts a
unit's marginal contribution only while every state so far (the intact model
included) is above the threshold. With ``f(S)`` the probability that a random
order passes through the coalition ``S`` with every state above the threshold,

.. math::
    f(N) = [V(N) > t], \qquad
    f(S) = [V(S) > t] \sum_{j \notin S} \frac{f(S \cup \{j\})}{|S| + 1},

    \phi^t_i = \sum_{S \ni i} \frac{f(S)}{|S|} \bigl(V(S) - V(S \setminus \{i\})\bigr),

which is the Shapley value when no state falls to the threshold. (The bandit only
evaluates states around active units, so once units leave the active set a chain
checks the threshold less often; the estimate can then drift from this target
in games where the metric recovers after falling to the threshold.)
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .game import UnitGame

__all__ = ["exact_values", "MAX_EXACT_UNITS"]

MAX_EXACT_UNITS = 16


def _popcount(masks: Tensor, n: int) -> Tensor:
    bits = (masks.unsqueeze(1) >> torch.arange(n)) & 1
    return bits.sum(1)


def exact_values(
    game: UnitGame, truncation: Optional[float] = None, batch: int = 256
) -> Tensor:
    r"""Exact (truncated) Shapley values of every unit of ``game``.

    Args:
        game (UnitGame): A game with at most :data:`MAX_EXACT_UNITS` units.
        truncation (float, optional): The threshold of the truncated chains
            (as ``ShapleyResult.truncation``); None gives the Shapley values.
        batch (int): Coalitions per call of ``game.value``.

    Returns:
        Tensor: float64 of shape ``(n_units,)``, in the order of
        ``ShapleyResult.flat_values``.

    Examples::

        >>> game = FilterShapley(model, model.conv1).game(x, target=y)
        >>> phi = exact_values(game)  # 2^n coalitions
    """
    n = game.n_units
    if n > MAX_EXACT_UNITS:
        raise ValueError(
            f"exact enumeration needs 2^n coalitions; the game has {n} units "
            f"(at most {MAX_EXACT_UNITS})"
        )
    size = 1 << n
    masks = torch.arange(size)
    values = torch.empty(size, dtype=torch.float64)
    for a in range(0, size, batch):
        m = masks[a : a + batch]
        keep = ((m.unsqueeze(1) >> torch.arange(n)) & 1).bool()
        values[a : a + batch] = game.value(keep)
    count = _popcount(masks, n)
    phi = torch.zeros(n, dtype=torch.float64)
    if truncation is None:
        fact = [math.factorial(k) for k in range(n + 1)]
        # weight of a coalition S containing i: (|S|-1)! (n-|S|)! / n!
        w = torch.tensor(
            [
                fact[s - 1] * fact[n - s] / fact[n] if s > 0 else 0.0
                for s in range(n + 1)
            ],
            dtype=torch.float64,
        )[count]
    else:
        alive = (values > truncation).to(torch.float64)
        f = torch.zeros(size, dtype=torch.float64)
        f[size - 1] = alive[size - 1]
        for s in range(n - 1, 0, -1):  # coalitions of s units, from the top
            level = masks[count == s]
            total = torch.zeros(level.numel(), dtype=torch.float64)
            for j in range(n):
                absent = ((level >> j) & 1) == 0
                total[absent] += f[level[absent] | (1 << j)]
            f[level] = alive[level] * total / (s + 1)
        w = f / count.clamp_min(1)
    for i in range(n):
        with_i = masks[((masks >> i) & 1) == 1]
        phi[i] = (w[with_i] * (values[with_i] - values[with_i ^ (1 << i)])).sum()
    return phi
