r"""The networks of the estimator benchmark (``python -m comparisons bench``).

All are trained on scikit-learn's handwritten digits in seconds on a CPU and cached
on disk next to the embedded digits CNN (nothing is downloaded):

- ``digits-cnn``: the embedded :class:`~captum_neuron_shapley.examples.DigitsCNN`,
  160 conv filters in four layers (values spread thin, a crowded top-10 boundary).
- ``digits-resnet``: :class:`DigitsResNet`, a small residual network with batch
  norm whose players are the 144 channels of its batch-norm layers. The stem's
  channels feed the residual stream that every later block reads, so a few of
  them stand out (bottleneck units).
- ``digits-mlp``: :class:`DigitsMLP`, 128 hidden neurons (NeuronShapley): many
  units with small, close values and marginals three times larger than the
  values, where chains cost about 126 evaluations and the top-k needs hundreds
  of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from captum_neuron_shapley.examples import _cache_dir, DigitsSplits
from torch import nn, Tensor

__all__ = [
    "DigitsResNet",
    "DigitsMLP",
    "trained_bench_net",
    "BenchGame",
    "GAMES",
    "bench_game",
    "reference",
]

_VERSION = 1
#: Version of the cached reference values (2: chains on all examples, as the
#: truncated target on all examples needs, whatever the sampler's default).
_REFERENCE_VERSION = 2


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: Optional[nn.Sequential] = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + skip)


class DigitsResNet(nn.Module):
    r"""A residual network for 8 x 8 digits: a 16-channel stem (then 2 x 2 max
    pooling), a 16-channel basic block at 4 x 4 and a 32-channel block at 2 x 2
    (with a 1 x 1 projection shortcut). Its six batch-norm layers have 144
    channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.pool0 = nn.MaxPool2d(2)
        self.block1 = _Block(16, 16, 1)
        self.block2 = _Block(16, 32, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool0(self.relu(self.bn(self.stem(x))))
        x = self.block2(self.block1(x))
        return self.fc(self.pool(x).flatten(1))

    @property
    def player_layers(self) -> List[nn.Module]:
        r"""The batch-norm layers (16 + 16 + 16 + 32 + 32 + 32 = 144 channels)."""
        b1, b2 = self.block1, self.block2
        assert b2.shortcut is not None
        return [self.bn, b1.bn1, b1.bn2, b2.bn1, b2.bn2, b2.shortcut[1]]


class DigitsMLP(nn.Module):
    r"""64 pixels, a hidden layer of ``hidden`` ReLU neurons (the players) and a
    linear head."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x.flatten(1))))

    @property
    def player_layers(self) -> List[nn.Module]:
        return [self.act]


def _train(model: nn.Module, splits: DigitsSplits, epochs: int, lr: float) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(splits.y_train)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(n).split(64):
            opt.zero_grad()
            loss = F.cross_entropy(model(splits.x_train[idx]), splits.y_train[idx])
            loss.backward()
            opt.step()
    model.zero_grad(set_to_none=True)
    model.eval()


_NETS = {"digits-resnet": (DigitsResNet, 15, 3e-3), "digits-mlp": (DigitsMLP, 30, 2e-3)}


def trained_bench_net(
    name: str,
    splits: DigitsSplits,
    cache_dir: Optional[Union[str, Path]] = None,
    seed: int = 0,
) -> nn.Module:
    r"""``"digits-resnet"`` or ``"digits-mlp"``, trained once on ``splits``
    (deterministic, the global RNG state is left as it was) and then loaded from
    the cache directory of :func:`~captum_neuron_shapley.examples.trained_digits_cnn`.
    """
    cls, epochs, lr = _NETS[name]
    path = _cache_dir(cache_dir) / f"bench_{name}_v{_VERSION}_seed{seed}.pt"
    model = cls()
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls()
        _train(model, splits, epochs, lr)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model


# -- the benchmark games -------------------------------------------------------


@dataclass
class BenchGame:
    r"""One game of the benchmark: a network, its player layers, a removal rule,
    the digits validation split (397 examples) and accuracy.

    Attributes:
        name (str): ``"<network>/<removal>"``.
        attr: The attribution object (``FilterShapley`` or ``NeuronShapley``).
        x, y: Evaluation inputs and labels.
        baselines (str): ``"zero"`` or ``"mean"``.
        n_reference (int): Truncated chains of its reference run.
    """

    name: str
    attr: Any
    x: Tensor
    y: Tensor
    baselines: str
    n_reference: int

    def game(self, perturbations_per_eval: int = 8):
        return self.attr.game(
            self.x,
            target=self.y,
            layer_baselines=self.baselines,
            perturbations_per_eval=perturbations_per_eval,
        )

    def attribute(self, **kwargs: Any):
        kwargs.setdefault("perturbations_per_eval", 8)
        return self.attr.attribute(
            self.x,
            target=self.y,
            layer_baselines=self.baselines,
            return_result=True,
            **kwargs,
        )


#: name: (network, removal, truncated chains of the reference)
GAMES: Dict[str, Tuple[str, str, int]] = {
    "digits-cnn/mean": ("digits-cnn", "mean", 800),
    "digits-cnn/zero": ("digits-cnn", "zero", 800),
    "digits-resnet/zero": ("digits-resnet", "zero", 1200),
    "digits-resnet/mean": ("digits-resnet", "mean", 1200),
    "digits-mlp/zero": ("digits-mlp", "zero", 2000),
}


def bench_game(name: str, splits: Optional[DigitsSplits] = None) -> BenchGame:
    r"""The :class:`BenchGame` called ``name`` (a key of :data:`GAMES`)."""
    from captum_neuron_shapley import FilterShapley, NeuronShapley
    from captum_neuron_shapley.examples import load_digits_splits, trained_digits_cnn

    net, removal, n_ref = GAMES[name]
    splits = splits or load_digits_splits()
    if net == "digits-cnn":
        model = trained_digits_cnn()
        attr: Any = FilterShapley(model, model.conv_layers)
    elif net == "digits-resnet":
        model = trained_bench_net(net, splits)
        attr = FilterShapley(model, cast(List[nn.Module], model.player_layers))
    else:
        model = trained_bench_net(net, splits)
        attr = NeuronShapley(model, cast(List[nn.Module], model.player_layers))
    return BenchGame(name, attr, splits.x_val, splits.y_val, removal, n_ref)


REFERENCE_SEED = 987_654
FULL_CHAINS = 100


def full_chain_values(game, n_chains: int, seed: int) -> Tuple[Tensor, Tensor]:
    r"""``n_chains`` untruncated removal orders and ``V`` at every state of each
    (``(C, n)`` orders, ``(C, n + 1)`` values)."""
    g = torch.Generator().manual_seed(seed)
    n = game.n_units
    perms = torch.empty(n_chains, n, dtype=torch.long)
    values = torch.empty(n_chains, n + 1, dtype=torch.float64)
    for c in range(n_chains):
        perm = torch.randperm(n, generator=g)
        rank = torch.empty(n, dtype=torch.long)
        rank[perm] = torch.arange(n)
        keep = rank.unsqueeze(0) >= torch.arange(n + 1).unsqueeze(1)
        perms[c], values[c] = perm, game.value(keep)
    return perms, values


def chain_marginals(
    perms: Tensor, values: Tensor, threshold: Optional[float]
) -> Tensor:
    r"""Per-chain marginal contributions ``(C, n)`` of full chains, truncated as the
    library's chains are (patience 1: the first state at or below ``threshold``
    ends the chain; later marginals are 0), or untruncated (None)."""
    n_chains, n = perms.shape
    out = torch.zeros(n_chains, n, dtype=torch.float64)
    pos = torch.arange(n)
    for c in range(n_chains):
        m = values[c, :-1] - values[c, 1:]
        if threshold is not None:
            below = (values[c, 1:] <= threshold).nonzero()
            if values[c, 0] <= threshold:
                m = torch.zeros_like(m)
            elif below.numel():
                m = torch.where(pos <= int(below[0]), m, torch.zeros_like(m))
        out[c, perms[c]] = m
    return out


def reference(bg: BenchGame, cache: bool = True) -> Dict[str, Any]:
    r"""Reference values of a benchmark game, from long runs independent of the
    benchmarked ones (their own seed), cached on disk:

    - ``truncated``: the target of truncated chains (``truncation="auto"``) on
      all examples: the mean of ``bg.n_reference`` chains on all examples,
      drawn in stratified cycles of 4 (each chain a uniformly random order, so
      the mean is unbiased);
    - ``untruncated``: the Shapley values: ``truncated`` plus the mean of what
      truncation drops (the marginals after the truncation point) over
      :data:`FULL_CHAINS` untruncated chains. Both parts are unbiased; the
      dropped part has a small variance, so few full chains suffice.

    Standard errors of both are kept (``*_se``). The target of chains on
    random batches is derived from these
    (:func:`~comparisons.bench.cells.target_values`).
    """
    from captum_neuron_shapley import PermutationSampler

    path = (
        _cache_dir(None)
        / f"bench_reference_{bg.name.replace('/', '_')}_v{_REFERENCE_VERSION}.pt"
    )
    if cache and path.exists():
        return torch.load(path, weights_only=True)
    res = bg.attribute(
        epsilon=0.0,
        seed=REFERENCE_SEED,
        max_permutations=bg.n_reference,
        sampler=PermutationSampler(strata=4, batch_size=None),
        perturbations_per_eval=16,
    )
    game = bg.game(16)
    perms, values = full_chain_values(game, FULL_CHAINS, REFERENCE_SEED + 1)
    dropped = chain_marginals(perms, values, None) - chain_marginals(
        perms, values, res.truncation
    )
    ref = {
        "truncated": res.flat_values.clone(),
        "truncated_se": res.flat_stderr.clone(),
        "untruncated": res.flat_values + dropped.mean(0),
        "untruncated_se": (
            res.flat_stderr.pow(2) + dropped.var(0) / FULL_CHAINS
        ).sqrt(),
        "threshold": torch.tensor(res.truncation),
        "full_value": torch.tensor(res.full_value),
        "empty_value": torch.tensor(res.empty_value),
        "chains": torch.tensor([bg.n_reference, FULL_CHAINS]),
        "evaluations": torch.tensor(res.n_evaluations + game.n_evaluations),
    }
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(ref, tmp)
        os.replace(tmp, path)
    return ref
