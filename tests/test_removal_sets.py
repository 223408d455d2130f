"""Removal sets (refine="greedy"), the unit forms every removal helper accepts,
removal with the result's own baselines, stop reasons and max_time."""

import time

import pytest
import torch

from captum_neuron_shapley import (
    ablated,
    Callback,
    FilterShapley,
    GreedyRefine,
    NeuronShapley,
)
from captum_neuron_shapley.ablation import (
    metric_after_removal,
    removal_curve,
    removal_curves,
)
from captum_neuron_shapley.refine import greedy_removal
from captum_neuron_shapley.repair import export_repaired
from torch import nn


class Redundant(nn.Module):
    """Four units z = 1 (zero when removed) and V(S) = max(z0, z1) + 0.6 z2 +
    0.1 z3: units 0 and 1 back each other up. Shapley values 0.5, 0.5, 0.6, 0.1.

    Greedy removal of 2 units, by hand: first unit 2 (V 1.7 -> 1.1; removing 0
    or 1 alone changes nothing), then unit 3 (1.1 -> 1.0). The best pair is {0, 1}
    (V = 0.7), which a beam that keeps all four first steps finds."""

    def __init__(self):
        super().__init__()
        self.units = nn.Linear(1, 4)
        with torch.no_grad():
            self.units.weight.zero_()
            self.units.bias.fill_(1.0)

    def forward(self, x):
        z = self.units(x)
        v = torch.maximum(z[:, 0], z[:, 1]) + 0.6 * z[:, 2] + 0.1 * z[:, 3]
        return v.unsqueeze(1)


def mean_output(outputs, target):
    return float(outputs.mean())


@pytest.fixture
def redundant():
    model = Redundant().eval()
    ns = NeuronShapley(model, model.units)
    return model, ns, torch.zeros(8, 1)


def test_greedy_and_beam_follow_the_hand_computed_search(redundant):
    _, ns, x = redundant
    game = ns.game(x, metric=mean_output, layer_baselines="zero")
    order = [2, 0, 1, 3]  # Shapley order
    units, curve = greedy_removal(game, order, k=2)
    assert units == [2, 3]
    assert curve.tolist() == pytest.approx([1.7, 1.1, 1.0])
    before = game.n_evaluations
    units, curve = greedy_removal(game, order, k=2, beam=4)
    assert sorted(units) == [0, 1]
    assert curve.tolist() == pytest.approx([1.7, 1.7, 0.7])
    # step 1: 4 candidates; step 2: the 6 distinct pairs (duplicates skipped)
    assert game.n_evaluations - before == 4 + 6
    # a pool of the first 3 units of the order never sees unit 3
    units, _ = greedy_removal(game, order, k=2, pool_size=3)
    assert units == [2, 0]


def test_refine_gives_a_removal_set_and_counts_its_evaluations(redundant):
    _, ns, x = redundant
    kw = dict(
        metric=mean_output,
        top_k=2,
        truncation=None,
        max_permutations=40,
        seed=0,
        return_result=True,
    )
    plain = ns.attribute(x, **kw)
    res = ns.attribute(x, refine="greedy", **kw)
    assert plain.removal_set is None and plain.refine_evaluations == 0
    # additive units get their exact values; 0 and 1 split their joint 1.0 by
    # which of them each chain removes first (0.5 each in expectation)
    phi = res.flat_values.tolist()
    assert phi[2:] == pytest.approx([0.6, 0.1])
    assert phi[0] + phi[1] == pytest.approx(1.0) and abs(phi[0] - 0.5) < 0.1
    assert res.removal_set == [2, 3]
    assert res.removal_curve.tolist() == pytest.approx([1.7, 1.1, 1.0])
    assert res.refine_evaluations == 4 + 3  # pool of all 4 units, k = 2
    assert res.n_evaluations == plain.n_evaluations + res.refine_evaluations
    assert "removal set (2 units, 7 evaluations)" in repr(res)
    beam = ns.attribute(x, refine=GreedyRefine(beam=4), **kw)
    assert sorted(beam.removal_set) == [0, 1]  # the set answer...
    top2 = {i for _, i, _ in beam.top_units(2)}
    assert 2 in top2 and top2 != {0, 1}  # ...is not the top-2 by value
    # saved and loaded with the result
    assert type(beam).from_state_dict(beam.state_dict()).removal_set == beam.removal_set


def test_refine_bad_input(redundant):
    _, ns, x = redundant
    kw = dict(metric=mean_output, max_permutations=2, seed=0)
    with pytest.raises(ValueError, match="`refine` needs `top_k`"):
        ns.attribute(x, refine="greedy", **kw)
    with pytest.raises(ValueError, match="`refine` must be None, 'greedy' or a"):
        ns.attribute(x, top_k=2, refine="beam", **kw)
    with pytest.raises(ValueError, match="`refine_pool` must be at least `top_k`"):
        ns.attribute(x, top_k=2, refine=GreedyRefine(pool=1), **kw)
    with pytest.raises(ValueError, match="`refine_beam` must be a positive integer"):
        GreedyRefine(beam=0)


def test_refine_on_a_cnn_starts_with_the_best_single_removal(tiny, tiny_data):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    res = fs.attribute(
        x,
        target=y,
        top_k=2,
        refine="greedy",
        max_permutations=40,
        seed=0,
        return_result=True,
    )
    got = metric_after_removal(tiny, res, [res.top_units(2), res.removal_set], x, y)
    # the greedy set's first unit is the best single removal and its second the
    # best addition, so on the estimation data it is never worse than the top-2
    # by value when the top-1 by value is the best single removal
    game = fs.game(x, target=y)
    assert float(got[1]) == pytest.approx(float(res.removal_curve[-1]))
    single = torch.ones(7, 7, dtype=torch.bool)
    single[range(7), range(7)] = False
    assert res.removal_set[0] == int(game.value(single).argmin())


