r"""The embedded default: scikit-learn's handwritten digits and a small CNN
trained on them in seconds (cached on disk). Nothing is downloaded."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DigitsSplits", "load_digits_splits", "DigitsCNN", "trained_digits_cnn"]

CACHE_ENV = "CAPTUM_NEURON_SHAPLEY_CACHE"
_VERSION = 1


@dataclass
class DigitsSplits:
    r"""Train / validation / test splits of the digits (8 x 8 images).

    The validation split is where Shapley values are estimated; the test split is
    held out for removal checks.
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor


def load_digits_splits(
    n_train: int = 1000, n_val: int = 397, seed: int = 0
) -> DigitsSplits:
    r"""Load scikit-learn's 1,797 digits as float tensors ``(N, 1, 8, 8)`` in
    ``[0, 1]`` and split them at random (fixed by ``seed``)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    tr, va, te = (
        perm[:n_train],
        perm[n_train : n_train + n_val],
        perm[n_train + n_val :],
    )
    return DigitsSplits(x[tr], y[tr], x[va], y[va], x[te], y[te])


class DigitsCNN(nn.Module):
    r"""Four 3 x 3 conv layers (16, 32, 48 and 64 filters: 160 in all) on 8 x 8
    digits, and a linear head. About 0.4 million multiply-adds per image, so that
    thousands of coalitions can be evaluated per minute on a laptop CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(32, 48, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.pool3 = nn.MaxPool2d(2)
        self.conv4 = nn.Conv2d(48, 64, 3, padding=1)
        self.relu4 = nn.ReLU()
        self.fc = nn.Linear(64 * 2 * 2, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.relu2(self.conv2(x))
        x = self.pool3(self.relu3(self.conv3(x)))
        x = self.relu4(self.conv4(x))
        return self.fc(x.flatten(1))

    @property
    def conv_layers(self) -> List[nn.Module]:
        return [self.conv1, self.conv2, self.conv3, self.conv4]


def _cache_dir(cache_dir: Optional[Union[str, Path]]) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "captum_neuron_shapley"


def train_digits_cnn(
    splits: DigitsSplits, epochs: int = 20, seed: int = 0, lr: float = 3e-3
) -> DigitsCNN:
    r"""Train :class:`DigitsCNN` on the training split (deterministic; the global
    RNG state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsCNN()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        n = len(splits.y_train)
        for _ in range(epochs):
            for idx in torch.randperm(n).split(64):
                opt.zero_grad()
                loss = F.cross_entropy(model(splits.x_train[idx]), splits.y_train[idx])
                loss.backward()
                opt.step()
    model.zero_grad(set_to_none=True)  # hand over a model like a loaded one
    return model.eval()


def trained_digits_cnn(
    cache_dir: Optional[Union[str, Path]] = None, seed: int = 0
) -> DigitsCNN:
    r"""The embedded default model: trained once (a few seconds on a CPU), then
    loaded from ``cache_dir`` (default ``$CAPTUM_NEURON_SHAPLEY_CACHE`` or
    ``~/.cache/captum_neuron_shapley``)."""
    path = _cache_dir(cache_dir) / f"digits_cnn_v{_VERSION}_seed{seed}.pt"
    model = DigitsCNN()
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    model = train_digits_cnn(load_digits_splits(), seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model
