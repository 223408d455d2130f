"""Shipped metrics (batched == per-coalition) and removal utilities."""

import pytest
import torch

from captum_neuron_shapley import (
    Accuracy,
    ClassRecall,
    FilterShapley,
    NegativeCrossEntropy,
    SubgroupAccuracy,
)
from captum_neuron_shapley.ablation import (
    metric_after_removal,
    removal_curve,
    remove_units,
)


def test_metrics_by_hand():
    out = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([0, 1, 1, 1])
    assert Accuracy()(out, y) == 0.75
    assert ClassRecall(1)(out, y) == pytest.approx(2 / 3)
    assert SubgroupAccuracy()(out, (y, torch.tensor([0, 0, 1, 1]).bool())) == 0.5
    ce = torch.nn.functional.cross_entropy(out, y).item()
    assert NegativeCrossEntropy()(out, y) == pytest.approx(-ce)
    batched = Accuracy().batched(torch.stack([out, -out]), y)
    assert batched.tolist() == [0.75, 0.25]
    with pytest.raises(ValueError, match="no example of class 5"):
        ClassRecall(5)(out, y)


def test_remove_units_matches_the_game(tiny, tiny_data):
    (x, y), (xt, yt) = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    res = fs.attribute(x, target=y, max_permutations=3, seed=0, return_result=True)
    game = fs.game(x, target=y)
    keep = torch.ones(1, 7, dtype=torch.bool)
    keep[0, [1, 5]] = False
    with remove_units(tiny, res, [1, 5]):
        acc = (tiny(x).argmax(1) == y).double().mean()
    assert acc == game.value(keep)[0]
    assert all(not m._forward_hooks for m in tiny.modules())
    vals = metric_after_removal(tiny, res, [[], [1, 5]], x, y)
    assert vals[0] == res.full_value and vals[1] == acc
    curve = removal_curve(tiny, res, xt, yt, ks=[0, 1, 7])
    assert curve.shape == (3,) and curve[0] > curve[2]
    with pytest.raises(ValueError, match="`units` must be flat unit indices"):
        metric_after_removal(tiny, res, [[7]], x, y)


def test_trained_digits_cnn_fresh_equals_cached(tmp_path, caplog):
    # A seed that does not ship is trained on a cold cache, with a message; the
    # next call loads it from the cache, silently. The trained model must look
    # like a loaded one: same weights, eval mode, no gradients left over.
    from captum_neuron_shapley.examples import trained_digits_cnn

    state = torch.random.get_rng_state()
    with caplog.at_level("WARNING", logger="captum_neuron_shapley"):
        fresh = trained_digits_cnn(cache_dir=tmp_path, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    assert len(caplog.records) == 1
    assert "training it now" in caplog.text and "DigitsCNN (seed 1)" in caplog.text
    assert [f.name for f in tmp_path.iterdir()] == ["digits_cnn_v1_seed1.pt"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="captum_neuron_shapley"):
        cached = trained_digits_cnn(cache_dir=tmp_path, seed=1)
    assert not caplog.records
    for model in (fresh, cached):
        assert not model.training
        assert all(p.grad is None for p in model.parameters())
    for a, b in zip(fresh.state_dict().values(), cached.state_dict().values()):
        assert torch.equal(a, b)
