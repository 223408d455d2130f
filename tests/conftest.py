import itertools
import math

import pytest
import torch

from captum_neuron_shapley.game import UnitGame
from comparisons.games import blobs, TinyCNN, train_tiny  # noqa: F401
from torch import nn


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One intra-op thread for the whole suite: the models here are small, so
    threads cost more in synchronisation than they save, and on a loaded 2-core
    machine two threads per process made the suite ten times slower (831 s
    against 83 s, measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


# The tiny CNN and its data live in comparisons.games (the coverage benchmark
# uses them too).
_blobs = blobs


@pytest.fixture(scope="session")
def tiny_data():
    gen = torch.Generator().manual_seed(0)
    return _blobs(200, gen), _blobs(120, gen)


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
