"""Attention heads as players: HeadShapley on PyTorch's own attention modules and
on hand-written Hugging-Face-style blocks, against exact enumeration and against
an independent removal (zeroed columns of the output projection)."""

import pytest
import torch

from captum_neuron_shapley import (
    feature_mask,
    HeadShapley,
    NegativeCrossEntropy,
    NeuronShapley,
    ShapleyResult,
)
from captum_neuron_shapley.ablation import ablated, metric_after_removal, removal_curves
from captum_neuron_shapley.exact import exact_values
from captum_neuron_shapley.heads import _fastpath_disabled, _HeadsForward
from captum_neuron_shapley.repair import export_repaired
from torch import nn

from .conftest import Z_TOL
from .transformer_blocks import (
    BertLayer,
    EncoderClassifier,
    GPT2Block,
    LlamaBlock,
    TokenClassifier,
    zero_heads_copy,
)


@pytest.fixture(params=[True, False], ids=["fastpath-on", "fastpath-off"])
def fastpath(request):
    """Run with PyTorch's MHA fast path switched on and off (restored after)."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(request.param)
    yield request.param
    torch.backends.mha.set_fastpath_enabled(before)


def _left_clean(model, flag=True):
    assert torch.backends.mha.get_fastpath_enabled() is flag
    for m in model.modules():
        assert "forward" not in vars(m), m
        assert not m._forward_hooks and not m._forward_pre_hooks, m


def _agrees(res, exact):
    est, se = res.flat_values, res.flat_stderr
    err = (est - exact).abs()
    assert torch.isfinite(se).all()
    assert (err <= Z_TOL * se + 1e-9).all(), (est, exact, se)
    return float(err.max())


def _encoder_data(model, n=48, length=5, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, length, d, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y


def test_encoder_layer_heads_match_enumeration_under_eval_and_no_grad(fastpath):
    torch.manual_seed(0)
    model = EncoderClassifier(layers=2).eval()
    x, y = _encoder_data(model)
    layers = [layer.self_attn for layer in model.layers]
    with torch.no_grad():
        hs = HeadShapley(model, layers)
        game = hs.game(x, target=y, metric=NegativeCrossEntropy())
        # V(all) is the model's own output, nothing patched
        assert torch.equal(game.full_outputs, model(x))
        exact = exact_values(game)
        res = hs.attribute(
            x,
            target=y,
            metric=NegativeCrossEntropy(),
            truncation=None,
            max_permutations=300,
            seed=0,
            return_result=True,
        )
    assert game.n_units == 8 and exact.abs().max() > 0.01
    _agrees(res, exact)
    v0, v1 = res.values
    assert v0.shape == (4,) and v1.shape == (4,)
    _left_clean(model, fastpath)


@pytest.mark.parametrize("batch_first", [True, False])
def test_removal_equals_zeroed_output_projection_on_every_path(fastpath, batch_first):
    torch.manual_seed(1)
    model = EncoderClassifier(layers=2, batch_first=batch_first).eval()
    x, y = _encoder_data(model, n=12)
    hs = HeadShapley(model, [layer.self_attn for layer in model.layers])
    game = hs.game(x, target=y, layer_baselines=0.0, perturbations_per_eval=3)
    keep = torch.ones(4, 8, dtype=torch.bool)
    keep[0, 1] = keep[1, [0, 5]] = keep[2, 4:] = keep[3, [2, 3, 6]] = False
    got = game.outputs(keep)

    def projections(m):
        return [(layer.self_attn.out_proj, 4, False) for layer in m.layers]

    for i, k in enumerate(keep):
        gone = [(~k[:4]).nonzero().flatten().tolist(), (~k[4:]).nonzero().flatten()]
        ref = zero_heads_copy(model, projections, [gone[0], gone[1].tolist()])
        with torch.no_grad():  # the copy runs whatever path PyTorch picks
            want = ref(x)
        assert torch.allclose(got[i], want, atol=1e-5), i
    assert not torch.allclose(got[0], got[2], atol=1e-3)  # removal did something
    _left_clean(model, fastpath)


class _Attend(nn.Module):
    """An nn.MultiheadAttention called directly, with every option."""

    def __init__(self, batch_first, kdim, add_bias_kv, add_zero_attn, bias):
        super().__init__()
        self.attn = nn.MultiheadAttention(
            16,
            4,
            bias=bias,
            add_bias_kv=add_bias_kv,
            add_zero_attn=add_zero_attn,
            kdim=kdim,
            vdim=kdim,
            batch_first=batch_first,
        )
        self.batch_first = batch_first
        self.causal = torch.ones(5, 5, dtype=torch.bool).triu(1)

    def forward(self, q, kv, pad, need_weights=False, average=True):
        if not self.batch_first:
            q, kv = q.transpose(0, 1), kv.transpose(0, 1)
        self_attention = kv.shape[-1] == q.shape[-1] and torch.equal(kv, q)
        if self_attention:
            kv = q  # the same tensor: the packed projection
        out, w = self.attn(
            q,
            kv,
            kv,
            key_padding_mask=pad,
            need_weights=need_weights,
            attn_mask=self.causal if self_attention else None,
            average_attn_weights=average,
            is_causal=self_attention,
        )
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out.sum(1) if w is None else (out.sum(1), w)


@pytest.mark.parametrize(
    "batch_first,kdim,add_bias_kv,add_zero_attn,bias",
    [
        (True, None, False, False, True),
        (False, None, True, True, True),
        (True, 12, False, True, False),
        (False, 12, True, False, True),
    ],
)
def test_every_option_passes_through(
    batch_first, kdim, add_bias_kv, add_zero_attn, bias
):
    torch.manual_seed(2)
    model = _Attend(batch_first, kdim, add_bias_kv, add_zero_attn, bias).eval()
    n = 6
    q = torch.randn(n, 5, 16)
    kv = q if kdim is None else torch.randn(n, 5, kdim)
    pad = torch.zeros(n, 5, dtype=torch.bool)
    pad[:3, -1] = True  # a padded key in some examples
    hs = HeadShapley(model, "attn")
    probe = hs._layers[0]
    for need, avg in ((False, True), (True, True), (True, False)):
        with torch.no_grad():
            plain = model(q, kv, pad, need, avg)
            with probe.activate():
                assert isinstance(vars(model.attn)["forward"], _HeadsForward)
                routed = model(q, kv, pad, need, avg)
            with _fastpath_disabled():  # PyTorch's non-fused path
                slow = model(q, kv, pad, need, avg)
        plain, routed, slow = (
            t if isinstance(t, tuple) else (t,) for t in (plain, routed, slow)
        )
        for a, b, c in zip(plain, routed, slow):
            assert torch.allclose(a, b, atol=1e-6), (need, avg)
            assert torch.equal(b, c), (need, avg)  # the same computation
    # a removed head is the zeroed slice of out_proj's input
    game = hs.game(
        (q, kv), target=0, additional_forward_args=(pad,), layer_baselines=0.0
    )
    keep = torch.tensor([[True, False, True, False]])
    ref = zero_heads_copy(model, lambda m: [(m.attn.out_proj, 4, False)], [[1, 3]])
    with torch.no_grad():
        assert torch.allclose(game.outputs(keep)[0], ref(q, kv, pad), atol=1e-5)
    _left_clean(model)


def test_decoder_layer_self_and_cross_attention():
    torch.manual_seed(3)

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.dec = nn.TransformerDecoderLayer(16, 4, 32, batch_first=True)
            self.head = nn.Linear(16, 3)

        def forward(self, tgt, memory):
            return self.head(self.dec(tgt, memory).mean(1))

    model = Decoder().eval()
    tgt, mem = torch.randn(10, 4, 16), torch.randn(10, 6, 16)
    hs = HeadShapley(model, [model.dec.self_attn, model.dec.multihead_attn])
    game = hs.game((tgt, mem), target=1, layer_baselines=0.0)
    keep = torch.ones(1, 8, dtype=torch.bool)
    keep[0, [0, 6]] = False

    def projections(m):
        return [
            (m.dec.self_attn.out_proj, 4, False),
            (m.dec.multihead_attn.out_proj, 4, False),
        ]

    ref = zero_heads_copy(model, projections, [[0], [2]])
    with torch.no_grad():
        assert torch.allclose(game.outputs(keep)[0], ref(tgt, mem), atol=1e-5)
    _left_clean(model)


def test_everything_restored_after_an_exception_mid_forward(fastpath):
    torch.manual_seed(4)
    model = EncoderClassifier(layers=2).eval()
    x, y = _encoder_data(model, n=8)
    hs = HeadShapley(model, [layer.self_attn for layer in model.layers])
    game = hs.game(x, target=y)
    calls = []

    def boom(module, args, out):  # the second layer fails while heads are removed
        calls.append(1)
        raise RuntimeError("boom")

    handle = model.layers[1].linear2.register_forward_hook(boom)
    keep = torch.ones(1, 8, dtype=torch.bool)
    keep[0, 2] = False
    try:
        with pytest.raises(RuntimeError, match="boom"):
            game.value(keep)
    finally:
        handle.remove()
    assert calls  # it did fail inside the forward pass
    _left_clean(model, fastpath)
    # and the game still works afterwards
    assert game.value(keep).shape == (1,)
    _left_clean(model, fastpath)


def _token_data(model, n=40, seed=0, length=6, vocab=16):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(vocab, (n, length), generator=g)
    with torch.no_grad():
        y = model(tokens).argmax(1)
    return tokens, y


def test_o_proj_heads_match_enumeration_and_the_layer_mask_recipe():
    torch.manual_seed(5)
    model = TokenClassifier([LlamaBlock(), LlamaBlock()]).eval()
    x, y = _token_data(model)
    o_projs = [b.self_attn.o_proj for b in model.blocks]
    hs = HeadShapley(model, o_projs)  # 4 heads each, read from the config
    assert hs.num_heads == [4, 4]
    with torch.no_grad():
        game = hs.game(x, target=y, metric=NegativeCrossEntropy())
        exact = exact_values(game)
        res = hs.attribute(
            x,
            target=y,
            metric=NegativeCrossEntropy(),
            truncation=None,
            max_permutations=300,
            seed=1,
            return_result=True,
        )
    _agrees(res, exact)
    assert exact.abs().max() > 0.01
    # the same game as NeuronShapley on the projections' inputs grouped by head
    mask = torch.arange(32) // 8
    ns = NeuronShapley(model, o_projs)
    neuron_game = ns.game(
        x,
        target=y,
        metric=NegativeCrossEntropy(),
        layer_mask=(mask, mask + 4),
        attribute_to_layer_input=True,
        layer_baselines=tuple(u.baseline for u in game.units),  # per-dim means
    )
    keep = torch.rand(6, 8, generator=torch.Generator().manual_seed(0)) > 0.4
    assert torch.allclose(game.value(keep), neuron_game.value(keep), atol=1e-9)
    _left_clean(model)


@pytest.mark.parametrize("style", ["gpt2", "bert"])
def test_hugging_face_style_projections(style):
    torch.manual_seed(6)
    if style == "gpt2":
        model = TokenClassifier([GPT2Block(), GPT2Block()]).eval()
        layers = [b.attn.c_proj for b in model.blocks]

        def projections(m):
            return [(b.attn.c_proj, 4, True) for b in m.blocks]

    else:
        model = TokenClassifier([BertLayer(), BertLayer()]).eval()
        layers = [b.attention.output.dense for b in model.blocks]

        def projections(m):
            return [(b.attention.output.dense, 4, False) for b in m.blocks]

    x, y = _token_data(model, n=16)
    hs = HeadShapley(model, layers)
    assert hs.num_heads == [4, 4]  # GPT-2: the parent's num_heads; BERT: attention.self
    game = hs.game(x, target=y, layer_baselines=0.0)
    keep = torch.ones(2, 8, dtype=torch.bool)
    keep[0, [1, 4]] = keep[1, [0, 2, 3, 7]] = False
    out = game.outputs(keep)
    for i, gone in enumerate([([1], [0]), ([0, 2, 3], [3])]):
        ref = zero_heads_copy(model, projections, list(gone))
        with torch.no_grad():
            assert torch.allclose(out[i], ref(x), atol=1e-5)
    # the MLP's output projection of the same blocks is not an attention's
    mlp = (
        model.blocks[0].mlp.c_proj if style == "gpt2" else model.blocks[0].output.dense
    )
    with pytest.raises(ValueError, match="`num_heads` is needed"):
        HeadShapley(model, mlp)
    _left_clean(model)


def test_bert_padding_mask_through_additional_forward_args():
    torch.manual_seed(7)
    model = TokenClassifier([BertLayer()]).eval()
    x, y = _token_data(model, n=12)
    mask = torch.ones(12, 6, dtype=torch.long)
    mask[::2, -2:] = 0
    hs = HeadShapley(model, model.blocks[0].attention.output.dense)
    game = hs.game(x, target=y, additional_forward_args=(mask,), layer_baselines=0.0)
    keep = torch.tensor([[False, True, True, False]])
    ref = zero_heads_copy(
        model, lambda m: [(m.blocks[0].attention.output.dense, 4, False)], [[0, 3]]
    )
    with torch.no_grad():
        assert torch.allclose(game.outputs(keep)[0], ref(x, mask), atol=1e-5)


def test_bad_inputs():
    torch.manual_seed(8)
    model = EncoderClassifier(layers=1).eval()
    x, y = _encoder_data(model, n=4)
    with pytest.raises(ValueError, match=r"contains nn.MultiheadAttention .*self_attn"):
        HeadShapley(model, model.layers[0])
    conv = nn.Sequential(nn.Conv2d(1, 2, 3))
    with pytest.raises(ValueError, match="neither an attention module nor an output"):
        HeadShapley(conv, conv[0])
    with pytest.raises(ValueError, match="has 4 heads"):
        HeadShapley(model, model.layers[0].self_attn, num_heads=2)
    with pytest.raises(ValueError, match="`num_heads` must be a positive integer"):
        HeadShapley(model, model.layers[0].self_attn, num_heads=0)
    plain = nn.Sequential(nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 2))
    with pytest.raises(ValueError, match="`num_heads` is needed"):
        HeadShapley(plain, plain[2])
    with pytest.raises(ValueError, match=r"`num_heads` \(5\) does not divide"):
        HeadShapley(plain, plain[2], num_heads=5)
    with pytest.raises(ValueError, match="`num_heads` has 2 entries"):
        HeadShapley(plain, plain[2], num_heads=[2, 3])
    hs = HeadShapley(model, model.layers[0].self_attn)
    with pytest.raises(ValueError, match="`layer_mask` does not apply"):
        hs.attribute(x, target=y, layer_mask=torch.arange(4), max_permutations=1)
    with pytest.raises(ValueError, match="`attribute_to_layer_input` does not apply"):
        hs.attribute(x, target=y, attribute_to_layer_input=True, max_permutations=1)
    with pytest.raises(ValueError, match="does not broadcast"):
        hs.game(x, target=y, layer_baselines=torch.zeros(7))

    class Custom(nn.MultiheadAttention):
        def forward(self, *args, **kwargs):
            return super().forward(*args, **kwargs)

    odd = nn.Sequential()
    odd.attn = Custom(8, 2)
    with pytest.raises(ValueError, match="subclass of nn.MultiheadAttention"):
        HeadShapley(odd, odd.attn)
    # out_proj, never called by PyTorch, stands for its attention module
    hs = HeadShapley(model, model.layers[0].self_attn.out_proj)
    assert hs.game(x, target=y).units[0].name == "layers.0.self_attn"
    # NeuronShapley on PyTorch's attention says where the heads are
    with pytest.raises(ValueError, match="out_proj of an nn.MultiheadAttention"):
        NeuronShapley(model, model.layers[0].self_attn.out_proj).game(x, target=y)
    with pytest.raises(ValueError, match="HeadShapley takes its heads"):
        NeuronShapley(model, model.layers[0].self_attn).game(x, target=y)
    # DataParallel replicas would not see the patched forward
    with pytest.raises(ValueError, match="DataParallel"):
        HeadShapley(model, model.layers[0].self_attn, device_ids=[0]).game(x, target=y)
    # a projection the forward pass never reaches
    unused = nn.Linear(16, 16)
    model.spare = unused
    with pytest.raises(ValueError, match="were not reached"):
        HeadShapley(model, unused, num_heads=4).game(x, target=y)
    _left_clean(model)


def test_result_helpers_reproducibility_and_export():
    torch.manual_seed(9)
    model = EncoderClassifier(layers=2).eval()
    x, y = _encoder_data(model, n=40)
    layers = [layer.self_attn for layer in model.layers]
    hs = HeadShapley(model, layers)
    kw = dict(target=y, max_permutations=12, seed=3, return_result=True)
    res = hs.attribute(x, **kw)
    again = hs.attribute(x, **kw)
    assert torch.equal(res.flat_values, again.flat_values)
    other = hs.attribute(x, **{**kw, "seed": 4})
    assert not torch.equal(res.flat_values, other.flat_values)
    assert res.layers[0].kind == "head" and res.layers[0].name == "layers.0.self_attn"
    # the default baseline: each dimension's mean over examples and positions
    base = res.layers[0].baseline
    assert base.shape == (5, 16) and torch.allclose(base, base[:1].expand(5, 16))
    res2 = HeadShapley(model, layers).attribute(x, layer_baselines=0.0, **kw)
    assert not torch.equal(res.flat_values, res2.flat_values)
    top = res.top_units(3)
    assert all(name.startswith("layers.") and 0 <= h < 4 for name, h, _ in top)
    # the helpers remove what the game removed
    game = hs.game(x, target=y)
    keep = torch.ones(1, 8, dtype=torch.bool)
    keep[0, res.flat_indices(top)] = False
    want = game.outputs(keep)[0]
    with ablated(model, top, result=res) as m, torch.no_grad():
        assert torch.allclose(m(x), want, atol=1e-6)
        with pytest.raises(RuntimeError, match="nested removal contexts"):
            game.outputs(keep)  # a second removal on the same attention
    _left_clean(model)
    after = metric_after_removal(model, res, [[], top], x, y)
    assert float(after[0]) == game.full_value()
    assert float(after[1]) == pytest.approx(float(game.value(keep)[0]))
    # save / load rebuilds the head sites by name
    path = __import__("tempfile").mkdtemp() + "/heads.pt"
    res.save(path)
    loaded = ShapleyResult.load(path)
    assert torch.equal(loaded.values[1], res.values[1])
    assert torch.equal(metric_after_removal(model, loaded, [top], x, y), after[1:])
    # exported: removed heads' columns of out_proj zeroed, their mean in the bias
    fixed = export_repaired(model, res, top)
    with torch.no_grad():
        assert torch.allclose(fixed(x), game.outputs(keep)[0], atol=1e-5)
    assert not torch.allclose(fixed(x), model(x), atol=1e-3)
    curves = removal_curves(model, res, x, y, ks=[0, 2, 8], seeds=[0, 1])
    assert float(curves["top"][0]) == game.full_value()
    assert float(curves["top"][2]) == float(curves["random"][0, 2])  # all 8 gone
    # refine searches removal sets of heads
    refined = hs.attribute(
        x,
        target=y,
        top_k=2,
        refine="greedy",
        max_permutations=8,
        seed=0,
        return_result=True,
    )
    assert len(refined.removal_set) == 2
    _left_clean(model)


def test_export_of_projection_heads_and_bias_free_projections():
    torch.manual_seed(10)
    gpt = TokenClassifier([GPT2Block()]).eval()
    x, y = _token_data(gpt, n=20)
    res = HeadShapley(gpt, gpt.blocks[0].attn.c_proj).attribute(
        x, target=y, max_permutations=4, seed=0, return_result=True
    )
    game = HeadShapley(gpt, gpt.blocks[0].attn.c_proj).game(x, target=y)
    fixed = export_repaired(gpt, res, [1, 2])
    keep = torch.tensor([[True, False, False, True]])
    with torch.no_grad():
        assert torch.allclose(fixed(x), game.outputs(keep)[0], atol=1e-5)
    llama = TokenClassifier([LlamaBlock()]).eval()  # o_proj has no bias
    x, y = _token_data(llama, n=20)
    hs = HeadShapley(llama, llama.blocks[0].self_attn.o_proj)
    res = hs.attribute(x, target=y, max_permutations=4, seed=0, return_result=True)
    with pytest.raises(ValueError, match="no bias"):
        export_repaired(llama, res, [0])
    zero = hs.attribute(
        x, target=y, layer_baselines=0.0, max_permutations=4, seed=0, return_result=True
    )
    fixed = export_repaired(llama, zero, [0])
    game = hs.game(x, target=y, layer_baselines=0.0)
    with torch.no_grad():
        want = game.outputs(torch.tensor([[False, True, True, True]]))[0]
        assert torch.allclose(fixed(x), want, atol=1e-5)


def test_mlp_neurons_one_unit_per_feature():
    torch.manual_seed(11)
    model = EncoderClassifier(layers=1).eval()
    x, y = _encoder_data(model, n=30)
    enc = model.layers[0]
    ns = NeuronShapley(model, enc.linear2)
    kw = dict(
        target=y,
        attribute_to_layer_input=True,
        layer_mask=feature_mask(32),
        layer_baselines="mean",
    )
    game = ns.game(x, **kw)
    assert game.n_units == 32
    # the baseline: each neuron's mean over the examples and the positions
    u = game.units[0]
    with torch.no_grad():
        hidden = enc.activation(
            enc.linear1(enc.norm1(x + enc._sa_block(x, None, None)))
        )
    assert torch.allclose(u.baseline.expand(5, 32)[0], hidden.mean((0, 1)), atol=1e-5)
    assert torch.allclose(u.baseline.expand(5, 32), u.baseline.expand(5, 32)[:1])
    res = ns.attribute(x, **kw, max_permutations=3, seed=0, return_result=True)
    phi = res.values
    assert phi.shape == (5, 32) and torch.equal(phi, phi[:1].expand(5, 32))
    # exported exactly: the removed neurons' columns of linear2 zeroed, their
    # mean folded into its bias
    gone = [3, 10, 31]
    fixed = export_repaired(model, res, gone)
    keep = torch.ones(1, 32, dtype=torch.bool)
    keep[0, gone] = False
    with torch.no_grad():
        assert torch.allclose(fixed(x), game.outputs(keep)[0], atol=1e-5)
    # pre-activation neurons (linear1's output) export as before
    pre = NeuronShapley(model, enc.linear1).attribute(
        x,
        target=y,
        layer_mask=feature_mask(32),
        layer_baselines="mean",
        max_permutations=2,
        seed=0,
        return_result=True,
    )
    fixed = export_repaired(model, pre, gone)
    pre_game = NeuronShapley(model, enc.linear1).game(
        x, target=y, layer_mask=feature_mask(32), layer_baselines="mean"
    )
    with torch.no_grad():
        assert torch.allclose(fixed(x), pre_game.outputs(keep)[0], atol=1e-5)
    _left_clean(model)


def test_feature_mask_with_several_coalitions_per_pass():
    # a mask with fewer dimensions than the layer tensor lines up with it when
    # several coalitions share a forward pass
    torch.manual_seed(12)
    model = EncoderClassifier(layers=1).eval()
    x, y = _encoder_data(model, n=3)
    ns = NeuronShapley(model, model.layers[0].linear1)
    keep = torch.rand(3, 32, generator=torch.Generator().manual_seed(1)) > 0.5
    one = ns.game(x, target=y, layer_mask=feature_mask(32), layer_baselines=0.0)
    three = ns.game(
        x,
        target=y,
        layer_mask=feature_mask(32),
        layer_baselines=0.0,
        perturbations_per_eval=3,
    )
    assert torch.allclose(one.outputs(keep), three.outputs(keep), atol=1e-6)
    with pytest.raises(ValueError, match="`num_features` must be a positive"):
        feature_mask(0)
    # a sequence-first layer holds positions along dimension 0: refused
    seq_first = EncoderClassifier(layers=1, batch_first=False).eval()
    ns = NeuronShapley(seq_first, seq_first.layers[0].linear1)
    with pytest.raises(ValueError, match="saw 5 rows where the model was given 3"):
        ns.game(x, target=y, layer_mask=feature_mask(32))
    x12, y12 = _encoder_data(seq_first, n=12)
    with pytest.raises(ValueError, match="saw 5 rows where the model was given 12"):
        ns.game(x12, target=y12, layer_mask=feature_mask(32))


def test_vision_transformer_all_layers_one_joint_game():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(13)
    vit = VisionTransformer(
        image_size=16,
        patch_size=8,
        num_layers=12,
        num_heads=2,
        hidden_dim=8,
        mlp_dim=16,
        num_classes=3,
    ).eval()
    x = torch.randn(6, 3, 16, 16)
    with torch.no_grad():
        y = vit(x).argmax(1)
    blocks = vit.encoder.layers
    hs = HeadShapley(vit, [b.self_attention for b in blocks])
    res = hs.attribute(x, target=y, max_evaluations=60, seed=0, return_result=True)
    assert len(res.values) == 12 and all(v.shape == (2,) for v in res.values)
    game = hs.game(x, target=y, layer_baselines=0.0)
    keep = torch.ones(1, 24, dtype=torch.bool)
    keep[0, [0, 7, 23]] = False

    def projections(m):
        return [(b.self_attention.out_proj, 2, False) for b in m.encoder.layers]

    gone = [[0]] + [[]] * 2 + [[1]] + [[]] * 7 + [[1]]
    ref = zero_heads_copy(vit, projections, gone)
    with torch.no_grad():
        assert torch.allclose(game.outputs(keep)[0], ref(x), atol=1e-5)
    _left_clean(vit)


@pytest.mark.slow
def test_vit_b_16_heads_of_all_layers():
    from torchvision.models import vit_b_16

    torch.manual_seed(14)
    vit = vit_b_16(weights=None).eval()
    nn.init.normal_(vit.heads.head.weight, std=0.02)  # torchvision zeroes it
    hs = HeadShapley(
        vit, [f"encoder.layers.encoder_layer_{i}.self_attention" for i in range(12)]
    )
    assert hs.num_heads == [12] * 12
    x = torch.randn(2, 3, 224, 224)
    game = hs.game(x, target=0)
    assert game.n_units == 144
    keep = torch.ones(2, 144, dtype=torch.bool)
    keep[1, :12] = False
    out = game.outputs(keep)
    assert torch.allclose(out[0], game.full_outputs, atol=1e-4)
    assert not torch.allclose(out[1], game.full_outputs, atol=1e-4)
    _left_clean(vit)


def test_dataloader_inputs():
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(15)
    model = EncoderClassifier(layers=1).eval()
    x, y = _encoder_data(model, n=24)
    hs = HeadShapley(model, model.layers[0].self_attn)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    streamed = hs.game(loader)
    in_memory = hs.game(x, target=y)
    with torch.no_grad():  # PyTorch's own outputs, batch by batch
        plain = torch.cat([model(x[i : i + 8]) for i in range(0, 24, 8)])
    assert torch.equal(streamed.full_outputs, plain)
    keep = torch.tensor([[True, False, True, True], [False, False, True, False]])
    assert torch.allclose(streamed.value(keep), in_memory.value(keep))
    res = hs.attribute(loader, max_permutations=4, seed=0, return_result=True)
    assert res.values.shape == (4,)
    _left_clean(model)


def test_cached_prefix_gives_the_same_game():
    # heads of the second layer only: the first layer and the embedding run
    # once and are replayed for every coalition
    torch.manual_seed(16)
    model = nn.Sequential(
        nn.Linear(16, 16),
        nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, norm_first=True),
        nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, norm_first=True),
        nn.Flatten(),
        nn.Linear(80, 3),
    ).eval()
    x = torch.randn(20, 5, 16)
    hs = HeadShapley(model, model[2].self_attn)
    cached = hs.game(x, target=1, perturbations_per_eval=2)
    assert [type(m) for m in cached.prefix_modules] == [
        nn.Linear,
        nn.TransformerEncoderLayer,
        nn.LayerNorm,
    ]
    plain = hs.game(x, target=1, cache_activations=False)
    keep = torch.rand(5, 4, generator=torch.Generator().manual_seed(2)) > 0.5
    assert torch.allclose(cached.value(keep), plain.value(keep), atol=1e-6)
    _left_clean(model)
