r"""A big layer: ResNet-18 trained on the digits at 32 x 32 pixels (test accuracy
0.99), the 2,560 filters of its ``layer4`` (five convolutions) in one game for the
validation accuracy, with the library's defaults (mean removal, chains on random
batches of 64 examples, truncation at 5%).

- :func:`reference`: the values of a long run (many chains, all units sampled),
  the yardstick of the precision of shorter runs; made on a GPU when there is one.
- :func:`trajectory`: a run of one method for a wall-time budget, recording its
  running top-10 and the time, evaluations and examples it took to get there.

The model is trained by :func:`train_digits_resnet18` (about two minutes on a CPU
core) and cached next to the other example models.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from captum_neuron_shapley import Callback, FilterShapley, PermutationSampler
from captum_neuron_shapley.examples import _cache_dir, load_digits_splits
from torch import nn, Tensor

__all__ = [
    "digits32",
    "train_digits_resnet18",
    "trained_digits_resnet18",
    "layer4_convs",
    "reference",
    "trajectory",
    "precision",
]

_VERSION = 1
IMAGE = 32
K = 10


def digits32(x: Tensor) -> Tensor:
    r"""Digits ``(N, 1, 8, 8)`` as ``(N, 3, 32, 32)`` images (bilinear)."""
    up = F.interpolate(x, size=IMAGE, mode="bilinear", align_corners=False)
    return up.repeat(1, 3, 1, 1)


def train_digits_resnet18(seed: int = 0, epochs: int = 30) -> nn.Module:
    r"""torchvision's ResNet-18 (random init) trained on the digits' training
    split at 32 px: SGD with a one-cycle schedule and random shifts of up to 2
    pixels (deterministic; the global RNG state is left as it was)."""
    from torchvision.models import resnet18

    data = load_digits_splits()
    x, y = digits32(data.x_train), data.y_train
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = resnet18(weights=None, num_classes=10)
        opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9, weight_decay=5e-4)
        steps = epochs * math.ceil(len(x) / 64)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=steps)
        for _ in range(epochs):
            model.train()
            for idx in torch.randperm(len(x)).split(64):
                shift = torch.randint(-2, 3, (2,))
                xb = torch.roll(x[idx], (int(shift[0]), int(shift[1])), (2, 3))
                opt.zero_grad()
                F.cross_entropy(model(xb), y[idx]).backward()
                opt.step()
                sched.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def trained_digits_resnet18(
    cache_dir: Optional[Union[str, Path]] = None, seed: int = 0
) -> nn.Module:
    r"""The trained model, from the cache (trained and cached the first time)."""
    from torchvision.models import resnet18

    path = _cache_dir(cache_dir) / f"digits32_resnet18_v{_VERSION}_seed{seed}.pt"
    if path.exists():
        model = resnet18(weights=None, num_classes=10)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    print(f"training ResNet-18 on the digits at 32 px (seed {seed}, about 2 min)")
    model = train_digits_resnet18(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model


def layer4_convs(model: nn.Module) -> List[nn.Module]:
    r"""The five convolutions of ``layer4`` (2,560 filters)."""
    b0: Any = model.layer4[0]  # type: ignore[index]
    b1: Any = model.layer4[1]  # type: ignore[index]
    return [b0.conv1, b0.conv2, b0.downsample[0], b1.conv1, b1.conv2]


def game_data(device: str = "cpu") -> Tuple[nn.Module, FilterShapley, Tensor, Tensor]:
    r"""The model on ``device``, its :class:`FilterShapley` over ``layer4`` and
    the validation split (397 digits)."""
    model = trained_digits_resnet18().to(device)
    data = load_digits_splits()
    x, y = digits32(data.x_val).to(device), data.y_val.to(device)
    return model, FilterShapley(model, layer4_convs(model)), x, y


def epsilon(ref: Tensor) -> float:
    r"""The tolerance of the precision: the benchmark's rule (15% of the mean of
    the reference's three largest values, at least 0.0005)."""
    from .cells import game_epsilon

    return game_epsilon({"untruncated": ref})


def precision(values: Tensor, ref: Tensor, k: int = K, eps: float = 0.0) -> float:
    r"""Fraction of the top-``k`` of ``values`` whose reference value is within
    ``eps`` of the reference's k-th value or above it."""
    kth = torch.topk(ref, k).values[-1]
    top = torch.topk(values, k).indices
    return float((ref[top] >= kth - eps).double().mean())


def reference(
    device: str = "cpu",
    max_time: float = 600.0,
    max_chains: int = 100000,
    seed: int = 12345,
    perturbations_per_eval: int = 64,
    chains_per_round: int = 16,
) -> Dict[str, Any]:
    r"""Values of a long run with every unit in every chain (stratified cycles of
    4 chains, each cycle on its own random batch of 64 examples) until
    ``max_chains`` or ``max_time``: their means, standard errors and the run's
    cost."""
    _, fs, x, y = game_data(device)
    res = fs.attribute(
        x,
        target=y,
        epsilon=0.0,  # no unit leaves the chains
        sampler=PermutationSampler(chains_per_round=chains_per_round),
        perturbations_per_eval=perturbations_per_eval,
        max_permutations=max_chains,
        max_time=max_time,
        seed=seed,
        return_result=True,
    )
    return {
        "values": res.flat_values.clone(),
        "stderr": res.flat_stderr.clone(),
        "chains": res.n_permutations,
        "evaluations": res.n_evaluations,
        "examples": res.cost.examples,
        "seconds": res.cost.seconds,
        "full_value": res.full_value,
        "empty_value": res.empty_value,
        "truncation": res.truncation,
        "device": device,
        "seed": seed,
    }


def trajectory(
    ref: Tensor,
    seconds: float,
    seed: int,
    device: str = "cpu",
    eps: Optional[float] = None,
    **attribute_kwargs: Any,
) -> Dict[str, Any]:
    r"""The default top-10 run (with ``attribute_kwargs`` on top) for ``seconds``
    of wall time: its precision against ``ref`` after every round, with the
    seconds, evaluations and examples spent by then."""
    _, fs, x, y = game_data(device)
    eps = epsilon(ref) if eps is None else eps
    points: List[Tuple[float, int, int, float]] = []
    t0 = time.monotonic()

    def record(run: Any) -> None:
        points.append(
            (
                time.monotonic() - t0,
                run.n_evaluations,
                run.examples_evaluated,
                precision(run.stats.mean, ref, K, eps),
            )
        )

    kw: Dict[str, Any] = dict(top_k=K, perturbations_per_eval=8, max_time=seconds)
    kw.update(attribute_kwargs)
    res = fs.attribute(
        x, target=y, seed=seed, stop=Callback(record), return_result=True, **kw
    )
    return {
        "points": points,
        "converged": res.converged,
        "chains": res.n_permutations,
        "final_precision": precision(res.flat_values, ref, K, eps),
        "epsilon": eps,
    }
