"""Captum's argument contract: argument order, target forms, additional forward
arguments, layer inputs, layers with several output tensors, convergence delta,
DataParallel device ids, dtypes, TorchScript, logging and progress."""

import inspect
import warnings
from typing import Any, List

import numpy as np
import pytest
import torch
from captum.attr import LayerFeatureAblation
from captum.testing.helpers.basic_models import BasicModel_MultiLayer

from captum_neuron_shapley import (
    accuracy,
    Callback,
    FilterShapley,
    FixedBound,
    NeuronShapley,
    PermutationSampler,
    ShapleyResult,
    SubgroupAccuracy,
    TopKSeparated,
)
from captum_neuron_shapley.ablation import metric_after_removal
from captum_neuron_shapley.metrics import MeanOutput
from captum_neuron_shapley.removal import _replace_rows, _replica_start
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .conftest import MLP

BUDGET = {"max_permutations": 8, "seed": 0}


def _no_hooks(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and "forward" not in vars(m)
        for m in model.modules()
    )


@pytest.fixture
def mlp():
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MLP().eval()
    x = torch.randn(40, 5, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::5] = (y[::5] + 1) % 3  # accuracy 0.8, so removals can hurt
    return model, x, y


def _zeroed(model: nn.Module, layer: nn.Module, x: torch.Tensor, units: List[int]):
    """The model's outputs with the given flat elements of ``layer``'s output
    zeroed, computed by hand."""

    def hook(module, args, out):
        out = out.clone()
        out.view(out.shape[0], -1)[:, units] = 0.0
        return out

    h = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model(x)
    finally:
        h.remove()


# -- argument order --------------------------------------------------------------


def test_captum_positional_order_and_keyword_only_rest():
    params = list(inspect.signature(NeuronShapley.attribute).parameters.values())
    positional = [
        p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]
    captum = list(inspect.signature(LayerFeatureAblation.attribute).parameters)
    assert (
        positional
        == captum[:8]
        == [
            "self",
            "inputs",
            "layer_baselines",
            "target",
            "additional_forward_args",
            "layer_mask",
            "attribute_to_layer_input",
            "perturbations_per_eval",
        ]
    )
    rest = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    # the stable keywords, then one way each to pass a sampler and a stopping rule
    assert rest == [
        "metric",
        "truncation",
        "top_k",
        "epsilon",
        "refine",
        "max_evaluations",
        "max_permutations",
        "max_time",
        "sampler",
        "stop",
        "seed",
        "show_progress",
        "return_convergence_delta",
        "return_result",
    ]
    assert len(positional) + len(rest) == len(params) <= 22  # self + 21
    # Captum's usage logging wraps the public methods
    assert hasattr(NeuronShapley.attribute, "__wrapped__")
    assert hasattr(NeuronShapley.compute_convergence_delta, "__wrapped__")
    ctor = inspect.signature(NeuronShapley.__init__).parameters
    assert list(ctor) == [
        "self",
        "forward_func",
        "layer",
        "device_ids",
        "internal_batch_size",
        "cache_activations",
    ]
    assert ctor["internal_batch_size"].kind is inspect.Parameter.KEYWORD_ONLY


def test_moved_keywords_still_work_with_a_warning(mlp):
    # keywords that moved into objects (or to the constructor) work for one
    # release: same values as the new form, and a DeprecationWarning naming where
    # each one went
    model, x, y = mlp
    ns = NeuronShapley(model, model.fc1)
    seen = []
    new = NeuronShapley(model, model.fc1, internal_batch_size=7).attribute(
        x,
        target=y,
        top_k=2,
        sampler=PermutationSampler(strata=2, batch_size=20),
        stop=TopKSeparated(2, bound=FixedBound(delta=0.1)) | Callback(seen.append),
        max_permutations=12,
        seed=0,
        return_result=True,
    )
    n_rounds = len(seen)
    with pytest.warns(DeprecationWarning, match=r"`strata` -> sampler="):
        old = ns.attribute(
            x,
            target=y,
            top_k=2,
            strata=2,
            subset_size=20,
            bound="fixed",
            delta=0.1,
            callback=seen.append,
            internal_batch_size=7,
            max_permutations=12,
            seed=0,
            return_result=True,
        )
    assert torch.equal(old.flat_values, new.flat_values)
    assert old.bound == new.bound == "fixed" and len(seen) == 2 * n_rounds
    assert ns.internal_batch_size is None  # restored after the call
    with pytest.warns(DeprecationWarning, match="`strata` -> sampler="):
        with pytest.raises(ValueError, match="inside the sampler object"):
            ns.attribute(x, target=y, strata=2, sampler=PermutationSampler())


