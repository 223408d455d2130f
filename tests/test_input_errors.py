"""Bad input gets an error that names the argument and says what to do:
non-finite inputs and baselines, a model and inputs of different dtypes or
devices, a checkpoint passed to ShapleyResult.load, and layers given by name
(accepted the same way wherever a layer is taken, with a clear error for an
unknown name)."""

import pytest
import torch

from captum_neuron_shapley import (
    ablated,
    Checkpoint,
    FilterShapley,
    NeuronShapley,
    ShapleyResult,
)
from captum_neuron_shapley.ablation import metric_after_removal
from captum_neuron_shapley.visualization import (
    feature_visualization,
    plot_feature_visualization,
    top_activating,
    unit_saliency,
)
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .test_model_state_and_errors import _assert_unchanged, _snapshot


@pytest.fixture
def data(tiny_data):
    (x, y), _ = tiny_data
    return x[:60], y[:60]


# -- non-finite inputs and baselines ----------------------------------------------


def test_one_nan_pixel_is_refused_with_its_count(tiny, data):
    x, y = data
    x = x.clone()
    x[3, 0, 2, 2] = float("nan")
    snap = _snapshot(tiny)
    with pytest.raises(
        ValueError, match=r"`inputs` has 1 non-finite value \(1 NaN, 0 infinite\)"
    ):
        FilterShapley(tiny, tiny.conv1).attribute(x, target=y, max_permutations=2)
    _assert_unchanged(tiny, snap)


def test_all_nan_and_infinite_inputs_are_refused(tiny, data):
    x, y = data
    nan = torch.full_like(x, float("nan"))
    with pytest.raises(ValueError, match=f"has {x.numel()} non-finite values"):
        FilterShapley(tiny, tiny.conv1).attribute(nan, target=y, max_permutations=2)
    inf = x.clone()
    inf[0, 0, 0, :2] = float("inf")
    inf[1, 0, 0, 0] = -float("inf")
    with pytest.raises(ValueError, match=r"3 non-finite values \(0 NaN, 3 infinite\)"):
        FilterShapley(tiny, tiny.conv1).attribute(inf, target=y, max_permutations=2)


def test_non_finite_inputs_are_found_in_tuples_and_dataloaders():
    model = _TwoInputs()
    a, b = torch.randn(20, 3), torch.randn(20, 3)
    b[4, 1] = float("nan")
    y = torch.randint(0, 2, (20,))
    ns = NeuronShapley(model, model.fc)
    with pytest.raises(ValueError, match=r"`inputs` \(tensor 1\) has 1 non-finite"):
        ns.attribute((a, b), target=y, max_permutations=2)
    loader = DataLoader(TensorDataset(a, b, y), batch_size=3)
    with pytest.raises(
        ValueError,
        match=r"`inputs` \(tensor 1\) in DataLoader batch 1 has 1 non-finite value",
    ):
        ns.attribute(loader, max_permutations=2)


def test_non_finite_layer_baselines_are_refused(tiny, data):
    x, y = data
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    with pytest.raises(ValueError, match="`layer_baselines` for layer 'conv1' is nan"):
        fs.attribute(x, target=y, layer_baselines=float("nan"), max_permutations=2)
    bad = torch.zeros(3, 1, 1)
    bad[1] = float("inf")
    with pytest.raises(
        ValueError,
        match=r"`layer_baselines` for layer 'conv2' has 1 non-finite value "
        r"\(0 NaN, 1 infinite\) among its 3",
    ):
        fs.attribute(x, target=y, layer_baselines=(0.0, bad), max_permutations=2)


def test_non_finite_baselines_of_ablated_are_refused_before_any_hook(tiny, data):
    x, _ = data
    with pytest.raises(ValueError, match="`baselines` for layer 'conv2' is inf"):
        with ablated(tiny, {"conv2": [0]}, baselines={"conv2": float("inf")}):
            pass
    assert all(not m._forward_hooks for m in tiny.modules())


def test_metric_after_removal_refuses_non_finite_inputs(tiny, data):
    x, y = data
    res = FilterShapley(tiny, tiny.conv1).attribute(
        x, target=y, max_permutations=2, seed=0, return_result=True
    )
    x = x.clone()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="`inputs` has 1 non-finite value"):
        metric_after_removal(tiny, res, [[]], x, y)


