"""The transformer baselines of the comparison (comparisons.methods.transformer)
against independent computations on small models: Michel et al.'s gate
importance against a finite difference of a gate built into a copy of the
model's weights, attribution patching against a finite difference of the
interpolation towards the baseline, Captum's per-head gradient x activation
against the signed gate derivative, conductance's per-head sums against its
completeness; and head_outputs / head_sums, which expose the heads to Captum."""

import copy

import pytest
import torch
from captum.attr import LayerActivation

from captum_neuron_shapley import head_outputs, head_sums, HeadShapley
from comparisons.methods import transformer as T
from torch import nn

from .transformer_blocks import EncoderClassifier, LlamaBlock, TokenClassifier

# Central differences in float64 with step 1e-5 are accurate to ~1e-9 relative;
# the methods compute the same derivatives by autograd. 1e-6 leaves room for
# the sums over examples and positions.
RTOL = 1e-6


def _loglik(outputs, y):
    return torch.log_softmax(outputs, -1).gather(1, y[:, None]).squeeze(1)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    model = EncoderClassifier(d=16, heads=4, layers=2).double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 5, 16, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::3] = (y[::3] + 1) % 3  # some wrong answers: gradients of both signs
    return model, x, y


def _per_example_fd(model, edit, x, y, eps=1e-5):
    """d loglik(x) / d t at t = 0 for a copy of ``model`` edited by
    ``edit(copy, t)``, by central differences, per example."""
    vals = []
    for t in (eps, -eps):
        m = copy.deepcopy(model)
        with torch.no_grad():
            edit(m, t)
            vals.append(_loglik(m(x), y))
    return (vals[0] - vals[1]) / (2 * eps)


def _scale_head(layer, head, heads=4):
    """edit(m, t): head ``head`` of attention ``layer`` multiplied by (1 + t),
    through its columns of out_proj."""

    def edit(m, t):
        w = m.layers[layer].self_attn.out_proj.weight
        d = w.shape[1] // heads
        w[:, head * d : (head + 1) * d] *= 1 + t

    return edit


def test_gate_importance_is_the_gate_derivative(encoder):
    model, x, y = encoder
    layers = [lay.self_attn for lay in model.layers]
    with T.head_sites(model, layers) as sites:
        got = T.gate_importance(model, sites, x, y, _loglik, normalize=False)
        normed = T.gate_importance(model, sites, x, y, _loglik, batch_size=7)
    want = torch.stack(
        [
            _per_example_fd(model, _scale_head(layer, h), x, y).abs().mean()
            for layer in range(2)
            for h in range(4)
        ]
    )
    assert want.min() > 1e-4  # every gate matters a little
    torch.testing.assert_close(got, want, rtol=RTOL, atol=1e-12)
    # the paper's layer normalization: each layer's scores have unit l2 norm
    for sl in (slice(0, 4), slice(4, 8)):
        torch.testing.assert_close(normed[sl], want[sl] / want[sl].norm())
    _clean(model)


def test_gate_importance_on_o_proj_heads_and_mlp_neurons():
    torch.manual_seed(2)
    model = TokenClassifier([LlamaBlock()]).double().eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 16, (20, 6), generator=g)
    y = torch.randint(0, 3, (20,), generator=g)
    block = model.blocks[0]

    def scale(module, cols):
        def edit(m, t):
            w = dict(m.named_modules())[module].weight
            w[:, cols] *= 1 + t

        return edit

    with T.head_sites(model, [block.self_attn.o_proj]) as sites:
        heads = T.gate_importance(model, sites, x, y, _loglik, normalize=False)
    want = torch.stack(
        [
            _per_example_fd(
                model, scale("blocks.0.self_attn.o_proj", slice(8 * h, 8 * h + 8)), x, y
            )
            .abs()
            .mean()
            for h in range(4)
        ]
    )
    torch.testing.assert_close(heads, want, rtol=RTOL, atol=1e-12)
    # MLP neurons: the input features of down_proj, one gate each
    with T.neuron_sites([block.mlp.down_proj]) as sites:
        neurons = T.gate_importance(model, sites, x, y, _loglik, normalize=False)
    assert neurons.shape == (48,)
    for j in (0, 17, 47):
        fd = _per_example_fd(model, scale("blocks.0.mlp.down_proj", [j]), x, y)
        torch.testing.assert_close(neurons[j], fd.abs().mean(), rtol=RTOL, atol=1e-12)
    _clean(model)