def test_positional_call_in_captum_order(mlp):
    model, x, y = mlp
    ns = NeuronShapley(model, model.fc1)
    by_position = ns.attribute(x, "zero", y, None, None, False, 2, **BUDGET)
    by_keyword = ns.attribute(x, target=y, perturbations_per_eval=2, **BUDGET)
    assert torch.equal(by_position, by_keyword)


# -- target forms -----------------------------------------------------------------


def test_int_and_tuple_targets_are_the_mean_of_that_output(mlp):
    model, x, _ = mlp
    ns = NeuronShapley(model, model.fc1)
    game = ns.game(x, layer_baselines="zero", target=2)
    assert isinstance(game.metric, MeanOutput)
    keep = torch.ones(1, 6, dtype=torch.bool)
    keep[0, [1, 4]] = False
    want = _zeroed(model, model.fc1, x, [1, 4])[:, 2].double().mean()
    torch.testing.assert_close(game.value(keep)[0], want)
    with torch.no_grad():
        full = model(x)[:, 2].double().mean()
    assert game.full_value() == pytest.approx(float(full))
    # a 0-d tensor, a 1-tuple and a NumPy integer are the same index
    for same in (torch.tensor(2), (2,), np.int64(2)):
        other = ns.game(x, layer_baselines="zero", target=same)
        assert torch.equal(other.value(keep), game.value(keep))
    a = ns.attribute(x, target=2, **BUDGET)
    b = ns.attribute(x, target=torch.tensor(2), **BUDGET)
    assert torch.equal(a, b) and a.abs().sum() > 0


def test_multi_index_tuple_targets():
    model = BasicModel_MultiLayer()
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    args = (None, True)  # multidim_output: outputs of shape (6, 2, 2, 2)
    ns = NeuronShapley(model, model.relu)
    game = ns.game(x, target=(1, 0, 1), additional_forward_args=args)
    with torch.no_grad():
        want = model(x, None, True)[:, 1, 0, 1].double().mean()
    assert game.full_value() == pytest.approx(float(want))
    # per-example tuples (a Captum list target) follow the examples
    per = [(i % 2, 1, i % 2) for i in range(6)]
    game = ns.game(x, target=per, additional_forward_args=args)
    idx = torch.tensor([5, 0, 3])
    keep = torch.tensor([[True, False, True, False]])
    out = _zeroed(lambda a: model(a, None, True), model.relu, x, [1, 3])
    picked = torch.stack([out[i][per[i]] for i in idx.tolist()])
    torch.testing.assert_close(game.value(keep, idx)[0], picked.double().mean())


def test_list_of_labels_is_a_label_tensor(mlp):
    model, x, y = mlp
    ns = NeuronShapley(model, model.fc1)
    assert ns.game(x, target=y.tolist()).metric is accuracy
    batches = PermutationSampler(batch_size=20)
    a = ns.attribute(x, target=y.tolist(), sampler=batches, **BUDGET)
    b = ns.attribute(x, target=y, sampler=batches, **BUDGET)
    assert torch.equal(a, b)


def test_no_target_means_the_mean_output():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).eval()
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(2))
    game = NeuronShapley(net, net[1]).game(x)
    with torch.no_grad():
        assert game.full_value() == pytest.approx(float(net(x).double().mean()))
    two = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="`target` is required by the default"):
        NeuronShapley(two, two[0]).attribute(x)
    assert _no_hooks(two)


def test_bad_default_metric_targets(mlp):
    model, x, y = mlp
    ns = NeuronShapley(model, model.fc1)
    with pytest.raises(ValueError, match="Captum's target forms"):
        ns.attribute(x, target=(y, y > 0))  # needs a metric (SubgroupAccuracy)
    with pytest.raises(ValueError, match="`target` has 3 entries but `inputs` has"):
        ns.attribute(x, target=[0, 1, 2])
    with pytest.raises(ValueError, match="cannot select"):
        ns.attribute(x, target=7, **BUDGET)  # 3 outputs
    assert _no_hooks(model)


def test_custom_metrics_receive_the_target_as_given(mlp):
    model, x, y = mlp
    ns = NeuronShapley(model, model.fc1)
    seen: List[Any] = []

    def metric(out, target):
        seen.append(target)
        return float(out[:, 0].mean())

    for target in (y, (y, y > 0), "anything", [0, 1]):
        seen.clear()
        ns.attribute(x, target=target, metric=metric, max_permutations=1, seed=0)
        got = seen[0]
        assert type(got) is type(target)
        if isinstance(target, torch.Tensor):
            assert torch.equal(got, target)
        elif isinstance(target, tuple):
            assert all(torch.equal(a, b) for a, b in zip(got, target))
        else:
            assert got == target
    res = ns.attribute(
        x, target=(y, y > 0), metric=SubgroupAccuracy(), return_result=True, **BUDGET
    )
    assert res.n_permutations == 8


