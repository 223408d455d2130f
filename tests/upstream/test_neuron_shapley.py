r"""NeuronShapley on Captum's tiny models: agreement with closed forms and exact
enumeration, efficiency, reproducibility, Captum's layer and target forms, the
model left as it was, DataParallel, DistributedDataParallel and TorchScript."""

import os
import tempfile
import unittest
from typing import Any, Callable, Dict, List, Tuple

import torch
import torch.distributed as dist
from captum.attr import LayerActivation
from captum.testing.helpers import BaseTest
from captum.testing.helpers.basic import assertTensorAlmostEqual
from captum.testing.helpers.basic_models import (
    BasicModel_ConvNet_One_Conv,
    BasicModel_MultiLayer,
    BasicModel_MultiLayer_MultiInput,
)
from captum_neuron_shapley import FilterShapley, NeuronShapley, ShapleyResult
from captum_neuron_shapley.exact import exact_values
from torch import nn, Tensor

# An estimate agrees with the exact value when |estimate - exact| <= Z_TOL *
# stderr. Marginals are bounded, so a mean over chains is asymptotically normal;
# with at most 8 units compared per test, P(any |Z| > 4.5) < 8 * 6.8e-6. Seeds
# are fixed, so the tests are deterministic.
Z_TOL = 4.5


def _tensor(a: object) -> Tensor:
    r"""The attribution of a layer with one output tensor."""
    assert isinstance(a, Tensor)
    return a


def _tensors(a: object) -> Tuple[Tensor, ...]:
    r"""The attributions of several layers or of a tuple output: one per tensor."""
    assert isinstance(a, tuple) and all(isinstance(t, Tensor) for t in a)
    return a


def _conv_data(n: int = 24) -> Tuple[Tensor, Tensor]:
    # inputs around 20 keep both filters of BasicModel_ConvNet_One_Conv active
    # (biases -50 and -75 over a 3x3 sum), so that removing neurons moves the
    # ReLU after fc1 across 0: a game with interactions
    x = 20 + 10 * torch.randn(n, 1, 4, 4)
    return x, torch.zeros(n, dtype=torch.long)


def _no_hooks(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks
        and not m._forward_pre_hooks
        and not m._backward_hooks
        and "forward" not in vars(m)
        for m in model.modules()
    )


def _left_alone(test: BaseTest, model: nn.Module, run: Callable[[], Any]) -> Any:
    r"""Run ``run`` with the model in training mode and check that the hooks are
    gone and the flags and weights are back, whatever ``run`` did."""
    model.train()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        return run()
    finally:
        test.assertTrue(_no_hooks(model))
        test.assertTrue(all(m.training for m in model.modules()))
        for k, v in model.state_dict().items():
            test.assertTrue(torch.equal(v, params[k]), k)


