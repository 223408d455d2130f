r"""Small games with exact values, shared by the tests, the coverage benchmark and
the estimator benchmark: a two-layer CNN with 7 filters trained on synthetic
blob images, and a random MLP with a 10-neuron hidden layer."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn, Tensor

__all__ = ["TinyCNN", "blobs", "train_tiny", "CoverageMLP", "mlp_data"]


class TinyCNN(nn.Module):
    r"""Two conv layers (4 and 3 filters) on 6x6 inputs, three classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(12, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


def blobs(n: int, gen: torch.Generator) -> Tuple[Tensor, Tensor]:
    r"""Three classes of 6x6 images: a bright blob in one of three places."""
    y = torch.randint(0, 3, (n,), generator=gen)
    x = 0.3 * torch.randn(n, 1, 6, 6, generator=gen)
    for c, (r, s) in enumerate([(0, 0), (3, 3), (0, 3)]):
        x[y == c, :, r : r + 3, s : s + 3] += 1.0
    return x, y


def train_tiny(x: Tensor, y: Tensor) -> TinyCNN:
    r""":class:`TinyCNN` trained to high accuracy (150 full-batch steps,
    deterministic; the global RNG state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TinyCNN()
        opt = torch.optim.Adam(model.parameters(), lr=0.02)
        for _ in range(150):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


class CoverageMLP(nn.Module):
    r"""6 inputs, a tanh layer of 10 neurons (the players), 4 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 10)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(10, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def mlp_data(n: int = 300) -> Tuple[CoverageMLP, Tensor, Tensor]:
    r"""A random :class:`CoverageMLP`, Gaussian inputs, and labels that are the
    model's own predictions with 15% replaced at random (so accuracy < 1)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = CoverageMLP().eval()
        x = torch.randn(n, 6)
    with torch.no_grad():
        y = model(x).argmax(1)
    g = torch.Generator().manual_seed(4)
    flip = torch.rand(n, generator=g) < 0.15
    y[flip] = torch.randint(0, 4, (int(flip.sum()),), generator=g)
    return model, x, y