def test_attribution_patching_is_the_first_order_effect_of_the_baseline(encoder):
    model, x, y = encoder
    layers = [lay.self_attn for lay in model.layers]
    g = torch.Generator().manual_seed(5)
    base = [torch.randn(16, generator=g, dtype=torch.float64) for _ in layers]
    with T.head_sites(model, layers) as sites:
        atp = T.attribution_patching(model, sites, x, y, base, _loglik)

    def towards_baseline(layer, head):
        # a -> a + t (b - a) on the head's slice: out_proj's columns scaled by
        # (1 - t) and t W_h b_h added to its bias
        def edit(m, t):
            proj = m.layers[layer].self_attn.out_proj
            sl = slice(4 * head, 4 * head + 4)
            proj.bias += t * proj.weight[:, sl] @ base[layer][sl]
            proj.weight[:, sl] *= 1 - t

        return edit

    want = torch.stack(
        [
            -_per_example_fd(model, towards_baseline(layer, h), x, y).mean()
            for layer in range(2)
            for h in range(4)
        ]
    )
    torch.testing.assert_close(atp, want, rtol=RTOL, atol=1e-12)
    # the default baseline is each feature's mean over examples and positions
    with T.head_sites(model, layers) as sites:
        default = T.attribution_patching(model, sites, x, y, quantity=_loglik)
        acts = LayerActivation(model, sites[0].module).attribute(x)
        means = T._mean_features(model, sites, x, None)
    torch.testing.assert_close(means[0].double(), acts.mean((0, 1)))
    assert not torch.allclose(default, atp)
    _clean(model)


def test_grad_x_act_per_head_is_the_signed_gate_derivative(encoder):
    model, x, y = encoder
    layers = [lay.self_attn for lay in model.layers]
    with T.head_sites(model, layers) as sites:
        gxa = T.unit_grad_x_act(model, sites, x, y, _loglik, batch_size=10)
    # d loglik / d gate = sum over the head's slice of g * a: Captum's
    # attributions summed per head are the derivative of the gate, signed
    want = torch.stack(
        [
            _per_example_fd(model, _scale_head(layer, h), x, y).mean()
            for layer in range(2)
            for h in range(4)
        ]
    )
    torch.testing.assert_close(gxa, want, rtol=RTOL, atol=1e-12)
    _clean(model)


