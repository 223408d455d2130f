import itertools
import math

import pytest
import torch
from torch import nn

from captum_neuron_shapley.game import UnitGame

# Tolerance for "estimate agrees with the truth": |estimate - exact| <= Z_TOL * stderr.
# Marginals are bounded, so the sample mean is asymptotically normal; with at most
# ~20 units compared per test, P(any |Z| > 4.5) < 20 * 6.8e-6 ~ 1.4e-4 per test run.
# Seeds are fixed, so the tests are deterministic; the tolerance is what makes them
# meaningful rather than fitted.
Z_TOL = 4.5


def exact_shapley(game: UnitGame) -> torch.Tensor:
    """Exact Shapley values by enumerating all 2^n coalitions of the game."""
    n = game.n_units
    assert n <= 12
    masks = torch.tensor(list(itertools.product([False, True], repeat=n)))
    values = game.value(masks)
    index = {tuple(m.tolist()): v for m, v in zip(masks, values.tolist())}
    phi = torch.zeros(n, dtype=torch.float64)
    for i in range(n):
        for m in masks:
            if m[i]:
                continue
            s = int(m.sum())
            w = math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)
            with_i = m.clone()
            with_i[i] = True
            phi[i] += w * (index[tuple(with_i.tolist())] - index[tuple(m.tolist())])
    return phi


class TinyCNN(nn.Module):
    """Two conv layers (4 and 3 filters) on 6x6 inputs, three classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


def _blobs(n: int, gen: torch.Generator):
    """Three classes of 6x6 images: a bright blob in one of three places."""
    y = torch.randint(0, 3, (n,), generator=gen)
    x = 0.3 * torch.randn(n, 1, 6, 6, generator=gen)
    for c, (r, s) in enumerate([(0, 0), (3, 3), (0, 3)]):
        x[y == c, :, r : r + 3, s : s + 3] += 1.0
    return x, y


@pytest.fixture(scope="session")
def tiny_data():
    gen = torch.Generator().manual_seed(0)
    return _blobs(200, gen), _blobs(120, gen)


def train_tiny(x, y):
    """TinyCNN trained to high accuracy (150 full-batch steps, deterministic)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TinyCNN()
        opt = torch.optim.Adam(model.parameters(), lr=0.02)
        for _ in range(150):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def trained_tiny(tiny_data):
    (x, y), _ = tiny_data
    return train_tiny(x, y)


@pytest.fixture
def tiny(trained_tiny):
    """A fresh copy per test, so tests cannot leak state into each other."""
    model = TinyCNN()
    model.load_state_dict(trained_tiny.state_dict())
    return model.eval()


class MLP(nn.Module):
    def __init__(self, d_in=5, d_hidden=6, d_out=3):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(d_hidden, d_out)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))
