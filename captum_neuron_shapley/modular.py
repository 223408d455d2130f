r"""A small transformer whose MLP neurons carry the computation: modular
addition.

:class:`ModularTransformer` is one ``nn.TransformerEncoderLayer`` (width 64, 4
heads, 128 ReLU MLP neurons, pre-norm) trained on ``(a + b) mod 59`` from the
three tokens ``a, b, =``, read at the last position, on half of the
59 x 59 pairs (the task of Power et al., 2022, "Grokking", and of Nanda et al.,
2023, "Progress measures for grokking via mechanistic interpretability"). It
fits its training pairs within a few hundred steps and answers the other pairs
only after a phase change driven by weight decay ("grokking"). The attention
can only move ``a`` and ``b`` to the last position, as a weighted sum of their
embeddings; the addition itself needs the MLP's nonlinearity. Removing all 128
MLP neurons (each replaced by its mean) takes the held-out accuracy from 1.0
to chance, whereas in :class:`~captum_neuron_shapley.recall.RecallTransformer`,
whose tasks are copies, removing all MLP neurons costs a few points: this
model is the testbed for MLP neurons.

The pairs are split once, the same for every training seed
(:func:`modular_splits`): training (half), validation (the stopping check),
estimation and test (for Shapley values and the removal checks; no training
decision has seen them). The weights of training seeds 0, 1 and 2
(:data:`SHIPPED_SEEDS`) ship with the package; :func:`trained_modular_transformer`
loads them and never trains at import; :func:`train_modular_transformer` (and
``python -m captum_neuron_shapley.modular``) regenerates them, a few minutes per
seed on one CPU core.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn, Tensor

__all__ = [
    "MODULUS",
    "SHIPPED_SEEDS",
    "ModularSplits",
    "modular_splits",
    "ModularTransformer",
    "train_modular_transformer",
    "trained_modular_transformer",
]

#: The modulus ``P`` (a prime): answers and operands lie in ``[0, P)``.
MODULUS = 59
#: Training seeds whose weights ship with the package.
SHIPPED_SEEDS: Tuple[int, ...] = (0, 1, 2)
#: Fractions of the pairs in the training, validation and estimation splits
#: (the test split holds the rest).
FRACTIONS = (0.5, 0.1, 0.2)
_SPLIT_SEED = 0


@dataclass
class ModularSplits:
    r"""The pairs ``(a, b)`` as token sequences ``a, b, =`` (``=`` is token
    ``P``) and their answers ``(a + b) mod P``, split four ways.

    Attributes:
        x_train, y_train: Training pairs (half of all).
        x_val, y_val: Validation pairs (the stopping check of training).
        x_est, y_est: Estimation pairs (Shapley values, scores).
        x_test, y_test: Test pairs (removal checks).
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_est: Tensor
    y_est: Tensor
    x_test: Tensor
    y_test: Tensor


def modular_splits() -> ModularSplits:
    r"""All ``P * P`` pairs, split at random (a fixed split, the same for every
    training seed) into training (50%), validation (10%), estimation (20%) and
    test (the rest) pairs.

    Returns:
        ModularSplits: Tokens ``(n, 3)`` (long) and answers ``(n,)`` per split.

    Examples::

        >>> s = modular_splits()
        >>> s.x_est.shape, s.y_est.shape
        (torch.Size([696, 3]), torch.Size([696]))
    """
    p = MODULUS
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x = torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), p)], 1)
    y = (a + b).flatten() % p
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(_SPLIT_SEED))
    cuts = [0]
    for f in FRACTIONS:
        cuts.append(cuts[-1] + int(f * p * p))
    cuts.append(p * p)
    parts = [perm[lo:hi] for lo, hi in zip(cuts[:-1], cuts[1:])]
    return ModularSplits(*[t for idx in parts for t in (x[idx], y[idx])])


