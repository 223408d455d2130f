"""The modular-addition transformer: its shipped weights answer held-out pairs,
its splits partition the pairs, and its MLP neurons carry the computation (the
reason it is the testbed for MLP neurons)."""

import pytest
import torch

from captum_neuron_shapley import feature_mask, NeuronShapley
from captum_neuron_shapley.modular import (
    modular_splits,
    MODULUS,
    SHIPPED_SEEDS,
    trained_modular_transformer,
)


def test_splits_partition_the_pairs():
    s = modular_splits()
    xs = [s.x_train, s.x_val, s.x_est, s.x_test]
    assert [len(x) for x in xs] == [1740, 348, 696, 697]
    pairs = torch.cat(xs)[:, :2]
    assert len({tuple(p) for p in pairs.tolist()}) == MODULUS**2
    assert (torch.cat(xs)[:, 2] == MODULUS).all()
    for x, y in ((s.x_train, s.y_train), (s.x_test, s.y_test)):
        assert torch.equal(y, (x[:, 0] + x[:, 1]) % MODULUS)
    assert torch.equal(modular_splits().x_est, s.x_est)  # fixed


@pytest.mark.parametrize("seed", SHIPPED_SEEDS)
def test_shipped_model_generalizes_and_needs_its_mlp(seed):
    s = modular_splits()
    model = trained_modular_transformer(seed)
    with torch.no_grad():
        logits = model(s.x_test)
        same = model.forward_embeddings(model.embed_tokens(s.x_test))
    assert torch.equal(logits, same)
    assert float((logits.argmax(1) == s.y_test).float().mean()) >= 0.98
    # every MLP neuron removed (its mean over the estimation pairs): chance
    ns = NeuronShapley(model, model.layer.linear2)
    game = ns.game(
        s.x_est,
        target=s.y_est,
        attribute_to_layer_input=True,
        layer_mask=feature_mask(128),
        layer_baselines="mean",
    )
    assert game.n_units == 128
    assert game.full_value() >= 0.98
    assert float(game.value(torch.zeros(1, 128, dtype=torch.bool))[0]) < 0.1
