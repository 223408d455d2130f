"""Ground truth by construction: in the shipped RecallTransformer models the
induction task runs through a previous-token head and an induction head that the
attention patterns identify; Shapley values, computed without looking at them,
must single out exactly those heads."""

import pytest
import torch

from captum_neuron_shapley import HeadShapley
from captum_neuron_shapley.ablation import metric_after_removal
from captum_neuron_shapley.recall import (
    head_roles,
    induction_circuit,
    recall_data,
    SHIPPED_SEEDS,
    trained_recall_transformer,
    VOCAB,
)

CHANCE = 1.0 / VOCAB


@pytest.fixture(scope="module")
def splits():
    # estimation and held-out sequences, from seeds training never used
    return recall_data(400, seed=1), recall_data(1000, seed=2)


def _zero_head(model, layer, head):
    """An independent single-head ablation: the head's columns of out_proj
    zeroed in a copy (no hooks, PyTorch's own path)."""
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        w = m.encoder.layers[layer].self_attn.out_proj.weight
        d = w.shape[1] // 4
        w[:, head * d : (head + 1) * d] = 0
    return m


def _accuracy(model, data, task=0):
    with torch.no_grad():
        return float(
            (model(data.tokens, task).argmax(1) == data.targets[:, task]).float().mean()
        )


@pytest.mark.parametrize("seed", SHIPPED_SEEDS)
def test_shapley_finds_the_induction_circuit(seed, splits):
    est, test = splits
    model = trained_recall_transformer(seed)
    for task in range(4):
        assert _accuracy(model, test, task) >= 0.99
    # the mechanism, from the attention patterns alone
    roles = head_roles(model, test)
    circuit = induction_circuit(model, test)
    layer0 = [h for layer, h in circuit if layer == 0]
    layer1 = [h for layer, h in circuit if layer == 1]
    assert layer0 and layer1, circuit  # previous-token and induction heads
    for h in layer1:
        assert roles["induction"][1, h] > 0.9  # attends to the answer
        # ... and the task needs it: removing it alone collapses the task
        assert _accuracy(_zero_head(model, 1, h), test) < CHANCE + 0.1
    flat = sorted(layer * 4 + h for layer, h in circuit)
    # Shapley values, which never see the attention patterns
    hs = HeadShapley(model, [layer.self_attn for layer in model.encoder.layers])
    for s in (0, 1):
        res = hs.attribute(
            est.tokens,
            target=est.targets[:, 0],
            top_k=len(flat),
            seed=s,
            return_result=True,
        )
        top = sorted(
            torch.argsort(res.flat_values, descending=True)[: len(flat)].tolist()
        )
        assert top == flat, (seed, s, res.flat_values)
    # removing the circuit collapses the task on held-out data; removing as
    # many other heads (three random sets) does not
    others = [i for i in range(8) if i not in flat]
    g = torch.Generator().manual_seed(seed)
    sets = [
        [
            others[j]
            for j in torch.randperm(len(others), generator=g)[: len(flat)].tolist()
        ]
        for _ in range(3)
    ]
    acc = metric_after_removal(
        model, res, [[], flat] + sets, test.tokens, test.targets[:, 0]
    )
    assert float(acc[0]) >= 0.99
    assert float(acc[1]) < CHANCE + 0.1, acc
    assert float(acc[2:].min()) > 0.9, acc
