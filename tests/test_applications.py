"""The paper's applications on the embedded digits CNN, with small budgets.

The assertions check that every before/after number is what the model really does
(recomputed here independently with ``ablated``), not that a tiny-budget run
repairs the model.
"""

import warnings

import pytest
import torch

from captum_neuron_shapley.ablation import ablated
from captum_neuron_shapley.applications import (
    AdversarialVulnerability,
    adversarial_repair,
    class_specific_units,
    fairness_repair,
    ink_subgroup,
    pgd_attack,
)
from captum_neuron_shapley.examples import load_digits_splits, trained_digits_cnn

KW = dict(
    bound="fixed",
    perturbations_per_eval=8,
    max_evaluations=800,  # a few complete cycles of 4 chains (cut ones are dropped)
    subset_size=96,
    seed=0,
)


@pytest.fixture(scope="module")
def digits():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small model: thread overhead dominates
    yield trained_digits_cnn(), load_digits_splits()
    torch.set_num_threads(n)


def _acc(model, x, y, rep, sel=None):
    spec = {}
    for i in rep.removed:
        name, uid = rep.result.unit(i)
        spec.setdefault(name, []).append(uid)
    base = {lay.name: lay.baseline[:, 0, 0] for lay in rep.result.layers}
    with torch.no_grad(), ablated(model, spec, baselines=base):
        pred = model(x).argmax(1)
    sel = torch.ones_like(y, dtype=torch.bool) if sel is None else sel
    return float((pred[sel] == y[sel]).double().mean())


def _no_hooks(model):
    return all(not m._forward_hooks for m in model.modules())


def test_class_specific_units(digits):
    model, s = digits
    rep = class_specific_units(
        model,
        model.conv_layers,
        s.x_val,
        s.y_val,
        8,
        s.x_test,
        s.y_test,
        n_remove=5,
        **KW,
    )
    assert 0 < len(rep.removed) <= 5
    assert not set(rep.removed) & set(rep.extra["excluded"])
    assert all(v > 0 for _, _, v in rep.removed_units)
    assert len(rep.extra["excluded"]) == 32  # 20% of 160 filters
    is8 = s.y_test == 8
    with torch.no_grad():
        intact = float((model(s.x_test).argmax(1)[is8] == 8).double().mean())
    assert rep.before["recall"] == pytest.approx(intact)
    assert rep.after["recall"] == pytest.approx(
        _acc(model, s.x_test, s.y_test, rep, is8)
    )
    assert rep.after["accuracy_other_classes"] == pytest.approx(
        _acc(model, s.x_test, s.y_test, rep, ~is8)
    )
    assert "recall" in str(rep) and _no_hooks(model)


def test_fairness_repair_on_bold_digits(digits):
    model, s = digits
    g_val, g_test = ink_subgroup(s.x_val, s.x_train), ink_subgroup(s.x_test, s.x_train)
    assert 0.1 < float(g_test.double().mean()) < 0.35  # about the top 20% by ink
    rep = fairness_repair(
        model,
        model.conv_layers,
        s.x_val,
        s.y_val,
        g_val,
        s.x_test,
        s.y_test,
        g_test,
        n_remove=3,
        **KW,
    )
    assert len(rep.removed) <= 3
    assert all(v < 0 for _, _, v in rep.removed_units)
    assert rep.after["subgroup_accuracy"] == pytest.approx(
        _acc(model, s.x_test, s.y_test, rep, g_test)
    )
    assert rep.after["accuracy"] == pytest.approx(_acc(model, s.x_test, s.y_test, rep))
    with pytest.raises(ValueError, match="`in_group`"):
        fairness_repair(
            model, model.conv1, s.x_val, s.y_val, g_val[:5], s.x_test, s.y_test, g_test
        )


def test_adversarial_metric_and_attack(digits):
    model, s = digits
    out = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    y, goal = torch.tensor([0, 0, 0, 0]), torch.tensor([1, 1, 1, 1])
    adv = torch.tensor([False, False, True, True])
    assert AdversarialVulnerability()(out, (y, goal, adv)) == pytest.approx(0.5 - 0.5)
    assert AdversarialVulnerability(0.0)(out, (y, goal, adv)) == pytest.approx(0.5)
    x, yy = s.x_test[:40], s.y_test[:40]
    flags = [m.training for m in model.modules()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xa, g = pgd_attack(model, x, yy, eps=0.2, step_num=10)
    assert bool((g != yy).all()) and float((xa - x).abs().max()) <= 0.2 + 1e-6
    assert xa.min() >= 0 and xa.max() <= 1
    with torch.no_grad():
        success = float((model(xa).argmax(1) == g).double().mean())
    assert success > 0.3  # the attack works on the intact model
    assert flags == [m.training for m in model.modules()]
    assert all(p.grad is None for p in model.parameters())


def test_adversarial_repair_reports_real_numbers(digits):
    model, s = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = adversarial_repair(
            model,
            model.conv_layers,
            s.x_val[:80],
            s.y_val[:80],
            s.x_test[:60],
            s.y_test[:60],
            n_remove=4,
            step_num=8,
            **KW,
        )
    assert len(rep.removed) == 4
    assert rep.before["clean_accuracy"] == pytest.approx(
        float((model(s.x_test[:60]).argmax(1) == s.y_test[:60]).double().mean())
    )
    assert rep.after["clean_accuracy"] == pytest.approx(
        _acc(model, s.x_test[:60], s.y_test[:60], rep)
    )
    assert 0.0 <= rep.extra["fresh_attack_success"] <= 1.0
    assert rep.before["attack_success"] > 0.3
    assert _no_hooks(model) and all(p.grad is None for p in model.parameters())