# -- additional_forward_args -------------------------------------------------------


class Scaled(nn.Module):
    """forward(x, w, scale): a per-example weight tensor and a plain number."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 6)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x, w, scale):
        return self.fc2(self.act(self.fc1(x * w))) * scale


@pytest.fixture
def scaled():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = Scaled().eval()
    g = torch.Generator().manual_seed(4)
    x, w = torch.randn(30, 5, generator=g), torch.rand(30, 1, generator=g) + 0.5
    with torch.no_grad():
        y = model(x, w, 2.0).argmax(1)
    y[::4] = (y[::4] + 1) % 3
    return model, x, w, y


def test_additional_forward_args_follow_the_examples(scaled):
    model, x, w, y = scaled
    ns = NeuronShapley(model, model.act)
    game = ns.game(x, target=y, additional_forward_args=(w, 2.0))
    idx = torch.tensor([3, 17, 0, 29, 8])
    keep = torch.tensor([[True, False, True, True, False, True]])
    fwd = lambda a: model(a, w[idx], 2.0)  # noqa: E731
    want = (_zeroed(fwd, model.act, x[idx], [1, 4]).argmax(1) == y[idx]).double()
    assert game.value(keep, idx)[0] == pytest.approx(float(want.mean()))
    # repeated for several coalitions per pass, and batched with the examples
    ref = ns.attribute(x, target=y, additional_forward_args=(w, 2.0), **BUDGET)
    for ctor, kw in (
        ({}, {"perturbations_per_eval": 3}),
        ({"internal_batch_size": 7}, {}),
        ({}, {"sampler": PermutationSampler(batch_size=30)}),
    ):
        got = NeuronShapley(model, model.act, **ctor).attribute(
            x, target=y, additional_forward_args=(w, 2.0), **kw, **BUDGET
        )
        assert torch.equal(got, ref), (ctor, kw)
    # a different per-example tensor changes the game
    other = ns.attribute(x, target=y, additional_forward_args=(w * 0, 2.0), **BUDGET)
    assert not torch.equal(other, ref)


def test_additional_forward_args_with_a_dataloader(scaled):
    model, x, w, y = scaled
    ns = NeuronShapley(model, model.act)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    a = ns.attribute(loader, additional_forward_args=(w, 2.0), **BUDGET)
    b = ns.attribute(x, target=y, additional_forward_args=(w, 2.0), **BUDGET)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="`additional_forward_args` tensor 0"):
        ns.attribute(loader, additional_forward_args=(w[:10], 2.0))
    assert _no_hooks(model)


# -- attribute_to_layer_input ------------------------------------------------------


def test_layer_input_is_the_previous_layer_output(mlp):
    model, x, y = mlp
    on_input = NeuronShapley(model, model.act).attribute(
        x, target=y, attribute_to_layer_input=True, **BUDGET
    )
    on_output = NeuronShapley(model, model.fc1).attribute(x, target=y, **BUDGET)
    torch.testing.assert_close(on_input, on_output)
    assert _no_hooks(model)


def test_filter_shapley_on_a_conv_input(tiny, tiny_data):
    (x, y), _ = tiny_data
    fs_in = FilterShapley(tiny, tiny.conv2)
    a = fs_in.attribute(x, target=y, attribute_to_layer_input=True, **BUDGET)
    b = FilterShapley(tiny, tiny.relu1).attribute(x, target=y, **BUDGET)
    assert a.shape == (4,)
    torch.testing.assert_close(a, b)
    res = fs_in.attribute(
        x, target=y, attribute_to_layer_input=True, return_result=True, **BUDGET
    )
    assert res.layers[0].layer_input
    # removals re-run the same way on the layer's input
    top = res.top_units(2)
    game = fs_in.game(x, target=y, attribute_to_layer_input=True)
    keep = torch.ones(1, 4, dtype=torch.bool)
    keep[0, res.flat_indices(top)] = False
    after = metric_after_removal(tiny, res, [top], x, y)
    assert float(after[0]) == pytest.approx(float(game.value(keep)[0]))
    assert _no_hooks(tiny)


# -- layers with several tensors ----------------------------------------------------


def test_tuple_outputs_give_a_unit_per_element_of_each_tensor():
    model = BasicModel_MultiLayer(multi_input_module=True)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(5))
    ns = NeuronShapley(model, model.multi_relu)
    game = ns.game(x, target=1)
    assert game.n_units == 8 and [u.name for u in game.units] == [
        "multi_relu[0]",
        "multi_relu[1]",
    ]
    keep = torch.ones(1, 8, dtype=torch.bool)
    keep[0, [2, 4 + 1]] = False  # element 2 of the first tensor, 1 of the second

    def zero(module, args, out):
        a, b = out[0].clone(), out[1].clone()
        a[:, 2], b[:, 1] = 0.0, 0.0
        return a, b

    h = model.multi_relu.register_forward_hook(zero)
    with torch.no_grad():
        want = model(x)[:, 1].double().mean()
    h.remove()
    torch.testing.assert_close(game.value(keep)[0], want)
    phi = ns.attribute(x, target=1, **BUDGET)
    assert isinstance(phi, tuple) and [p.shape for p in phi] == [(4,), (4,)]
    # per-tensor baselines for the layer's two tensors
    with pytest.raises(ValueError, match="has 3 entries but the layer has 2"):
        ns.attribute(x, target=1, layer_baselines=(0.0, 1.0, 2.0))
    shifted = ns.game(x, target=1, layer_baselines=(0.0, 5.0))
    assert float(shifted.units[1].baseline) == 5.0
    # in a list of layers, the entry of such a layer is itself a tuple
    both = NeuronShapley(model, [model.linear0, model.multi_relu])
    res = both.attribute(x, target=1, return_result=True, **BUDGET)
    v0, (v1, v2) = res.values
    assert v0.shape == (3,) and v1.shape == v2.shape == (4,)
    assert _no_hooks(model)


class TwoConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 3, 3, padding=1)
        self.b = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return self.a(x), self.b(x)


class TupleCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.pair = TwoConvs()
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        a, b = self.pair(x)
        return self.fc(torch.cat([a, b], 1).relu().mean((2, 3)))


def test_filter_shapley_on_a_tuple_of_conv_outputs(tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(6)
        model = TupleCNN().eval()
    g = torch.Generator().manual_seed(7)
    x = torch.randn(20, 1, 6, 6, generator=g)
    y = torch.randint(0, 3, (20,), generator=g)
    fs = FilterShapley(model, model.pair)
    res = fs.attribute(x, target=y, return_result=True, **BUDGET)
    a, b = res.values
    assert a.shape == (3,) and b.shape == (2,)
    assert [lay.name for lay in res.layers] == ["pair[0]", "pair[1]"]
    # the removal helpers re-run the game's removals, also after save/load
    res.save(tmp_path / "r.pt")
    loaded = ShapleyResult.load(tmp_path / "r.pt")
    assert loaded.layers[1].index == 1 and loaded.layers[1].module_name == "pair"
    game = fs.game(x, target=y)
    keep = torch.ones(1, 5, dtype=torch.bool)
    keep[0, [0, 4]] = False
    after = metric_after_removal(model, loaded, [[0, 4]], x, y)
    assert float(after[0]) == pytest.approx(float(game.value(keep)[0]))
    assert _no_hooks(model)


# -- convergence delta --------------------------------------------------------------


def test_compute_convergence_delta(mlp):
    model, x, y = mlp
    ns = NeuronShapley(model, model.fc1)
    phi, delta = ns.attribute(x, target=y, return_convergence_delta=True, **BUDGET)
    assert isinstance(delta, torch.Tensor) and delta.dim() == 0
    assert delta.dtype == torch.float64
    check = ns.compute_convergence_delta(phi, x, target=y)
    torch.testing.assert_close(check, delta, rtol=0, atol=1e-6)
    res = ns.attribute(x, target=y, return_result=True, **BUDGET)
    assert float(delta) == res.convergence_delta
    # a unit of several elements counts once: without truncation and with every
    # unit in every chain, the marginals telescope and the gap is 0
    mask = torch.tensor([0, 0, 1, 1, 2, 2])
    phi = ns.attribute(x, target=y, layer_mask=mask, truncation=None, **BUDGET)
    assert phi[0] == phi[1] and phi.abs().sum() > 0
    gap = ns.compute_convergence_delta(phi, x, target=y, layer_mask=mask)
    assert abs(float(gap)) < 1e-6
    with pytest.raises(ValueError, match="`attributions` have shapes"):
        ns.compute_convergence_delta(phi[:3], x, target=y)
    assert _no_hooks(model)


# -- DataParallel device ids ----------------------------------------------------------


def test_replica_rows():
    cuda = [torch.device("cuda", i) for i in range(3)]
    # 10 rows over 3 devices: chunks of 4, 4, 2 in device_ids order
    assert [_replica_start(r, 10, d, [0, 1, 2]) for r, d in zip([4, 4, 2], cuda)] == [
        0,
        4,
        8,
    ]
    assert _replica_start(4, 10, cuda[2], [0, 2, 1]) == 4
    with pytest.raises(ValueError, match="gives that device 2"):
        _replica_start(4, 10, cuda[2], [0, 1, 2])
    with pytest.raises(ValueError, match="not in `device_ids`"):
        _replica_start(4, 10, torch.device("cuda", 5), [0, 1])
    with pytest.raises(ValueError, match="`device_ids` to the constructor"):
        _replica_start(4, 10, cuda[0], None)
    # a replica's rows get the removals of their own coalitions
    out = torch.arange(1.0, 13.0).view(6, 2)  # 3 coalitions x 2 examples
    keep = torch.tensor([[True, False], [False, True], [False, False]])
    groups, base = torch.arange(2), torch.tensor(0.0)
    full = torch.where(keep[torch.arange(6) // 2][:, groups], out, base)
    part = _replace_rows(keep, groups, base, out[1:5], 1, 2)
    assert torch.equal(part, full[1:5])


def test_device_ids_are_kept_and_the_batch_is_not_split_on_cpu(mlp):
    model, x, y = mlp
    dp = nn.DataParallel(model)
    ns = NeuronShapley(dp.forward, model.fc1, device_ids=[0])
    assert ns.device_ids == [0]
    a = ns.attribute(x, target=y, perturbations_per_eval=3, **BUDGET)
    b = NeuronShapley(model, model.fc1).attribute(x, target=y, **BUDGET)
    torch.testing.assert_close(a, b)
    assert ns._model is dp  # found behind the bound method: eval mode, names
    assert _no_hooks(model)


# -- dtypes, TorchScript, deprecations, progress ---------------------------------------


def test_attributions_in_the_layer_dtype(mlp):
    model, x, y = mlp
    a = NeuronShapley(model, model.fc1).attribute(x, target=y, **BUDGET)
    assert a.dtype == torch.float32
    res = NeuronShapley(model, model.fc1).attribute(
        x, target=y, return_result=True, **BUDGET
    )
    assert res.flat_values.dtype == torch.float64
    assert torch.equal(a, res.values.float())
    m64 = MLP().double().eval()
    b = NeuronShapley(m64, m64.fc1).attribute(x.double(), target=y, **BUDGET)
    assert b.dtype == torch.float64


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_models_are_refused(mlp):
    model, x, y = mlp
    traced = torch.jit.trace(model, x[:2])
    with pytest.raises(ValueError, match="TorchScript.*forward hooks"):
        NeuronShapley(traced, traced.fc1)
    scripted = torch.jit.script(model)
    with pytest.raises(ValueError, match="TorchScript"):
        NeuronShapley(scripted, scripted.fc1)
    with pytest.raises(ValueError, match="TorchScript"):
        NeuronShapley(lambda t: traced(t), traced.fc1)
    # eager layers, traced forward: the hooks never run, and the error says so
    with pytest.raises(ValueError, match="was not called.*TorchScript"):
        NeuronShapley(lambda t: traced(t), model.fc1).attribute(x, target=y)
    assert _no_hooks(model)


def test_internal_batch_size_in_the_constructor(mlp):
    model, x, y = mlp
    ns = NeuronShapley(model, model.fc1)
    with pytest.warns(DeprecationWarning, match="internal_batch_size"):
        old = ns.attribute(x, target=y, batch_size=7, **BUDGET)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batched = NeuronShapley(model, model.fc1, internal_batch_size=7)
        new = batched.attribute(x, target=y, **BUDGET)
    assert torch.equal(old, new)
    with pytest.warns(DeprecationWarning, match="internal_batch_size"):
        with pytest.raises(ValueError, match="`internal_batch_size` only"):
            ns.attribute(x, target=y, batch_size=7, internal_batch_size=7)
    with pytest.raises(ValueError, match="`internal_batch_size` must be a positive"):
        NeuronShapley(model, model.fc1, internal_batch_size=0)


def test_progress_through_captum_helper(mlp, monkeypatch):
    import captum_neuron_shapley.estimator as est

    calls = []
    real = est.progress

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(est, "progress", spy)
    model, x, y = mlp
    NeuronShapley(model, model.fc1).attribute(x, target=y, show_progress=True, **BUDGET)
    assert calls and calls[0]["disable"] is False