# -- dtype and device -------------------------------------------------------------


@pytest.mark.parametrize("cache", [True, False])
def test_float64_model_with_float32_inputs(tiny, data, cache):
    x, y = data
    model = tiny.double()
    snap = _snapshot(model)
    fs = FilterShapley(model, model.conv1, cache_activations=cache)
    with pytest.raises(
        ValueError,
        match=r"the model's parameters are torch\.float64 but `inputs` is "
        r"torch\.float32: convert the inputs \(x\.to\(torch\.float64\)\) or the "
        r"model \(model\.to\(torch\.float32\)\)",
    ) as err:
        fs.attribute(x, target=y, max_permutations=2)
    assert isinstance(err.value.__cause__, RuntimeError)  # torch's own message kept
    _assert_unchanged(model, snap)
    with pytest.raises(ValueError, match="torch.float64 but `inputs` is"):
        fs.compute_convergence_delta(torch.zeros(4), x, target=y)
    assert fs.attribute(x.double(), target=y, max_permutations=2, seed=0).shape == (4,)


def test_model_and_inputs_on_different_devices(tiny, data):
    # the "meta" device stands in for an accelerator: a CPU tensor cannot meet it
    x, y = data
    model = tiny.to("meta")
    with pytest.raises(
        ValueError,
        match=r"the model is on meta but `inputs` is on cpu: move them to the "
        r"model's device \(x\.to\('meta'\)\) or the model to theirs",
    ):
        FilterShapley(model, model.conv1).attribute(x, target=y, max_permutations=2)
    assert all(not m._forward_hooks for m in model.modules())


def test_removal_helpers_explain_a_dtype_mismatch(tiny, data):
    x, y = data
    res = FilterShapley(tiny, tiny.conv1).attribute(
        x, target=y, max_permutations=2, seed=0, return_result=True
    )
    with pytest.raises(ValueError, match="torch.float32 but `inputs` is torch.float64"):
        metric_after_removal(tiny, res, [[], [0]], x.double(), y)


def test_other_runtime_errors_pass_unchanged(data):
    x, y = data

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            raise RuntimeError("broken on purpose")

    model = Broken()
    with pytest.raises(RuntimeError, match="broken on purpose"):
        FilterShapley(model, model.conv).attribute(x, target=y, max_permutations=2)


# -- ShapleyResult.load on a checkpoint --------------------------------------------


def test_load_on_a_checkpoint_says_how_to_get_its_result(tiny, data, tmp_path):
    x, y = data
    path = tmp_path / "run.pt"
    fs = FilterShapley(tiny, [tiny.conv1, tiny.conv2])
    kw = dict(target=y, top_k=2, seed=0, return_result=True)
    done = fs.attribute(x, max_evaluations=150, stop=Checkpoint(path), **kw)
    n = done.n_evaluations
    with pytest.raises(
        ValueError,
        match=rf"is a checkpoint of a run \({n} evaluations\), written by "
        r"Checkpoint, not a ShapleyResult saved by \.save\(\)\. To get its result, "
        r"call attribute again with that run's arguments and stop=Checkpoint\(",
    ):
        ShapleyResult.load(path)
    # what the message says works, and gives the run's result without sampling
    again = fs.attribute(x, max_evaluations=n, stop=Checkpoint(path), **kw)
    assert again.n_evaluations == n
    assert torch.equal(again.flat_values, done.flat_values)
    # a saved result loads
    done.save(tmp_path / "res.pt")
    assert torch.equal(
        ShapleyResult.load(tmp_path / "res.pt").flat_values, done.flat_values
    )


def test_load_on_another_file_names_what_it_holds(tiny, tmp_path):
    torch.save(tiny.state_dict(), tmp_path / "model.pt")
    with pytest.raises(
        ValueError,
        match="is not a ShapleyResult saved by .save\\(\\): it holds "
        "'conv1.weight', 'conv1.bias'",
    ):
        ShapleyResult.load(tmp_path / "model.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="it holds a Tensor"):
        ShapleyResult.load(tmp_path / "tensor.pt")
    (tmp_path / "notes.txt").write_text("not a torch file")
    with pytest.raises(ValueError, match="cannot be read as a ShapleyResult"):
        ShapleyResult.load(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError):
        ShapleyResult.load(tmp_path / "missing.pt")


# -- layers by name ------------------------------------------------------------------


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, a, b):
        return self.out(torch.relu(self.fc(torch.cat([a, b], 1))))


