"""Per-chain random batches (the default on large sets), DataLoaders read batch
by batch, and what a run costs in examples and seconds."""

import pytest
import torch

from captum_neuron_shapley import (
    ClassRecall,
    FilterShapley,
    NegativeCrossEntropy,
    PermutationSampler,
)
from captum_neuron_shapley.exact import exact_values
from captum_neuron_shapley.sampler import AUTO_BATCH_SIZE, auto_batch_size
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from .conftest import _blobs, train_tiny, Z_TOL


@pytest.fixture(scope="module")
def big():
    """The tiny CNN on 600 examples: large enough for per-chain batches."""
    g = torch.Generator().manual_seed(5)
    x, y = _blobs(600, g)
    return train_tiny(x[:300], y[:300]), x, y


def test_auto_batch_size_follows_the_metric_and_the_set(big, tiny, tiny_data):
    model, x, y = big
    fs = FilterShapley(model, [model.conv1, model.conv2])
    assert auto_batch_size(fs.game(x, target=y)) == AUTO_BATCH_SIZE
    # a ratio metric is not a mean over examples: every chain on all of them
    assert auto_batch_size(fs.game(x, target=y, metric=ClassRecall(1))) is None
    # a small set (a class's slice) keeps the whole set
    assert auto_batch_size(fs.game(x[:128], target=y[:128])) is None
    # accuracy with a small drop from V(all) to V(none): 40 examples per unit of
    # the drop, so that the truncation threshold (5% of it) stays two examples
    # above V(none) on a batch; the whole set once that is most of it
    game = fs.game(x, target=y)
    game.empty_value = lambda rows=None: game.full_value() - 0.2  # type: ignore
    size = auto_batch_size(game)
    assert size is not None and 200 <= size <= 201 and size * 0.05 * 0.2 >= 2
    game.empty_value = lambda rows=None: game.full_value() - 0.05  # type: ignore
    assert auto_batch_size(game) is None


def test_batched_chains_are_unbiased_for_the_whole_set_values(big):
    # without truncation the Shapley values are linear in the game, so chains on
    # random batches estimate the whole set's values: agreement with exact
    # enumeration on all 600 examples, within Z_TOL standard errors (which
    # include the batches' noise)
    model, x, y = big
    fs = FilterShapley(model, [model.conv1, model.conv2])
    metric = NegativeCrossEntropy()
    exact = exact_values(fs.game(x, target=y, metric=metric))
    res = fs.attribute(
        x,
        target=y,
        metric=metric,
        truncation=None,
        max_permutations=240,
        perturbations_per_eval=8,
        seed=0,
        return_result=True,
    )
    assert res.cost.batch_size == AUTO_BATCH_SIZE
    assert ((res.flat_values - exact).abs() <= Z_TOL * res.flat_stderr).all()
    # a batch is cheaper: examples through the model per coalition evaluated
    whole = fs.attribute(
        x,
        target=y,
        metric=metric,
        truncation=None,
        sampler=PermutationSampler(batch_size=None),
        max_permutations=240,
        perturbations_per_eval=8,
        seed=0,
        return_result=True,
    )
    per_eval = res.cost.examples / res.n_evaluations
    assert per_eval < whole.cost.examples / whole.n_evaluations / 4


def test_lockstep_chains_on_their_own_batches(big):
    # chains walked together, each on its own batch, give what they give walked
    # one by one; and they share forward passes
    model, x, y = big
    fs = FilterShapley(model, [model.conv1, model.conv2])
    game = fs.game(x, target=y, perturbations_per_eval=12)
    thr = game.empty_value() + 0.3 * (game.full_value() - game.empty_value())
    g = torch.Generator().manual_seed(0)
    perms = [torch.randperm(game.n_units, generator=g) for _ in range(4)]
    batches = [game.draw(g, 64) for _ in range(4)]
    active = torch.ones(game.n_units, dtype=torch.bool)
    smp = PermutationSampler(strata=1).bind(game, torch.Generator(), thr)
    passes = game.n_forward
    together = smp.walk(perms, active, batches)
    shared = game.n_forward - passes
    for (u1, m1), p, b in zip(together, perms, batches):
        u2, m2 = smp.chain(p, active, b)
        assert torch.equal(u1, u2) and torch.allclose(m1, m2, atol=1e-12)
    assert shared < game.n_forward - passes - shared  # fewer passes together


def test_examples_and_time_are_counted(big):
    model, x, y = big
    fs = FilterShapley(model, [model.conv1, model.conv2])
    res = fs.attribute(
        x,
        target=y,
        sampler=PermutationSampler(batch_size=None),
        max_permutations=8,
        seed=0,
        return_result=True,
    )
    # every evaluation pushes all 600 examples, plus the reference pass
    assert res.cost.examples == 600 * (res.n_evaluations + 1)
    assert res.cost.batch_size is None and res.cost.seconds > 0
    assert f"{res.cost.examples:,} examples through the model" in repr(res)


def test_dataloader_is_read_batch_by_batch(big):
    model, x, y = big
    fs = FilterShapley(model, [model.conv1, model.conv2])
    kw = dict(max_permutations=12, seed=0, return_result=True)
    a = fs.attribute(x, target=y, **kw)
    # the loader's own order and shuffling do not matter: the run draws its
    # batches from the dataset with its own seeded generator
    for shuffle in (False, True):
        loader = DataLoader(TensorDataset(x, y), batch_size=50, shuffle=shuffle)
        b = fs.attribute(loader, **kw)
        assert torch.allclose(a.flat_values, b.flat_values, atol=1e-12)
        assert b.cost.batch_size == a.cost.batch_size == AUTO_BATCH_SIZE
    # the dataset is never joined: every forward pass sees at most a batch
    seen = []
    hook = model.conv1.register_forward_pre_hook(lambda m, i: seen.append(len(i[0])))
    try:
        game = fs.game(DataLoader(TensorDataset(x, y), batch_size=50))
        game.value(torch.rand(3, game.n_units, generator=torch.Generator()) < 0.5)
    finally:
        hook.remove()
    assert max(seen) <= 3 * 50 and game.n_examples == 600


class _Stream(IterableDataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        return iter(zip(self.x, self.y))


def test_iterable_dataloader(big):
    model, x, y = big
    fs = FilterShapley(model, [model.conv1, model.conv2])
    loader = DataLoader(_Stream(x, y), batch_size=40)
    game = fs.game(loader)
    whole = fs.game(x, target=y)
    assert game.n_examples == 600
    assert game.full_value() == pytest.approx(whole.full_value())
    assert game.empty_value() == pytest.approx(whole.empty_value())
    keep = torch.rand(4, game.n_units, generator=torch.Generator()) < 0.5
    torch.testing.assert_close(game.value(keep), whole.value(keep))
    b = game.draw(torch.Generator(), 64)  # the next 64 examples the loader yields
    assert b.n == 64 and torch.equal(b.inputs[0], x[:64])
    res = fs.attribute(loader, max_permutations=4, seed=0, return_result=True)
    assert res.n_permutations == 4
    with pytest.raises(ValueError, match="per-example targets must come in its"):
        fs.attribute(DataLoader(_Stream(x, y), batch_size=40), target=y)
