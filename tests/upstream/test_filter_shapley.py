r"""FilterShapley on Captum's tiny convolutional model: agreement with exact
enumeration over the filters of two layers, the mean-activation removal, the
top-k rule and the greedy removal set."""

from typing import Tuple

import torch
from captum.testing.helpers import BaseTest
from captum.testing.helpers.basic_models import BasicModel_ConvNet
from captum_neuron_shapley import FilterShapley, NeuronShapley
from captum_neuron_shapley.exact import exact_values
from captum_neuron_shapley.metrics import NegativeCrossEntropy
from torch import nn, Tensor

# See test_neuron_shapley.py: |estimate - exact| <= Z_TOL * stderr, for at most
# 6 units per test.
Z_TOL = 4.5


def _tensor(a: object) -> Tensor:
    r"""The attribution of a layer with one output tensor."""
    assert isinstance(a, Tensor)
    return a


def _tensors(a: object) -> Tuple[Tensor, ...]:
    r"""The attributions of several layers or of a tuple output: one per tensor."""
    assert isinstance(a, tuple) and all(isinstance(t, Tensor) for t in a)
    return a


def _model_and_data() -> tuple:
    # BasicModel_ConvNet's fully connected layers have constant weights, which
    # makes its softmax independent of the input; random ones give its 2 + 4
    # filters distinct roles
    model = BasicModel_ConvNet()
    with torch.no_grad():
        model.fc1.weight.normal_()
        model.fc2.weight.normal_()
    x = torch.randn(40, 1, 10, 10)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


class _LogSoftmaxFree(nn.Module):
    r"""The model's logits (its softmax undone by a log, up to a constant)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return torch.log(self.model(x))


class Test(BaseTest):
    def test_two_layers_agree_with_exact_enumeration(self) -> None:
        model, x, y = _model_and_data()
        wrapped = _LogSoftmaxFree(model)
        fs = FilterShapley(wrapped, [model.conv1, model.conv2])
        metric = NegativeCrossEntropy()
        game = fs.game(x, target=y, metric=metric)
        self.assertEqual(game.n_units, 6)
        exact = exact_values(game)
        res = fs.attribute(
            x,
            target=y,
            metric=metric,
            truncation=None,
            max_permutations=300,
            perturbations_per_eval=6,
            seed=0,
            return_result=True,
        )
        est, se = res.flat_values, res.flat_stderr
        self.assertGreater(float(exact.abs().max()), 0.01)
        self.assertTrue(bool(((est - exact).abs() <= Z_TOL * se + 1e-9).all()))
        v1, v2 = _tensors(res.values)
        self.assertEqual((tuple(v1.shape), tuple(v2.shape)), ((2,), (4,)))

    def test_removed_filters_emit_their_mean_activation(self) -> None:
        model, x, y = _model_and_data()
        fs = FilterShapley(model, model.conv2)
        game = fs.game(x, target=y)
        keep = torch.tensor([[True, False, True, False]])
        with torch.no_grad():
            acts = []
            handle = model.conv2.register_forward_hook(lambda m, i, o: acts.append(o))
            model(x)
            handle.remove()
            mean = acts[0].mean(dim=(0, 2, 3), keepdim=True)

            def replace(m: nn.Module, i: object, out: Tensor) -> Tensor:
                out = out.clone()
                out[:, [1, 3]] = mean[:, [1, 3]].expand_as(out[:, [1, 3]])
                return out

            handle = model.conv2.register_forward_hook(replace)
            want = float((model(x).argmax(1) == y).double().mean())
            handle.remove()
        self.assertAlmostEqual(float(game.value(keep)[0]), want, places=6)
        self.assertEqual(game.full_value(), 1.0)

    def test_top_k_and_greedy_removal_set(self) -> None:
        model, x, y = _model_and_data()
        fs = FilterShapley(model, [model.conv1, model.conv2])
        res = fs.attribute(
            x,
            target=y,
            top_k=2,
            refine="greedy",
            max_permutations=60,
            seed=0,
            return_result=True,
        )
        removal_set = res.removal_set
        assert removal_set is not None
        self.assertEqual(len(removal_set), 2)
        self.assertEqual(len(set(removal_set)), 2)
        # the greedy set's joint removal hurts at least as much as the top two
        # values' removal (the search starts from them)
        game = fs.game(x, target=y)

        def without(units: list) -> float:
            keep = torch.ones(1, game.n_units, dtype=torch.bool)
            keep[0, units] = False
            return float(game.value(keep)[0])

        top = torch.argsort(res.flat_values, descending=True)[:2].tolist()
        self.assertLessEqual(without(removal_set), without(top) + 1e-9)

    def test_a_layer_without_channels_is_refused(self) -> None:
        model, x, y = _model_and_data()
        with self.assertRaisesRegex(ValueError, "NeuronShapley"):
            FilterShapley(model, model.fc1).attribute(x, target=y)
        # NeuronShapley takes it
        phi = NeuronShapley(model, model.fc1).attribute(
            x, target=y, max_permutations=2, seed=0
        )
        self.assertEqual(tuple(_tensor(phi).shape), (8,))
