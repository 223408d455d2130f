r"""The evaluation protocol of comparisons/ on a synthetic game whose answer is
known, and its helpers on hand-worked values."""

import pytest
import torch

from captum_neuron_shapley import NeuronShapley
from comparisons.protocol import (
    agreement,
    area_under_curve,
    PairAccuracy,
    ranking,
    removal_evaluation,
    spearman,
    top_fraction,
    top_k_overlap,
)
from torch import nn


class Voters(nn.Module):
    r"""Six hidden units, unit j copies feature j; the output's class-1 logit is
    the weighted vote ``sum_j w_j h_j`` (class-0 logit 0). Feature j carries the
    label with strength ``s_j``, so unit j's importance grows with ``w_j s_j``."""

    def __init__(self, w) -> None:
        super().__init__()
        self.hidden = nn.Linear(6, 6, bias=False)
        self.head = nn.Linear(6, 2, bias=False)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.eye(6))
            self.head.weight.zero_()
            self.head.weight[1] = torch.as_tensor(w)

    def forward(self, x):
        return self.head(self.hidden(x))


@pytest.fixture(scope="module")
def voters():
    g = torch.Generator().manual_seed(0)
    strength = torch.tensor([0.05, 0.1, 0.2, 0.4, 0.8, 1.6])
    w = torch.ones(6)

    def data(n):
        y = torch.randint(0, 2, (n,), generator=g)
        x = (2 * y - 1)[:, None] * strength + torch.randn(n, 6, generator=g)
        return x, y

    (xv, yv), (xt, yt) = data(300), data(600)
    net = Voters(w).eval()
    res = NeuronShapley(net, net.hidden).attribute(
        xv,
        target=yv,
        layer_baselines="zero",
        max_permutations=2,
        seed=0,
        return_result=True,
    )
    truth = strength * w  # the known order of importance: unit 5 > 4 > ... > 0
    return net, res, xt, yt, truth


def test_removal_evaluation_orders_methods_by_the_truth(voters):
    net, res, xt, yt, truth = voters
    ev = removal_evaluation(
        net,
        res,
        {"truth": truth, "reversed": -truth},
        xt,
        yt,
        ks=(0, 1, 2, 3, 6),
        random_seeds=range(8),
    )
    assert ev["ks"] == [0, 1, 2, 3, 6]
    t, r = ev["methods"]["truth"], ev["methods"]["reversed"]
    assert t["top"][0] == r["top"][0] > 0.8  # intact model
    assert t["top"][-1] == r["top"][-1] == pytest.approx(0.5, abs=0.06)  # all gone
    # removing the truly important units first hurts sooner
    assert t["top"][1] < r["top"][1] and t["top"][2] < r["top"][2]
    assert t["auc_top"] < ev["random"]["auc_mean"] < r["auc_top"]
    # the bottom curve of the truth is the top curve of its reverse
    assert t["bottom"] == r["top"] and t["auc_bottom"] == r["auc_top"]
    rnd = ev["random"]
    assert len(rnd["curves"]) == 8 and len(rnd["mean"]) == 5
    assert rnd["std"][2] > 0 and rnd["std"][0] == 0


def test_removal_evaluation_respects_exclusion(voters):
    net, res, xt, yt, truth = voters
    ev = removal_evaluation(
        net,
        res,
        {"truth": truth},
        xt,
        yt,
        ks=(0, 1, 2, 10),
        random_seeds=range(3),
        exclude={"truth": [5, 4], "random": [5, 4]},
    )
    # only 4 units may be removed; the clipped k is reported
    assert ev["ks"] == [0, 1, 2, 4]
    # without units 5 and 4 removable, the drop is small
    assert ev["methods"]["truth"]["top"][2] > 0.8
    with pytest.raises(ValueError, match="scored 3 units"):
        removal_evaluation(net, res, {"bad": torch.zeros(3)}, xt, yt)


def test_shapley_ranking_recovers_the_known_order(voters):
    net, _, xt, yt, truth = voters
    res = NeuronShapley(net, net.hidden).attribute(
        xt,
        target=yt,
        metric=None,
        layer_baselines="zero",
        truncation=None,
        max_permutations=60,
        seed=1,
        return_result=True,
    )
    assert ranking(res.flat_values)[:2].tolist() == [5, 4]
    assert spearman(res.flat_values, truth) > 0.7


def test_area_under_curve_by_hand():
    # trapezoids: (1 + .5) / 2 * 1 + .5 * 2 = 1.75 over a range of 3
    assert area_under_curve([0, 1, 3], [1.0, 0.5, 0.5]) == pytest.approx(1.75 / 3)
    assert area_under_curve([5], [0.3]) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        area_under_curve([0, 1], [1.0])


def test_ranking_overlap_and_spearman_by_hand():
    a = torch.tensor([3.0, 2.0, 1.0, 0.0])
    b = torch.tensor([3.0, 0.0, 2.0, 1.0])
    assert ranking(a).tolist() == [0, 1, 2, 3]
    assert ranking(a, exclude=[1]).tolist() == [0, 2, 3]
    assert ranking(torch.zeros(3)).tolist() == [0, 1, 2]  # ties by index
    assert top_k_overlap(a, b, 2) == 0.5  # {0, 1} vs {0, 2}
    assert top_fraction(a, 0.5) == [0, 1]
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    # ranks of b: [4, 1, 3, 2] vs a's [4, 3, 2, 1]: 1 - 6 * sum d^2 / (n(n^2-1))
    d2 = (0**2) + (2**2) + (1**2) + (1**2)
    assert spearman(a, b) == pytest.approx(1 - 6 * d2 / (4 * 15))
    ag = agreement({"a": a, "b": b}, k=2)
    assert ag["overlap"] == [[1.0, 0.5], [0.5, 1.0]]
    assert ag["spearman"][0][1] == pytest.approx(spearman(a, b))


def test_pair_accuracy_by_hand():
    out = torch.tensor(
        [[2.0, 1.0, 0.0], [0.0, 1.0, 5.0], [0.0, 3.0, 1.0], [9.0, 0.0, 0.0]]
    )
    y = torch.tensor([0, 1, 1, 2])
    # class 0 vs 1 on examples 0, 1, 2: right, wrong? (z1=1 > z0=0: right), right
    assert PairAccuracy(0, 1)(out, y) == pytest.approx(1.0)
    # class 1 vs 2 on examples 1, 2, 3: wrong (5 > 1), right, right (0 vs 0: no)
    assert PairAccuracy(1, 2)(out, y) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        PairAccuracy(1, 1)
