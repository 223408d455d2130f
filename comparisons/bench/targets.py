r"""What chains on random batches estimate, and reference values for it.

A chain evaluated on its own random batch ``B`` of examples (the library's
default, ``PermutationSampler(batch_size="auto")``) walks the game ``V_B``, the
metric on ``B``. For a metric that is a mean over examples, ``E_B[V_B(S)] =
V(S)`` for every coalition, and the Shapley value is linear in the game, so
*untruncated* chains on batches estimate the Shapley values of the whole set
exactly. *Truncated* chains stop where ``V_B`` falls to the threshold, which
depends on the batch: their target is ``E_B[phi^t(V_B)]``, the mean over
batches of the truncated value on a batch. It differs from the truncated value
on the whole set, ``phi^t(V)``, by how differently truncation cuts on a batch.

- :func:`per_example_values`: the metric of every coalition on every example of
  a small game (``2^n`` coalitions), from which ``V_B`` of any batch is a mean.
- :func:`exact_batch_values`: ``E_B[phi^t(V_B)]`` on a small game: the exact
  truncated value (:func:`~captum_neuron_shapley.exact.exact_values`'s
  recursion) of ``n_batches`` random batches, averaged (a Monte Carlo mean over
  batches of exact values; its standard error is returned with it).
- :func:`chain_batch_values`: the same target on a game too big to enumerate:
  the Shapley values of a reference minus the mean of what truncation drops on
  untruncated chains, each on its own random batch (a control variate: the
  dropped part varies far less than a chain's marginals).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from captum_neuron_shapley.exact import MAX_EXACT_UNITS
from captum_neuron_shapley.game import UnitGame
from torch import Tensor

__all__ = ["per_example_values", "exact_batch_values", "chain_batch_values"]


def _all_masks(n: int) -> Tensor:
    masks = torch.arange(1 << n)
    return ((masks.unsqueeze(1) >> torch.arange(n)) & 1).bool()


def per_example_values(game: UnitGame, chunk: int = 64) -> Tensor:
    r"""``(2^n, N)``: the metric of every coalition on each example alone
    (coalition ``s`` holds the units whose bit is set in ``s``, as in
    :func:`~captum_neuron_shapley.exact.exact_values`).

    Raises ``ValueError`` when the game's metric is not a mean over examples
    (their mean must give ``V`` on the whole set)."""
    n = game.n_units
    if n > MAX_EXACT_UNITS:
        raise ValueError(f"the game has {n} units (at most {MAX_EXACT_UNITS})")
    keep = _all_masks(n)
    rows = [game.batch(torch.tensor([j])) for j in range(game.n_examples)]
    out = torch.empty(keep.shape[0], game.n_examples, dtype=torch.float64)
    for a in range(0, keep.shape[0], chunk):
        outputs = game.outputs(keep[a : a + chunk])
        for j, row in enumerate(rows):
            out[a : a + chunk, j] = game.score(outputs[:, j : j + 1], row)
    whole = game.value(keep[[0, -1, keep.shape[0] // 3]])
    mean = out[[0, -1, keep.shape[0] // 3]].mean(1)
    if not torch.allclose(whole, mean, atol=1e-9):
        raise ValueError(
            "the metric is not a mean over examples: per-example values do not "
            f"average to V ({mean.tolist()} against {whole.tolist()})"
        )
    return out


def _truncated_phi(values: Tensor, threshold: float, n: int) -> Tensor:
    r"""Exact truncated values ``(n, M)`` of ``M`` games given as ``(2^n, M)``
    values (the recursion of :func:`~captum_neuron_shapley.exact.exact_values`,
    vectorized over games)."""
    size = 1 << n
    masks = torch.arange(size)
    count = ((masks.unsqueeze(1) >> torch.arange(n)) & 1).sum(1)
    alive = (values > threshold).to(torch.float64)
    f = torch.zeros_like(values)
    f[size - 1] = alive[size - 1]
    for s in range(n - 1, 0, -1):
        level = masks[count == s]
        total = torch.zeros(level.numel(), values.shape[1], dtype=torch.float64)
        for j in range(n):
            absent = ((level >> j) & 1) == 0
            total[absent] += f[level[absent] | (1 << j)]
        f[level] = alive[level] * total / (s + 1)
    w = f / count.clamp_min(1).unsqueeze(1)
    phi = torch.empty(n, values.shape[1], dtype=torch.float64)
    for i in range(n):
        with_i = masks[((masks >> i) & 1) == 1]
        phi[i] = (w[with_i] * (values[with_i] - values[with_i ^ (1 << i)])).sum(0)
    return phi


def exact_batch_values(
    game: UnitGame,
    threshold: Optional[float],
    batch_size: Optional[int],
    n_batches: int = 20000,
    seed: int = 0,
    chunk: int = 1000,
    per_example: Optional[Tensor] = None,
) -> Dict[str, Any]:
    r"""The target of truncated chains on random batches of ``batch_size``
    examples, ``E_B[phi^t(V_B)]``, on a small game: exact truncated values of
    ``n_batches`` batches drawn as the sampler draws them (uniformly, without
    replacement), averaged.

    Args:
        game (UnitGame): A game with at most 16 units and a mean-over-examples
            metric.
        threshold (float, optional): The truncation threshold (None: the
            Shapley values, exact with no batch noise by linearity).
        batch_size (int, optional): Examples per batch (None or at least all
            examples: the whole set, exactly).
        n_batches (int): Batches averaged.
        seed (int): Seed of the batches.
        chunk (int): Batches per vectorized step.
        per_example (Tensor, optional): :func:`per_example_values` of the game,
            if already computed.

    Returns:
        dict: ``values`` (float64 ``(n_units,)``), ``se`` (their Monte Carlo
        standard errors; zeros when exact), ``batches`` (batches averaged).
    """
    from captum_neuron_shapley.exact import exact_values

    n, n_ex = game.n_units, game.n_examples
    if threshold is None or batch_size is None or batch_size >= n_ex:
        vals = exact_values(game, threshold)
        return {"values": vals, "se": torch.zeros_like(vals), "batches": 0}
    pe = per_example_values(game) if per_example is None else per_example
    g = torch.Generator().manual_seed(seed)
    total = torch.zeros(n, dtype=torch.float64)
    total2 = torch.zeros(n, dtype=torch.float64)
    done = 0
    while done < n_batches:
        m = min(chunk, n_batches - done)
        idx = torch.rand(m, n_ex, generator=g).argsort(1)[:, :batch_size]
        sel = torch.zeros(m, n_ex, dtype=torch.float64)
        sel.scatter_(1, idx, 1.0 / batch_size)
        values = pe @ sel.T  # (2^n, m): V_B of every coalition on every batch
        phi = _truncated_phi(values, threshold, n)
        total += phi.sum(1)
        total2 += phi.pow(2).sum(1)
        done += m
    mean = total / done
    var = (total2 / done - mean.pow(2)).clamp_min(0) * done / max(done - 1, 1)
    return {"values": mean, "se": (var / done).sqrt(), "batches": done}


def chain_batch_values(
    game: UnitGame,
    shapley: Tensor,
    shapley_se: Tensor,
    threshold: float,
    batch_size: int,
    n_chains: int,
    seed: int,
) -> Dict[str, Any]:
    r"""The target of truncated chains on random batches on a game of any size:
    ``shapley - E[dropped]``, where ``dropped`` is what truncation (patience 1,
    as the library's chains) removes from an untruncated chain walked on its
    own random batch of ``batch_size`` examples (every state evaluated), over
    ``n_chains`` chains. Unbiased, since the truncated and untruncated
    marginals of a chain on a batch estimate the truncated target and the
    Shapley values.

    Args:
        game (UnitGame): The game (a mean-over-examples metric).
        shapley (Tensor): Reference Shapley values of the game.
        shapley_se (Tensor): Their standard errors.
        threshold (float): The truncation threshold.
        batch_size (int): Examples per chain.
        n_chains (int): Untruncated chains walked.
        seed (int): Seed of the orders and batches.

    Returns:
        dict: ``values``, ``se``, ``dropped_mean`` (the mean dropped part),
        ``chains``, ``evaluations``.
    """
    from .nets import chain_marginals

    g = torch.Generator().manual_seed(seed)
    n = game.n_units
    before = game.n_evaluations
    perms = torch.empty(n_chains, n, dtype=torch.long)
    values = torch.empty(n_chains, n + 1, dtype=torch.float64)
    for c in range(n_chains):
        perm = torch.randperm(n, generator=g)
        batch = game.draw(g, batch_size)
        rank = torch.empty(n, dtype=torch.long)
        rank[perm] = torch.arange(n)
        keep = rank.unsqueeze(0) >= torch.arange(n + 1).unsqueeze(1)
        perms[c], values[c] = perm, game.value(keep, batch)
    dropped = chain_marginals(perms, values, None) - chain_marginals(
        perms, values, threshold
    )
    return {
        "values": shapley - dropped.mean(0),
        "se": (shapley_se.pow(2) + dropped.var(0) / n_chains).sqrt(),
        "dropped_mean": dropped.mean(0),
        "chains": n_chains,
        "evaluations": game.n_evaluations - before,
    }