class Test(BaseTest):
    def test_additive_game_values_are_mean_activations(self) -> None:
        # linear2 of BasicModel_MultiLayer has unit weights, so output 0 is the
        # sum of the ReLU's outputs minus 1: the game of the mean output is
        # additive and each neuron's Shapley value is its mean activation
        model = BasicModel_MultiLayer()
        x = torch.randn(30, 3)
        ns = NeuronShapley(model, model.relu)
        phi = ns.attribute(x, target=0, max_permutations=5, seed=0)
        acts = LayerActivation(model, model.relu).attribute(x)
        assertTensorAlmostEqual(self, phi, acts.mean(0), delta=1e-5, mode="max")

    def test_agrees_with_exact_enumeration(self) -> None:
        model = BasicModel_ConvNet_One_Conv()
        x, _ = _conv_data()
        ns = NeuronShapley(model, model.relu1)
        exact = exact_values(ns.game(x, target=0))  # 2^8 coalitions
        res = ns.attribute(
            x,
            target=0,
            truncation=None,
            max_permutations=400,
            perturbations_per_eval=8,
            seed=0,
            return_result=True,
        )
        est, se = res.flat_values, res.flat_stderr
        self.assertGreater(float(se.max()), 0.0)  # marginals vary: interactions
        self.assertGreater(float(exact.max() - exact.min()), 1.0)
        self.assertTrue(bool(((est - exact).abs() <= Z_TOL * se + 1e-9).all()))
        self.assertEqual(tuple(_tensor(res.values).shape), (2, 2, 2))

    def test_efficiency_and_convergence_delta(self) -> None:
        # without truncation every chain's marginals sum to V(all) - V(none)
        model = BasicModel_ConvNet_One_Conv()
        x, _ = _conv_data()
        ns = NeuronShapley(model, model.relu1)
        phi, delta = ns.attribute(
            x,
            target=0,
            truncation=None,
            max_permutations=20,
            seed=1,
            return_convergence_delta=True,
        )
        self.assertLess(abs(float(delta)), 1e-4)
        self.assertEqual(delta.dtype, torch.float64)
        again = ns.compute_convergence_delta(phi, x, target=0)
        assertTensorAlmostEqual(self, again, delta, delta=1e-4)
        game = ns.game(x, target=0)
        gap = game.full_value() - game.empty_value()
        self.assertAlmostEqual(float(_tensor(phi).sum()), gap, delta=1e-3 * abs(gap))

    def test_reproducible_by_seed_without_touching_global_rng(self) -> None:
        model = BasicModel_ConvNet_One_Conv()
        x, _ = _conv_data()
        ns = NeuronShapley(model, model.relu1)
        state = torch.get_rng_state()
        a = _tensor(ns.attribute(x, target=0, max_permutations=6, seed=3))
        self.assertTrue(torch.equal(torch.get_rng_state(), state))
        b = _tensor(ns.attribute(x, target=0, max_permutations=6, seed=3))
        c = _tensor(ns.attribute(x, target=0, max_permutations=6, seed=4))
        self.assertTrue(torch.equal(a, b))
        self.assertFalse(torch.equal(a, c))

    def test_batching_does_not_change_the_values(self) -> None:
        model = BasicModel_MultiLayer_MultiInput()
        x = (10 * torch.randn(12, 3), 5 * torch.randn(12, 3))
        args = (2 * torch.randn(12, 3), 5)
        kwargs: Dict[str, Any] = dict(target=0, max_permutations=6, seed=0)
        plain = NeuronShapley(model, model.model.relu).attribute(
            x, additional_forward_args=args, **kwargs
        )
        batched = NeuronShapley(model, model.model.relu, internal_batch_size=5)
        for ppe in (1, 3):
            got = batched.attribute(
                x, additional_forward_args=args, perturbations_per_eval=ppe, **kwargs
            )
            assertTensorAlmostEqual(self, got, plain, delta=1e-5, mode="max")

    def test_layers_by_name_tuples_and_dtypes(self) -> None:
        model = BasicModel_MultiLayer(multi_input_module=True)
        x = torch.randn(8, 3)
        # a layer with a tuple of outputs: one attribution per tensor
        phi = NeuronShapley(model, "multi_relu").attribute(
            x, target=0, max_permutations=4, seed=0
        )
        self.assertIsInstance(phi, tuple)
        self.assertEqual([tuple(p.shape) for p in _tensors(phi)], [(4,), (4,)])
        # a list of layers: one joint game, a tuple with one entry per layer
        ns = NeuronShapley(model, [model.linear0, model.linear1])
        both = ns.attribute(x, target=0, max_permutations=4, seed=0)
        self.assertEqual([tuple(p.shape) for p in _tensors(both)], [(3,), (4,)])
        m64 = BasicModel_MultiLayer().double()
        phi64 = NeuronShapley(m64, m64.relu).attribute(
            x.double(), target=0, max_permutations=4, seed=0
        )
        self.assertEqual(_tensor(phi64).dtype, torch.float64)

    def test_target_forms(self) -> None:
        model = BasicModel_ConvNet_One_Conv()
        x, _ = _conv_data(12)
        ns = NeuronShapley(model, model.relu1)
        with torch.no_grad():
            labels = model(x).argmax(1)
        kwargs: Dict[str, Any] = dict(max_permutations=6, seed=0)
        # per-example labels (a tensor or a list) score the accuracy
        by_tensor = ns.attribute(x, target=labels, **kwargs)
        by_list = ns.attribute(x, target=labels.tolist(), **kwargs)
        self.assertTrue(torch.equal(by_tensor, by_list))
        # an int is the mean of that output, as a metric given explicitly
        by_int = ns.attribute(x, target=2, **kwargs)
        by_metric = ns.attribute(
            x, target=2, metric=lambda out, t: float(out[:, t].mean()), **kwargs
        )
        # (the default metric averages in float64, this one in float32)
        tol = 1e-5 * float(by_int.abs().max())
        assertTensorAlmostEqual(self, by_int, by_metric, delta=tol, mode="max")
        with self.assertRaisesRegex(ValueError, "`target`"):
            ns.attribute(x, target=labels[:5], **kwargs)

    def test_model_left_as_it_was_also_after_an_exception(self) -> None:
        model = BasicModel_ConvNet_One_Conv()
        x, _ = _conv_data(8)
        ns = NeuronShapley(model, [model.conv1, model.relu1])
        _left_alone(self, model, lambda: ns.attribute(x, target=0, max_permutations=2))
        calls: List[int] = []

        def failing(outputs: Tensor, target: Any) -> float:
            calls.append(1)
            if len(calls) > 2:
                raise RuntimeError("metric failed")
            return float(outputs[:, 0].mean())

        with self.assertRaisesRegex(RuntimeError, "metric failed"):
            _left_alone(
                self,
                model,
                lambda: ns.attribute(x, metric=failing, max_permutations=2),
            )

    def test_data_parallel_on_cpu(self) -> None:
        model = BasicModel_ConvNet_One_Conv()
        x, _ = _conv_data(12)
        kwargs: Dict[str, Any] = dict(target=0, max_permutations=6, seed=0)
        plain = NeuronShapley(model, model.relu1).attribute(x, **kwargs)
        dp = nn.DataParallel(model)
        by_model = NeuronShapley(dp, model.relu1).attribute(x, **kwargs)
        by_forward = NeuronShapley(dp.forward, model.relu1, device_ids=[0])
        assertTensorAlmostEqual(self, by_model, plain, delta=1e-6, mode="max")
        assertTensorAlmostEqual(
            self, by_forward.attribute(x, **kwargs), plain, delta=1e-6, mode="max"
        )

    def test_distributed_data_parallel(self) -> None:
        if not dist.is_available():
            raise unittest.SkipTest("torch.distributed is not available")
        started = not dist.is_initialized()
        if started:  # a group of one process, in memory
            dist.init_process_group(
                "gloo", store=dist.HashStore(), rank=0, world_size=1
            )
        try:
            model = BasicModel_ConvNet_One_Conv()
            x, _ = _conv_data(12)
            kwargs: Dict[str, Any] = dict(target=0, max_permutations=6, seed=0)
            plain = FilterShapley(model, model.conv1).attribute(x, **kwargs)
            ddp = nn.parallel.DistributedDataParallel(model)
            got = FilterShapley(ddp, model.conv1).attribute(x, **kwargs)
            assertTensorAlmostEqual(self, got, plain, delta=1e-6, mode="max")
        finally:
            if started:
                dist.destroy_process_group()

    def test_torchscript_is_refused(self) -> None:
        model = BasicModel_MultiLayer()
        x = torch.randn(4, 3)
        traced = torch.jit.trace(model, x)
        with self.assertRaisesRegex(ValueError, "TorchScript"):
            NeuronShapley(traced, traced.relu)
        scripted = torch.jit.script(BasicModel_ConvNet_One_Conv())
        with self.assertRaisesRegex(ValueError, "TorchScript"):
            NeuronShapley(scripted, scripted.relu1)
        # an eager layer inside a traced forward: its hooks would never run
        with self.assertRaisesRegex(ValueError, "TorchScript"):
            NeuronShapley(lambda t: traced(t), model.relu).attribute(x, target=0)
        self.assertTrue(_no_hooks(model))

    def test_result_saves_and_loads(self) -> None:
        model = BasicModel_ConvNet_One_Conv()
        x, _ = _conv_data(8)
        res = FilterShapley(model, model.conv1).attribute(
            x, target=0, max_permutations=4, seed=0, return_result=True
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "result.pt")
            res.save(path)
            back = ShapleyResult.load(path)
        self.assertTrue(torch.equal(back.flat_values, res.flat_values))
        self.assertEqual(back.n_evaluations, res.n_evaluations)