class _Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 36, 3))

    def forward(self, x):
        return self.head(self.block(x))


def test_the_classes_take_layer_names(tiny, data):
    x, y = data
    kw = dict(target=y, max_permutations=6, seed=0)
    by_module = FilterShapley(tiny, [tiny.conv1, tiny.conv2]).attribute(x, **kw)
    by_name = FilterShapley(tiny, ["conv1", "conv2"]).attribute(x, **kw)
    mixed = FilterShapley(tiny, ("conv1", tiny.conv2)).attribute(x, **kw)
    for a, b, c in zip(by_module, by_name, mixed):
        assert torch.equal(a, b) and torch.equal(a, c)
    single = FilterShapley(tiny, "conv2")
    assert single.layer is tiny.conv2  # Captum's attribute holds the module
    assert torch.equal(
        single.attribute(x, **kw), FilterShapley(tiny, tiny.conv2).attribute(x, **kw)
    )
    model = _Nested()
    res = NeuronShapley(model, "block.0").attribute(
        x, target=y, max_permutations=2, seed=0, return_result=True
    )
    assert res.layers[0].name == "block.0"


def test_unknown_layer_names_get_suggestions(tiny):
    with pytest.raises(
        ValueError,
        match=r"`layer`: the model has no layer named 'conv5'; did you mean "
        r"'conv\d' or 'conv\d'\?",
    ):
        FilterShapley(tiny, "conv5")
    with pytest.raises(ValueError, match="its layers are named like 'conv1'"):
        FilterShapley(tiny, ["conv1", "xyz"])
    with pytest.raises(ValueError, match="`layer` 'conv1' is a layer name, which"):
        FilterShapley(lambda x: tiny(x), "conv1")
    with pytest.raises(ValueError, match="not a submodule of the model"):
        FilterShapley(tiny, nn.Conv2d(1, 1, 1))


def test_ablated_and_visualization_take_the_same_names(tiny, data):
    x, y = data
    with torch.no_grad():
        with ablated(tiny, {"conv2": [0, 2]}) as m:
            by_name = m(x)
        with ablated(tiny, {tiny.conv2: [0, 2]}) as m:
            by_module = m(x)
    assert torch.equal(by_name, by_module)
    with pytest.raises(ValueError, match="`units`: the model has no layer named"):
        with ablated(tiny, {"conv9": [0]}):
            pass
    i1, a1 = top_activating(tiny, "conv2", 1, x, n=5)
    i2, a2 = top_activating(tiny, tiny.conv2, 1, x, n=5)
    assert torch.equal(i1, i2) and torch.equal(a1, a2)
    s1 = unit_saliency(tiny, "conv1", 0, x[:3], method="gradient")
    s2 = unit_saliency(tiny, tiny.conv1, 0, x[:3], method="gradient")
    assert torch.equal(s1, s2)
    f1 = feature_visualization(tiny, "conv2", 0, (1, 6, 6), steps=3)
    f2 = feature_visualization(tiny, tiny.conv2, 0, (1, 6, 6), steps=3)
    assert torch.equal(f1, f2)
    with pytest.raises(ValueError, match="`layer`: the model has no layer named"):
        top_activating(tiny, "conv3", 0, x)
    with pytest.raises(ValueError, match="not a submodule of the model"):
        top_activating(tiny, nn.Conv2d(1, 1, 1), 0, x)


def test_feature_visualization_figure_takes_top_units(tiny, data):
    x, y = data
    res = FilterShapley(tiny, [tiny.conv1, tiny.conv2]).attribute(
        x, target=y, max_permutations=2, seed=0, return_result=True
    )
    fig = plot_feature_visualization(tiny, res.top_units(2), (1, 6, 6), steps=2)
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="`units`: the model has no layer named"):
        plot_feature_visualization(tiny, [("conv7", 0)], (1, 6, 6), steps=2)