def test_every_helper_takes_every_unit_form_and_the_results_baselines(tiny, tiny_data):
    (x, y), (xt, yt) = tiny_data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    res = fs.attribute(
        x,
        target=y,
        top_k=2,
        refine="greedy",
        max_permutations=40,
        seed=0,
        return_result=True,
    )
    top = res.top_units(2)
    flat = res.flat_indices(top)
    assert flat == torch.argsort(res.flat_values, descending=True)[:2].tolist()
    assert res.flat_indices(torch.tensor(flat)) == flat
    assert res.flat_indices([(n, u) for n, u, _ in top]) == flat
    # the game's own removal (mean baselines) is what every helper applies
    game = fs.game(x, target=y)
    keep = torch.ones(1, 7, dtype=torch.bool)
    keep[0, flat] = False
    expected = float(game.value(keep)[0])
    forms = [top, flat, torch.tensor(flat), [(n, u) for n, u, _ in top]]
    got = metric_after_removal(tiny, res, forms, x, y)
    assert got.tolist() == pytest.approx([expected] * 4)
    with ablated(tiny, top, result=res) as m:
        by_ablated = float((m(x).argmax(1) == y).double().mean())
    spec = {}
    for name, uid, _ in top:
        spec.setdefault(name, []).append(uid)
    with ablated(tiny, spec, result=res) as m:
        by_spec = float((m(x).argmax(1) == y).double().mean())
    fixed = export_repaired(tiny, res, top)
    with torch.no_grad():
        by_export = float((fixed(x).argmax(1) == y).double().mean())
    assert by_ablated == by_spec == by_export == pytest.approx(expected)
    # zero removal would give another answer on this game: the check is real
    with ablated(tiny, spec, baselines=0.0) as m:
        zero_out = m(x)
    with ablated(tiny, spec, result=res) as m:
        assert not torch.allclose(zero_out, m(x))
    assert all(not mod._forward_hooks for mod in tiny.modules())
    curve = removal_curve(tiny, res, xt, yt, ks=[0, 1, 2], order="removal_set")
    curves = removal_curves(tiny, res, xt, yt, ks=[0, 1, 2, 3], seeds=[0])
    assert curves["removal_set"][:3].tolist() == curve.tolist()
    assert torch.isnan(curves["removal_set"][3])  # beyond the set's length


def test_unit_forms_bad_input(tiny, tiny_data):
    (x, y), _ = tiny_data
    res = FilterShapley(tiny, [tiny.conv1, tiny.conv2]).attribute(
        x, target=y, max_permutations=2, seed=0, return_result=True
    )
    with pytest.raises(ValueError, match=r"flat unit indices in \[0, 7\)"):
        res.flat_indices([7])
    with pytest.raises(ValueError, match="no unit 9 in layer 'conv1'"):
        res.flat_indices([("conv1", 9, 0.1)])
    with pytest.raises(ValueError, match="entries must be flat unit indices"):
        res.flat_indices([1.5])
    with pytest.raises(ValueError, match="wrap a single set in a list"):
        metric_after_removal(tiny, res, res.top_units(2), x, y)
    with pytest.raises(ValueError, match="pass `baselines` or `result`"):
        with ablated(tiny, res.top_units(2), baselines=0.0, result=res):
            pass
    with pytest.raises(ValueError, match="need `result=`"):
        with ablated(tiny, res.top_units(2)):
            pass
    with pytest.raises(ValueError, match="needs a result computed with refine"):
        removal_curve(tiny, res, x, y, ks=[0, 1], order="removal_set")


def test_stop_reasons(tiny, tiny_data):
    (x, y), _ = tiny_data
    fs = FilterShapley(tiny, tiny.conv1)
    kw = dict(target=y, seed=0, return_result=True)
    res = fs.attribute(x, stop=Callback(lambda est: True), **kw)
    assert res.stop_reason == "callback" and not res.converged
    assert "not converged: stopped by callback" in repr(res)
    assert fs.attribute(x, max_permutations=3, **kw).stop_reason == ("max_permutations")
    assert fs.attribute(x, max_evaluations=10, **kw).stop_reason == ("max_evaluations")
    done = fs.attribute(x, top_k=1, **kw)
    assert done.converged and done.stop_reason == "converged"
    assert "converged;" in repr(done)


class Slow(nn.Module):
    """40 units; every forward pass sleeps 20 ms."""

    def __init__(self):
        super().__init__()
        self.units = nn.Linear(3, 40)
        self.head = nn.Linear(40, 2)

    def forward(self, x):
        time.sleep(0.02)
        return self.head(self.units(x))


def test_max_time_is_checked_inside_a_round():
    torch.manual_seed(0)
    model = Slow().eval()
    x = torch.randn(16, 3)
    ns = NeuronShapley(model, model.units)
    t0 = time.monotonic()
    res = ns.attribute(
        x,
        target=torch.zeros(16, dtype=torch.long),
        truncation=None,
        max_time=0.5,
        seed=0,
        return_result=True,
    )
    wall = time.monotonic() - t0
    assert res.stop_reason == "max_time"
    # one round is a cycle of 4 chains of 40 passes (over 3 s): checking only
    # between rounds would overshoot by seconds; one pass is 20 ms
    assert wall < 0.5 + 0.35, wall
    assert res.n_permutations == 0  # chains cut short by the deadline are dropped
