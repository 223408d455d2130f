r"""HeadShapley: the heads of PyTorch's nn.MultiheadAttention (inside
nn.TransformerEncoderLayer) and of a hand-written output projection, against
exact enumeration and an independent removal; PyTorch's fast path and the
modules are left as they were; DataParallel and DistributedDataParallel."""

import copy
import unittest

from typing import Tuple

import torch
import torch.distributed as dist
from captum.testing.helpers import BaseTest
from captum.testing.helpers.basic import assertTensorAlmostEqual
from captum_neuron_shapley import HeadShapley
from captum_neuron_shapley.exact import exact_values
from captum_neuron_shapley.metrics import NegativeCrossEntropy
from torch import nn, Tensor

# See test_neuron_shapley.py: |estimate - exact| <= Z_TOL * stderr, for at most
# 4 units per test.
Z_TOL = 4.5


def _tensor(a: object) -> Tensor:
    r"""The attribution of a layer with one output tensor."""
    assert isinstance(a, Tensor)
    return a


def _tensors(a: object) -> Tuple[Tensor, ...]:
    r"""The attributions of several layers or of a tuple output: one per tensor."""
    assert isinstance(a, tuple) and all(isinstance(t, Tensor) for t in a)
    return a


class _Encoder(nn.Module):
    r"""Two PyTorch encoder layers of two heads each, mean-pooled, 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
                for _ in range(2)
            ]
        )
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x.mean(1))

    def attention(self, i: int) -> nn.MultiheadAttention:
        layer = self.layers[i]
        assert isinstance(layer, nn.TransformerEncoderLayer)
        return layer.self_attn


class _Attention(nn.Module):
    r"""A hand-written attention block whose ``o_proj`` takes the heads'
    outputs concatenated, as in Hugging Face models."""

    def __init__(self, d: int = 8, num_heads: int = 4) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.o_proj = nn.Linear(d, d)
        self.head = nn.Linear(d, 3)

    def forward(self, x: Tensor) -> Tensor:
        n, length, d = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.num_heads, -1).unbind(2)
        att = torch.softmax(torch.einsum("nqhd,nkhd->nhqk", q, k), dim=-1)
        heads = torch.einsum("nhqk,nkhd->nqhd", att, v).reshape(n, length, d)
        return self.head(self.o_proj(heads).mean(1))


def _data(model: nn.Module, n: int = 32) -> tuple:
    x = torch.randn(n, 5, 8)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    return x, y


class Test(BaseTest):
    def test_encoder_heads_agree_with_exact_enumeration(self) -> None:
        model = _Encoder()
        x, y = _data(model)
        hs = HeadShapley(model, [model.attention(i) for i in range(2)])
        metric = NegativeCrossEntropy()
        game = hs.game(x, target=y, metric=metric)
        # nothing removed: the model's own output (its fast path included)
        with torch.no_grad():
            self.assertTrue(torch.equal(game.full_outputs, model(x)))
        exact = exact_values(game)
        res = hs.attribute(
            x,
            target=y,
            metric=metric,
            truncation=None,
            max_permutations=200,
            seed=0,
            return_result=True,
        )
        est, se = res.flat_values, res.flat_stderr
        self.assertGreater(float(exact.abs().max()), 0.01)
        self.assertTrue(bool(((est - exact).abs() <= Z_TOL * se + 1e-9).all()))
        self.assertEqual([tuple(v.shape) for v in _tensors(res.values)], [(2,), (2,)])
        for m in model.modules():
            self.assertNotIn("forward", vars(m))
            self.assertFalse(m._forward_hooks or m._forward_pre_hooks)
        self.assertTrue(torch.backends.mha.get_fastpath_enabled())

    def test_removal_equals_zeroed_projection_columns(self) -> None:
        model = _Attention()
        x, y = _data(model)
        hs = HeadShapley(model, model.o_proj)  # heads counted from the parent
        game = hs.game(x, target=y, layer_baselines=0.0)
        keep = torch.tensor([[True, False, True, False]])
        got = game.outputs(keep)[0]
        with torch.no_grad():
            saved = model.o_proj.weight.clone()
            model.o_proj.weight[:, 2:4] = 0.0  # head 1 (head_dim 2)
            model.o_proj.weight[:, 6:8] = 0.0  # head 3
            want = model(x)
            model.o_proj.weight.copy_(saved)
        assertTensorAlmostEqual(self, got, want, delta=1e-5, mode="max")
        phi = hs.attribute(x, target=y, layer_baselines=0.0, max_permutations=4)
        self.assertEqual(tuple(_tensor(phi).shape), (4,))

    def test_data_parallel_and_ddp(self) -> None:
        model = _Encoder()
        x, y = _data(model, 12)
        layer = model.attention(0)
        kwargs = dict(target=y, max_permutations=4, seed=0)
        plain = HeadShapley(model, layer).attribute(x, **kwargs)
        # a copy: with GPUs, DataParallel moves its module to the first one
        copied = copy.deepcopy(model)
        dp = HeadShapley(nn.DataParallel(copied), copied.attention(0))
        if torch.cuda.is_available():
            # heads of nn.MultiheadAttention are refused: DataParallel's
            # replicas would not see the patched forward
            with self.assertRaisesRegex(ValueError, "DataParallel"):
                dp.attribute(x.cuda(), **kwargs)
        else:  # without GPUs, DataParallel runs the module itself
            got = dp.attribute(x, **kwargs)
            assertTensorAlmostEqual(self, got, plain, delta=1e-6, mode="max")
        if not dist.is_available():
            raise unittest.SkipTest("torch.distributed is not available")
        started = not dist.is_initialized()
        if started:  # a group of one process, in memory
            dist.init_process_group(
                "gloo", store=dist.HashStore(), rank=0, world_size=1
            )
        try:
            ddp = nn.parallel.DistributedDataParallel(model)
            got = HeadShapley(ddp, layer).attribute(x, **kwargs)
            assertTensorAlmostEqual(self, got, plain, delta=1e-6, mode="max")
            if torch.cuda.is_available():  # one process on its GPU
                on_gpu = copy.deepcopy(model).cuda()
                ddp = nn.parallel.DistributedDataParallel(on_gpu, device_ids=[0])
                got = HeadShapley(ddp, on_gpu.attention(0)).attribute(
                    x.cuda(), target=y.cuda(), max_permutations=4, seed=0
                )
                assertTensorAlmostEqual(
                    self, _tensor(got).cpu(), plain, delta=1e-4, mode="max"
                )
        finally:
            if started:
                dist.destroy_process_group()

    def test_bad_layers_are_refused(self) -> None:
        model = _Encoder()
        with self.assertRaisesRegex(ValueError, "layer"):
            HeadShapley(model, model.head)
        with self.assertRaisesRegex(ValueError, "num_heads"):
            HeadShapley(model, model.attention(0), num_heads=3)
