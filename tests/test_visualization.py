"""Figures: each returns a Figure, saves on request and leaves the model as it was."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from captum_neuron_shapley import FilterShapley  # noqa: E402
from captum_neuron_shapley.ablation import removal_curves  # noqa: E402
from captum_neuron_shapley.visualization import (  # noqa: E402
    feature_visualization,
    plot_feature_visualization,
    plot_layer_distribution,
    plot_removal_curves,
    plot_unit_exemplars,
    plot_unit_saliency,
    plot_values,
    top_activating,
    unit_saliency,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture
def run(tiny, tiny_data):
    (x, y), (xt, yt) = tiny_data
    res = FilterShapley(tiny, [tiny.conv1, tiny.conv2]).attribute(
        x, target=y, max_permutations=4, seed=0, return_result=True
    )
    return tiny, res, x, y, xt, yt


def _state(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
    )


def _same(model, state):
    sd, flags = state
    return (
        all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
        and flags == [m.training for m in model.modules()]
        and all(not m._forward_hooks for m in model.modules())
        and all(p.grad is None for p in model.parameters())
    )


def test_result_figures(run, tmp_path):
    model, res, _, _, xt, yt = run
    fig = plot_layer_distribution(res, k=3, save_path=tmp_path / "layers.png")
    assert fig.axes and (tmp_path / "layers.png").stat().st_size > 1000
    fig = plot_values(res, k=2, save_path=tmp_path / "values.png")
    assert len(fig.axes[0].patches) == 4 and (tmp_path / "values.png").exists()
    assert len(plot_values(res, k=None).axes[0].patches) == 7
    curves = removal_curves(model, res, xt, yt, ks=[0, 1, 3], seeds=[0, 1])
    fig = plot_removal_curves(curves, save_path=tmp_path / "curves.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("top" in t for t in labels) and any("random (2" in t for t in labels)


def test_unit_pictures(run, tmp_path):
    model, _, x, _, _, _ = run
    model.train()
    state = _state(model)
    idx, act = top_activating(model, model.conv2, 1, x, n=3)
    with torch.no_grad():
        full = model.conv2(model.relu1(model.conv1(x)))[:, 1].flatten(1).mean(1)
    assert torch.allclose(act, full.sort(descending=True).values[:3])
    for method in ("guided_backprop", "gradient"):
        sal = unit_saliency(model, model.conv2, 1, x[idx], method)
        assert sal.shape == x[idx].shape and bool(torch.isfinite(sal).all())
    grad = unit_saliency(model, model.conv2, 1, x[idx], "gradient")
    assert grad.abs().sum() > 0
    fig = plot_unit_exemplars(
        model, model.conv2, 1, x, n=3, save_path=tmp_path / "ex.png"
    )
    assert len(fig.axes) >= 6 and (tmp_path / "ex.png").exists()
    fig = plot_unit_saliency(
        model, model.conv2, 1, x[idx[0]], "gradient", save_path=tmp_path / "s.png"
    )
    assert len(fig.axes) >= 3 and (tmp_path / "s.png").exists()
    assert _same(model, state)
    with pytest.raises(ValueError, match="`method`"):
        unit_saliency(model, model.conv2, 1, x[:2], "lrp")
    with pytest.raises(ValueError, match="`channel` 9"):
        top_activating(model, model.conv2, 9, x)


def test_feature_visualization(run, tmp_path):
    model, _, _, _, _, _ = run
    state = _state(model)
    img = feature_visualization(model, model.conv2, 0, (1, 6, 6), steps=40)
    assert img.shape == (1, 6, 6) and 0 <= float(img.min()) <= float(img.max()) <= 1
    acts = []
    h = model.conv2.register_forward_hook(lambda m, i, o: acts.append(o[:, 0].mean()))
    with torch.no_grad():
        model(img.unsqueeze(0))
        model(torch.full((1, 1, 6, 6), 0.5))
    h.remove()
    assert acts[0] > acts[1]  # the optimized image excites the channel more
    fig = plot_feature_visualization(
        model,
        [(model.conv1, 0), (model.conv2, 2)],
        (1, 6, 6),
        steps=10,
        save_path=tmp_path / "fv.png",
    )
    assert (tmp_path / "fv.png").exists() and len(fig.axes) == 2
    assert _same(model, state)
    with pytest.raises(ValueError, match="`channel` 7"):
        feature_visualization(model, model.conv2, 7, (1, 6, 6), steps=2)
    assert _same(model, state)
