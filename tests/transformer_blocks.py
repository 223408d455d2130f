"""Small hand-written transformer blocks in the style of Hugging Face's Llama,
GPT-2 and BERT (the same module structure and attribute names, random weights),
and models built from them and from PyTorch's own attention modules."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class LlamaAttention(nn.Module):
    """Llama-style: q/k/v/o projections without bias, heads counted in
    ``config.num_attention_heads`` and ``head_dim`` (as recent releases)."""

    def __init__(self, hidden=32, num_heads=4):
        super().__init__()

        class Config:
            num_attention_heads = num_heads
            hidden_size = hidden

        self.config = Config()
        self.head_dim = hidden // num_heads
        self.q_proj = nn.Linear(hidden, hidden, bias=False)
        self.k_proj = nn.Linear(hidden, hidden, bias=False)
        self.v_proj = nn.Linear(hidden, hidden, bias=False)
        self.o_proj = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x):
        n, length, _ = x.shape
        h, d = self.config.num_attention_heads, self.head_dim

        def split(t):
            return t.view(n, length, h, d).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(att.transpose(1, 2).reshape(n, length, h * d))


class LlamaMLP(nn.Module):
    def __init__(self, hidden=32, inner=48):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    def __init__(self, hidden=32, num_heads=4):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(hidden)
        self.self_attn = LlamaAttention(hidden, num_heads)
        self.post_attention_layernorm = nn.LayerNorm(hidden)
        self.mlp = LlamaMLP(hidden)

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class Conv1D(nn.Module):
    """GPT-2's ``Conv1D``: a linear layer whose weight is ``(in, out)``."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.2)
        self.bias = nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


class GPT2Attention(nn.Module):
    def __init__(self, hidden=32, num_heads=4):
        super().__init__()
        self.embed_dim = hidden
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        self.split_size = hidden
        self.c_attn = Conv1D(3 * hidden, hidden)
        self.c_proj = Conv1D(hidden, hidden)

    def forward(self, x):
        n, length, _ = x.shape
        q, k, v = self.c_attn(x).split(self.split_size, dim=2)

        def split(t):
            return t.view(n, length, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = split(q), split(k), split(v)
        w = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        w = w.masked_fill(~causal, float("-inf")).softmax(-1)
        out = (w @ v).transpose(1, 2).reshape(n, length, self.embed_dim)
        return self.c_proj(out)


class GPT2MLP(nn.Module):
    def __init__(self, hidden=32, inner=64):
        super().__init__()
        self.c_fc = Conv1D(inner, hidden)
        self.c_proj = Conv1D(hidden, inner)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self, hidden=32, num_heads=4):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden)
        self.attn = GPT2Attention(hidden, num_heads)
        self.ln_2 = nn.LayerNorm(hidden)
        self.mlp = GPT2MLP(hidden)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class BertSelfAttention(nn.Module):
    def __init__(self, hidden=32, num_heads=4):
        super().__init__()
        self.num_attention_heads = num_heads
        self.attention_head_size = hidden // num_heads
        self.all_head_size = hidden
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x, attention_mask=None):
        n, length, _ = x.shape
        h, d = self.num_attention_heads, self.attention_head_size

        def split(t):
            return t.view(n, length, h, d).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        w = q @ k.transpose(-1, -2) / math.sqrt(d)
        if attention_mask is not None:  # (N, L): 1 keep, 0 pad
            w = w + (1.0 - attention_mask[:, None, None, :].float()) * -1e4
        return (w.softmax(-1) @ v).transpose(1, 2).reshape(n, length, h * d)


class BertSelfOutput(nn.Module):
    def __init__(self, hidden=32):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dense(hidden_states) + input_tensor)


class BertAttention(nn.Module):
    def __init__(self, hidden=32, num_heads=4):
        super().__init__()
        self.self = BertSelfAttention(hidden, num_heads)
        self.output = BertSelfOutput(hidden)

    def forward(self, x, attention_mask=None):
        return self.output(self.self(x, attention_mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, hidden=32, inner=64):
        super().__init__()
        self.dense = nn.Linear(hidden, inner)

    def forward(self, x):
        return F.gelu(self.dense(x))


class BertOutput(nn.Module):
    def __init__(self, hidden=32, inner=64):
        super().__init__()
        self.dense = nn.Linear(inner, hidden)
        self.LayerNorm = nn.LayerNorm(hidden)

    def forward(self, h, x):
        return self.LayerNorm(self.dense(h) + x)


class BertLayer(nn.Module):
    def __init__(self, hidden=32, num_heads=4):
        super().__init__()
        self.attention = BertAttention(hidden, num_heads)
        self.intermediate = BertIntermediate(hidden)
        self.output = BertOutput(hidden)

    def forward(self, x, attention_mask=None):
        a = self.attention(x, attention_mask)
        return self.output(self.intermediate(a), a)


class TokenClassifier(nn.Module):
    """Embedding, a stack of blocks, mean pooling and a linear read-out; the
    blocks take an optional per-example mask after the hidden states."""

    def __init__(self, blocks, hidden=32, vocab=16, length=6, classes=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.pos = nn.Parameter(torch.randn(length, hidden) * 0.3)
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(hidden, classes)

    def forward(self, tokens, *mask):
        x = self.embed(tokens) + self.pos
        for b in self.blocks:
            x = b(x, *mask)
        return self.head(x.mean(1))


class EncoderClassifier(nn.Module):
    """Inputs ``(N, L, d)`` through PyTorch's ``nn.TransformerEncoderLayer``s,
    mean-pooled; an optional per-example key padding mask."""

    def __init__(self, d=16, heads=4, layers=1, classes=3, batch_first=True):
        super().__init__()
        self.batch_first = batch_first
        self.layers = nn.ModuleList(
            [
                nn.TransformerEncoderLayer(
                    d, heads, 2 * d, dropout=0.1, batch_first=batch_first
                )
                for _ in range(layers)
            ]
        )
        self.head = nn.Linear(d, classes)

    def forward(self, x, key_padding_mask=None):
        if not self.batch_first:
            x = x.transpose(0, 1)
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=key_padding_mask)
        if not self.batch_first:
            x = x.transpose(0, 1)
        return self.head(x.mean(1))


def zero_heads_copy(model, out_proj_of, removed):
    """An independent reference for zero removal: a copy of ``model`` whose
    output projections' input columns of the removed heads are 0.

    ``out_proj_of(copy)`` lists ``(projection, num_heads, conv1d)`` per layer;
    ``removed`` lists the removed heads of each layer."""
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        for (proj, heads, conv1d), gone in zip(out_proj_of(m), removed):
            w = proj.weight
            width = w.shape[0] if conv1d else w.shape[1]
            d = width // heads
            for h in gone:
                if conv1d:
                    w[h * d : (h + 1) * d, :] = 0
                else:
                    w[:, h * d : (h + 1) * d] = 0
    return m