class _Cut(nn.Module):
    """Attention without a residual: every path to the output runs through
    the heads, so their conductances add up to q(x) - q(baseline)."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.attn(x, x, x)[0]).mean(1))


def test_conductance_per_head_sums_are_complete():
    torch.manual_seed(4)
    model = _Cut().double().eval()
    g = torch.Generator().manual_seed(6)
    x = torch.randn(6, 4, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    base = torch.zeros(1, 4, 8, dtype=torch.float64)
    total = 0.0
    with T.head_sites(model, model.attn) as sites:
        per_head = T.unit_conductance(model, sites, x, y, base, _loglik, n_steps=200)
        for i in range(6):
            total += float(
                T.unit_conductance(
                    model, sites, x[i : i + 1], y[i : i + 1], base, _loglik, 200
                ).sum()
            )
    with torch.no_grad():
        gap = _loglik(model(x), y) - _loglik(model(base.expand_as(x)), y)
    # completeness up to the trapezoid rule's error with 200 points (the
    # path's curvature is O(1) here; the error is O(1e-5))
    assert abs(float(per_head.sum()) - float(gap.mean())) < 1e-3 * float(
        gap.abs().max()
    )
    assert abs(total / 6 - float(per_head.sum())) < 1e-10  # batches add up
    _clean(model)


def _clean(model):
    assert torch.backends.mha.get_fastpath_enabled()
    for m in model.modules():
        assert "forward" not in vars(m), m
        assert not m._forward_hooks and not m._forward_pre_hooks, m


def test_head_outputs_restores_the_model_after_an_exception(encoder):
    model, x, _ = encoder
    layers = [lay.self_attn for lay in model.layers]
    with pytest.raises(RuntimeError, match="stop"):
        with head_outputs(model, layers) as heads:
            assert [h.num_heads for h in heads] == [4, 4]
            assert not torch.backends.mha.get_fastpath_enabled()
            heads[0].register_forward_hook(lambda m, i, o: o * 0)
            raise RuntimeError("stop")
    _clean(model)
    with torch.no_grad():  # the hook's module is gone with the context
        torch.testing.assert_close(model(x), copy.deepcopy(model)(x))


def test_head_outputs_routes_the_heads_and_head_sums_adds_them_up(encoder):
    model, x, _ = encoder
    with head_outputs(model, model.layers[1].self_attn) as (heads,):
        acts = LayerActivation(model, heads).attribute(x)
        assert acts.shape == (24, 5, 16) and heads.calls > 0
        # a forward hook on the module replaces the heads' outputs: zero head 2
        mask = torch.ones(16, dtype=torch.float64)
        mask[8:12] = 0
        handle = heads.register_forward_hook(lambda m, i, o: o * mask)
        with torch.no_grad():
            routed = model(x)
        handle.remove()
    ref = copy.deepcopy(model)
    with torch.no_grad():
        ref.layers[1].self_attn.out_proj.weight[:, 8:12] = 0
        torch.testing.assert_close(routed, ref(x))
    sums = head_sums(acts, 4)
    assert sums.shape == (24, 4)
    torch.testing.assert_close(sums[:, 2], acts[..., 8:12].sum((1, 2)))
    with pytest.raises(ValueError, match="does not divide"):
        head_sums(acts, 3)
    with pytest.raises(ValueError, match="positive integer"):
        head_sums(acts, 0)
    with pytest.raises(ValueError, match="examples first"):
        head_sums(torch.ones(3), 1)
    with pytest.raises(ValueError, match="neither an attention module"):
        with head_outputs(model, model.layers[0]):
            pass
    _clean(model)


def test_method_errors():
    with pytest.raises(ValueError, match="non-empty list of Site"):
        T.gate_importance(nn.Linear(2, 2), [], torch.ones(1, 2), torch.zeros(1))
    with pytest.raises(ValueError, match="second nn.Linear"):
        with T.neuron_sites([nn.ReLU()]):
            pass
    with pytest.raises(ValueError, match="labels of the outputs' shape"):
        T.answer_log_likelihood(torch.zeros(4, 3), torch.zeros(4, 2))
    out = torch.randn(5, 2, 7)
    y = torch.randint(0, 7, (5, 2))
    torch.testing.assert_close(
        T.answer_log_likelihood(out, y),
        0.5 * (_loglik(out[:, 0], y[:, 0]) + _loglik(out[:, 1], y[:, 1])),
    )


def test_head_sites_match_headshapley_units(encoder):
    """The sites see the tensor HeadShapley removes units from."""
    model, x, y = encoder
    layers = [lay.self_attn for lay in model.layers]
    game = HeadShapley(model, layers).game(x, target=y)
    with T.head_sites(model, layers) as sites:
        means = T._mean_features(model, sites, x, None)
    for u, m in zip(game.units, means):
        torch.testing.assert_close(u.baseline.flatten().double(), m.double())