class ModularTransformer(nn.Module):
    r"""Token embeddings, learned positions, one ``nn.TransformerEncoderLayer``
    (pre-norm, ReLU, no dropout, ``batch_first``), a final LayerNorm and a
    linear read-out of the last position.

    Args:
        d_model (int, optional): Width. Default: 64
        num_heads (int, optional): Heads. Default: 4
        dim_feedforward (int, optional): MLP neurons. Default: 128

    Examples::

        >>> model = trained_modular_transformer()
        >>> s = modular_splits()
        >>> (model(s.x_test).argmax(1) == s.y_test).float().mean()
        >>> mlp = model.layer.linear2  # its input: the 128 neurons
    """

    def __init__(
        self, d_model: int = 64, num_heads: int = 4, dim_feedforward: int = 128
    ) -> None:
        super().__init__()
        p = MODULUS
        self.embed = nn.Embedding(p + 1, d_model)
        self.pos = nn.Parameter(0.1 * torch.randn(3, d_model))
        self.layer = nn.TransformerEncoderLayer(
            d_model,
            num_heads,
            dim_feedforward,
            dropout=0.0,
            activation="relu",
            batch_first=True,
            norm_first=True,
        )
        self.norm = nn.LayerNorm(d_model)
        self.unembed = nn.Linear(d_model, p)

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        r"""The input of the layer, ``(N, 3, d_model)``."""
        return self.embed(tokens) + self.pos

    def forward_embeddings(self, x: Tensor) -> Tensor:
        r"""Logits ``(N, P)`` from the layer's input ``(N, 3, d_model)`` (for
        methods that interpolate inputs, such as conductance)."""
        return self.unembed(self.norm(self.layer(x)[:, -1]))

    def forward(self, tokens: Tensor) -> Tensor:
        r"""Logits ``(N, P)`` of ``(a + b) mod P`` for tokens ``(N, 3)``."""
        return self.forward_embeddings(self.embed_tokens(tokens))


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train_modular_transformer(
    seed: int = 0,
    max_steps: int = 10000,
    lr: float = 2e-3,
    weight_decay: float = 1.0,
    target_accuracy: float = 0.995,
    verbose: bool = False,
) -> ModularTransformer:
    r"""Train :class:`ModularTransformer` on the training pairs of
    :func:`modular_splits`: AdamW (betas 0.9, 0.98) on the whole training
    split at every step, until the validation accuracy reaches
    ``target_accuracy`` (checked every 250 steps). Deterministic on a given
    machine (the global RNG state is left as it was).

    Args:
        seed (int, optional): Seed of the weights. Default: 0
        max_steps (int, optional): Steps before giving up. Default: 10000
        lr (float, optional): Learning rate. Default: 2e-3
        weight_decay (float, optional): AdamW's weight decay, which drives the
                    phase change to the general solution. Default: 1.0
        target_accuracy (float, optional): Validation accuracy to reach.
                    Default: 0.995
        verbose (bool, optional): Print the accuracies every 250 steps.
                    Default: False

    Returns:
        ModularTransformer: In eval mode.

    Raises:
        RuntimeError: If the validation accuracy is not reached within
                    ``max_steps``.

    Examples::

        >>> model = train_modular_transformer(seed=3)
    """
    s = modular_splits()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ModularTransformer()
        opt = torch.optim.AdamW(
            model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98)
        )
        started, acc = time.monotonic(), 0.0
        for step in range(max_steps + 1):
            if step % 250 == 0:
                model.eval()
                acc = _accuracy(model, s.x_val, s.y_val)
                model.train()
                if verbose:
                    print(
                        f"seed {seed} step {step}: training "
                        f"{_accuracy(model, s.x_train, s.y_train):.3f}, validation "
                        f"{acc:.3f} ({time.monotonic() - started:.0f} s)",
                        flush=True,
                    )
                if acc >= target_accuracy or step == max_steps:
                    break
            opt.zero_grad()
            F.cross_entropy(model(s.x_train), s.y_train).backward()
            opt.step()
    model.zero_grad(set_to_none=True)
    if acc < target_accuracy:
        raise RuntimeError(
            f"seed {seed}: validation accuracy {acc:.3f} after {max_steps} steps, "
            f"below {target_accuracy}: the phase change to the general solution "
            "did not happen in the budget; try more steps or another seed"
        )
    return model.eval()


def trained_modular_transformer(
    seed: int = 0, cache_dir: Optional[Union[str, Path]] = None
) -> ModularTransformer:
    r"""A trained :class:`ModularTransformer`. The seeds in
    :data:`SHIPPED_SEEDS` ship with the package and are loaded, never trained;
    another seed is trained on first use (a few minutes; a message is logged to
    the ``captum_neuron_shapley`` logger) and cached in ``cache_dir``.

    Args:
        seed (int, optional): Training seed. Default: 0
        cache_dir (str or Path, optional): Where weights trained here are
                    cached. Default: ``$CAPTUM_NEURON_SHAPLEY_CACHE`` or
                    ``~/.cache/captum_neuron_shapley``

    Returns:
        ModularTransformer: In eval mode.

    Examples::

        >>> model = trained_modular_transformer()
        >>> ns = NeuronShapley(model, model.layer.linear2)
    """
    from .examples import _load_or_train

    with torch.random.fork_rng(devices=[]):  # initial weights, then overwritten
        model = ModularTransformer()
    return cast(
        ModularTransformer,
        _load_or_train(
            model,
            f"modular_transformer_seed{seed}",
            cache_dir,
            lambda: train_modular_transformer(seed),
            f"ModularTransformer (seed {seed})",
            "a few minutes",
        ),
    )


def _main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description="Train ModularTransformer and save its weights (the shipped "
        "ones are regenerated with the default arguments)."
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SHIPPED_SEEDS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--max-steps", type=int, default=10000)
    args = parser.parse_args(argv)
    from .examples import WEIGHTS_DIR

    torch.set_num_threads(1)
    out = args.out or WEIGHTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    s = modular_splits()
    for seed in args.seeds:
        try:
            model = train_modular_transformer(
                seed, max_steps=args.max_steps, verbose=True
            )
        except RuntimeError as err:
            print(err, flush=True)
            continue
        path = out / f"modular_transformer_seed{seed}.pt"
        torch.save(model.state_dict(), path)
        print(
            f"saved {path}; test accuracy {_accuracy(model, s.x_test, s.y_test):.4f}",
            flush=True,
        )


if __name__ == "__main__":
    _main()
