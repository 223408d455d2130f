r"""Throughput: coalition evaluations per second against plain forward passes per
second of the unmodified model on the same examples, interleaved in blocks, with
every conv layer of the digits CNN ablated and with only the last one."""

from __future__ import annotations

import time
from typing import Any, Dict, List, Sequence

import torch

from captum_neuron_shapley import FilterShapley
from torch import nn

__all__ = ["throughput", "digits_throughput"]


def throughput(
    model: nn.Module,
    layers: Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    ppe: int,
    blocks: int = 9,
    per_block: int = 24,
) -> Dict[str, float]:
    r"""The median over ``blocks`` of the ratio of coalition evaluations per
    second to plain forwards per second (random coalitions, half the units
    removed)."""
    game = FilterShapley(model, list(layers)).game(
        x, target=y, perturbations_per_eval=ppe
    )
    g = torch.Generator().manual_seed(0)
    keep = torch.rand(per_block, game.n_units, generator=g) > 0.5
    ratios = []
    with torch.no_grad():
        model(x)
        game.value(keep[:8])  # warm up both paths
        for _ in range(blocks):
            t = time.perf_counter()
            for _ in range(per_block):
                model(x)
            plain = per_block / (time.perf_counter() - t)
            t = time.perf_counter()
            game.value(keep)
            ours = per_block / (time.perf_counter() - t)
            ratios.append((ours / plain, ours, plain))
    ratios.sort()
    r, ours, plain = ratios[len(ratios) // 2]
    return {
        "ratio": r,
        "evals_per_s": ours,
        "forwards_per_s": plain,
        "n_units": game.n_units,
    }


def digits_throughput() -> List[Dict[str, Any]]:
    r"""The digits CNN with all conv layers and with the last one ablated, at
    one and eight coalitions per forward pass."""
    from captum_neuron_shapley.examples import load_digits_splits, trained_digits_cnn

    data, model = load_digits_splits(), trained_digits_cnn()
    convs = model.conv_layers
    return [
        {
            "ablated": name,
            "perturbations_per_eval": ppe,
            **throughput(model, ls, data.x_val, data.y_val, ppe),
        }
        for name, ls in (("all conv layers", convs), ("last conv layer", convs[-1:]))
        for ppe in (1, 8)
    ]
