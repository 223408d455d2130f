r"""A small transformer with a known mechanism: the ground truth for attention
heads.

:class:`RecallTransformer` is two ``nn.TransformerEncoderLayer`` blocks (4 heads
each, causal attention, PyTorch's own modules) trained on four in-context recall
tasks, all read at the last position of a sequence of 12 distinct random tokens
followed by a repeat of one of them (:func:`recall_data`):

- ``"induction"``: the token that followed the earlier occurrence of the last
  token. With causal attention this needs two heads in composition: a
  *previous-token head* in layer 0 (position ``p`` attends to ``p - 1`` and
  writes that token into ``p``) and an *induction head* in layer 1 (the last
  position attends to the position whose previous token equals its own, and
  copies that position's token);
- ``"first"``: the first token;
- ``"marked"``: the one token carrying a mark (its id is offset by the
  vocabulary size);
- ``"offset"``: the token at position 9 (three before the query).

The other three tasks need one head each, anywhere, and keep the remaining heads
busy with other work, so that a head that is irrelevant for the induction task
is not simply dead. Which heads take which role is decided by training;
:func:`head_roles` measures it from the attention patterns, independently of
any Shapley estimate.

The trained weights of training seeds 0, 1 and 2 (:data:`SHIPPED_SEEDS`) ship
with the package; :func:`trained_recall_transformer` loads them and never trains
at import. :func:`train_recall_transformer` (and ``python -m
captum_neuron_shapley.recall``, about a minute per seed on one CPU core)
regenerates them; other CPUs may round differently, which is why the weights
ship. The induction task is learned through a phase change (its accuracy stays
near chance for a thousand steps or more after the easy tasks are solved); the
training function raises if a seed does not get there within its step budget.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn, Tensor

__all__ = [
    "RecallData",
    "recall_data",
    "RecallTransformer",
    "train_recall_transformer",
    "trained_recall_transformer",
    "head_roles",
    "induction_circuit",
    "TASKS",
    "SHIPPED_SEEDS",
]

#: The tasks, in the order of the model's outputs (``task`` index).
TASKS = ("induction", "first", "marked", "offset")
#: Vocabulary size, distinct tokens per sequence, and the ``"offset"`` position.
VOCAB, CONTEXT, OFFSET = 20, 12, 9
_TRAIN_SEEDS = 1 << 40  # training data: seeds from here on
#: Training seeds whose weights ship with the package.
SHIPPED_SEEDS: Tuple[int, ...] = (0, 1, 2)


@dataclass
class RecallData:
    r"""Sequences of the recall tasks.

    Attributes:
        tokens (Tensor): ``(N, 13)`` token ids: 12 distinct tokens, one of them
            marked (id ``+ VOCAB``), then a repeat of one of the first 11 (the
            query, unmarked).
        targets (Tensor): ``(N, 4)`` the answer of each task (see
            :data:`TASKS`), a token id in ``[0, VOCAB)``.
        query_pos (Tensor): ``(N,)`` the position of the earlier occurrence of
            the query token.
        marked_pos (Tensor): ``(N,)`` the position of the marked token.
    """

    tokens: Tensor
    targets: Tensor
    query_pos: Tensor
    marked_pos: Tensor

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def recall_data(n: int, seed: int = 0) -> RecallData:
    r"""``n`` random sequences of the recall tasks, from a private generator.

    Args:
        n (int): Number of sequences.
        seed (int, optional): Seed of the generator. Default: 0

    Returns:
        RecallData: Tokens, the four tasks' answers, and the positions the
        answers come from.

    Examples::

        >>> data = recall_data(512, seed=1)
        >>> model = trained_recall_transformer()
        >>> acc = (model(data.tokens).argmax(1) == data.targets[:, 0]).float().mean()
    """
    g = torch.Generator().manual_seed(seed)
    toks = torch.argsort(torch.rand(n, VOCAB, generator=g), 1)[:, :CONTEXT]
    j = torch.randint(0, CONTEXT - 1, (n,), generator=g)
    k = torch.randint(0, CONTEXT, (n,), generator=g)
    rows = torch.arange(n)
    targets = torch.stack(
        [toks[rows, j + 1], toks[:, 0], toks[rows, k], toks[:, OFFSET]], 1
    )
    marked = toks.clone()
    marked[rows, k] += VOCAB
    tokens = torch.cat([marked, toks[rows, j][:, None]], 1)
    return RecallData(tokens, targets, j, k)


class RecallTransformer(nn.Module):
    r"""Token and mark embeddings, learned positions, a causal
    ``nn.TransformerEncoder`` of ``nn.TransformerEncoderLayer`` blocks
    (pre-norm, no dropout, ``batch_first``) and a linear read-out of the last
    position for each task.

    Args:
        d_model (int, optional): Width. Default: 32
        num_heads (int, optional): Heads per layer. Default: 4
        num_layers (int, optional): Layers. Default: 2
        dim_feedforward (int, optional): Hidden width of the MLPs. Default: 64

    Examples::

        >>> model = trained_recall_transformer()
        >>> logits = model(recall_data(8).tokens)  # induction task: (8, 20)
        >>> hs = HeadShapley(model, [l.self_attn for l in model.encoder.layers])
    """

    def __init__(
        self,
        d_model: int = 32,
        num_heads: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 64,
    ) -> None:
        super().__init__()
        length = CONTEXT + 1
        self.embed = nn.Embedding(VOCAB, d_model)
        self.mark = nn.Embedding(2, d_model)
        self.pos = nn.Parameter(0.1 * torch.randn(length, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model,
            num_heads,
            dim_feedforward,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, enable_nested_tensor=False
        )
        self.norm = nn.LayerNorm(d_model)
        self.unembed = nn.Linear(d_model, len(TASKS) * VOCAB)
        causal = nn.Transformer.generate_square_subsequent_mask(length)
        self.register_buffer("causal_mask", causal, persistent=False)

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        r"""The input of the first layer, ``(N, 13, d_model)``."""
        marked = (tokens >= VOCAB).long()
        return self.embed(tokens - VOCAB * marked) + self.mark(marked) + self.pos

    def forward(self, tokens: Tensor, task: Union[int, str] = 0) -> Tensor:
        r"""Logits ``(N, VOCAB)`` of the answer to ``task`` (an index into
        :data:`TASKS` or its name; default: the induction task)."""
        index = TASKS.index(task) if isinstance(task, str) else int(task)
        x = self.encoder(
            self.embed_tokens(tokens), mask=self.causal_mask, is_causal=True
        )
        logits = self.unembed(self.norm(x[:, -1]))
        return logits.view(-1, len(TASKS), VOCAB)[:, index]


def _accuracies(model: RecallTransformer, data: RecallData) -> List[float]:
    with torch.no_grad():
        x = model.encoder(
            model.embed_tokens(data.tokens), mask=model.causal_mask, is_causal=True
        )
        logits = model.unembed(model.norm(x[:, -1])).view(-1, len(TASKS), VOCAB)
    hit = logits.argmax(2) == data.targets
    return [float(v) for v in hit.float().mean(0)]


def train_recall_transformer(
    seed: int = 0,
    max_steps: int = 8000,
    batch_size: int = 128,
    lr: float = 3e-3,
    induction_weight: float = 2.0,
    target_accuracy: float = 0.995,
    verbose: bool = False,
) -> RecallTransformer:
    r"""Train :class:`RecallTransformer` on fresh batches of :func:`recall_data`:
    AdamW, the sum of the tasks' cross-entropies (the induction task's weighted
    by ``induction_weight``), until every task reaches ``target_accuracy`` on
    1,000 held-out sequences (checked every 500 steps). Deterministic on a given
    machine (the global RNG state is left as it was); about a minute on a CPU
    core for the shipped seeds.

    Args:
        seed (int, optional): Seed of the weights and the batches. Default: 0
        max_steps (int, optional): Steps before giving up. Default: 8000
        batch_size (int, optional): Sequences per step. Default: 128
        lr (float, optional): Learning rate. Default: 3e-3
        induction_weight (float, optional): Weight of the induction task's loss.
                    Default: 2.0
        target_accuracy (float, optional): Held-out accuracy every task must
                    reach. Default: 0.995
        verbose (bool, optional): Print the accuracies every 500 steps.
                    Default: False

    Returns:
        RecallTransformer: In eval mode.

    Raises:
        RuntimeError: If the tasks are not learned within ``max_steps`` (the
                    induction task needs a phase change that some seeds do not
                    reach in this budget).

    Examples::

        >>> model = train_recall_transformer(seed=0)
    """
    held_out = recall_data(1000, seed=_TRAIN_SEEDS - 1 - seed)
    weights = torch.tensor([induction_weight] + [1.0] * (len(TASKS) - 1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RecallTransformer()
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        started, accs = time.monotonic(), [0.0] * len(TASKS)
        for step in range(max_steps + 1):
            if step % 500 == 0:
                model.eval()
                accs = _accuracies(model, held_out)
                model.train()
                if verbose:
                    print(
                        f"seed {seed} step {step}: "
                        + ", ".join(f"{t} {a:.3f}" for t, a in zip(TASKS, accs))
                        + f" ({time.monotonic() - started:.0f} s)",
                        flush=True,
                    )
                if min(accs) >= target_accuracy:
                    break
            if step == max_steps:
                break
            # batches from seeds no evaluation set uses
            data = recall_data(batch_size, seed=_TRAIN_SEEDS + seed * 1_000_003 + step)
            x = model.encoder(
                model.embed_tokens(data.tokens),
                mask=model.causal_mask,
                is_causal=True,
            )
            logits = model.unembed(model.norm(x[:, -1])).view(-1, len(TASKS), VOCAB)
            losses = torch.stack(
                [
                    F.cross_entropy(logits[:, i], data.targets[:, i])
                    for i in range(len(TASKS))
                ]
            )
            opt.zero_grad()
            (losses * weights).sum().backward()
            opt.step()
    model.zero_grad(set_to_none=True)
    if min(accs) < target_accuracy:
        raise RuntimeError(
            f"seed {seed}: the tasks were not learned within {max_steps} steps "
            f"(held-out accuracies {dict(zip(TASKS, [round(a, 3) for a in accs]))});"
            " the induction task needs a phase change that this seed does not "
            "reach in the budget: try another seed or more steps"
        )
    return model.eval()


def trained_recall_transformer(
    seed: int = 0, cache_dir: Optional[Union[str, Path]] = None
) -> RecallTransformer:
    r"""A trained :class:`RecallTransformer`. The seeds in
    :data:`SHIPPED_SEEDS` ship with the package and are loaded, never trained;
    another seed is trained on first use (about a minute; a message is logged
    to the ``captum_neuron_shapley`` logger) and cached in ``cache_dir``.

    Args:
        seed (int, optional): Training seed. Default: 0
        cache_dir (str or Path, optional): Where weights trained here are cached.
                    Default: ``$CAPTUM_NEURON_SHAPLEY_CACHE`` or
                    ``~/.cache/captum_neuron_shapley``

    Returns:
        RecallTransformer: In eval mode.

    Examples::

        >>> model = trained_recall_transformer(seed=3)
        >>> layers = [layer.self_attn for layer in model.encoder.layers]
    """
    from .examples import _load_or_train

    with torch.random.fork_rng(devices=[]):  # initial weights, then overwritten
        model = RecallTransformer()
    return cast(
        RecallTransformer,
        _load_or_train(
            model,
            f"recall_transformer_seed{seed}",
            cache_dir,
            lambda: train_recall_transformer(seed),
            f"RecallTransformer (seed {seed})",
            "about a minute",
        ),
    )


def head_roles(model: RecallTransformer, data: RecallData) -> Dict[str, Tensor]:
    r"""How much attention every head pays where each role would put it,
    averaged over ``data``: a ``(num_layers, num_heads)`` tensor per role.

    - ``"previous_token"``: from each position ``p`` (1 to 11) to ``p - 1``;
    - ``"induction"``: from the last position to the position after the
      earlier occurrence of the query token (where the answer sits);
    - ``"first"``, ``"marked"``, ``"offset"``: from the last position to the
      answer of that task.

    A head that attends uniformly to the ``p + 1`` positions it can see scores
    about ``1 / (p + 1)``; a head with a role scores close to 1 on it.

    Args:
        model (RecallTransformer): The model.
        data (RecallData): The sequences.

    Returns:
        dict: Role name to a float tensor ``(num_layers, num_heads)``.

    Examples::

        >>> roles = head_roles(trained_recall_transformer(), recall_data(1000))
        >>> roles["induction"][1]  # the layer-1 heads
    """
    rows = torch.arange(len(data))
    answer = {
        "induction": data.query_pos + 1,
        "first": torch.zeros_like(data.query_pos),
        "marked": data.marked_pos,
        "offset": torch.full_like(data.query_pos, OFFSET),
    }
    out: Dict[str, List[Tensor]] = {k: [] for k in ("previous_token", *answer)}
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = model.embed_tokens(data.tokens)
            for layer in cast(
                Sequence[nn.TransformerEncoderLayer], model.encoder.layers
            ):
                h = layer.norm1(x) if layer.norm_first else x
                _, w = layer.self_attn(
                    h,
                    h,
                    h,
                    attn_mask=model.causal_mask,
                    need_weights=True,
                    average_attn_weights=False,
                )
                assert w is not None  # (N, heads, L, L)
                length = w.shape[-1]
                prev = torch.stack(
                    [w[:, :, p, p - 1] for p in range(1, length - 1)], -1
                )
                out["previous_token"].append(prev.mean((0, 2)))
                last = w[:, :, -1, :]
                for role, pos in answer.items():
                    out[role].append(last[rows, :, pos].mean(0))
                x = layer(x, src_mask=model.causal_mask, is_causal=True)
    finally:
        model.train(was)
    return {k: torch.stack(v) for k, v in out.items()}


def induction_circuit(
    model: RecallTransformer, data: RecallData, threshold: float = 0.5
) -> List[Tuple[int, int]]:
    r"""The heads of the induction mechanism, read from the attention patterns
    (:func:`head_roles`): the layer-0 heads whose previous-token score and the
    layer-1 heads whose induction score exceed ``threshold`` (attention mostly
    on the one position the role needs; a uniform head scores below 0.2).

    Args:
        model (RecallTransformer): The model.
        data (RecallData): The sequences the scores are averaged over.
        threshold (float, optional): Score a head needs. Default: 0.5

    Returns:
        list of (layer, head) pairs, layer 0 first.

    Examples::

        >>> induction_circuit(trained_recall_transformer(), recall_data(1000))
        [(0, 3), (1, 2)]
    """
    roles = head_roles(model, data)
    prev = (roles["previous_token"][0] > threshold).nonzero().flatten().tolist()
    ind = (roles["induction"][1] > threshold).nonzero().flatten().tolist()
    return [(0, h) for h in prev] + [(1, h) for h in ind]


def _heads(flat: Sequence[int], per_layer: int) -> str:
    return ", ".join(f"L{i // per_layer}.{i % per_layer}" for i in flat) or "-"


def check(
    seeds: Sequence[int],
    weights: Optional[Path] = None,
    estimator_seeds: Sequence[int] = (0, 1, 2),
    examples: int = 400,
) -> None:
    r"""Print, for each model, its induction circuit as the attention patterns
    give it, and what Shapley values and removals say of it (markdown tables):
    the exact values (all 256 coalitions of the 8 heads) and the estimates of
    ``HeadShapley.attribute(top_k=circuit size)`` on ``examples`` sequences,
    and the induction accuracy on 1,000 held-out sequences with single heads
    (mean and zero ablation), the circuit, or as many other heads removed (mean
    ablation). The tests check the same on the shipped seeds."""
    from .exact import exact_values
    from .heads import HeadShapley

    est, test = recall_data(examples, seed=1), recall_data(1000, seed=2)
    rows, details = [], []
    for seed in seeds:
        if weights is not None:
            model = RecallTransformer()
            path = weights / f"recall_transformer_seed{seed}.pt"
            model.load_state_dict(torch.load(path, weights_only=True))
            model.eval()
        else:
            model = trained_recall_transformer(seed)
        layers = cast(Sequence[nn.TransformerEncoderLayer], model.encoder.layers)
        per = layers[0].self_attn.num_heads
        roles = head_roles(model, test)
        flat = sorted(layer * per + h for layer, h in induction_circuit(model, test))
        hs = HeadShapley(model, [layer.self_attn for layer in layers])
        game = hs.game(est.tokens, target=est.targets[:, 0])
        exact = exact_values(game)
        k = len(flat)
        exact_top = sorted(torch.argsort(exact, descending=True)[:k].tolist())
        matches = []
        for s in estimator_seeds:
            res = hs.attribute(
                est.tokens,
                target=est.targets[:, 0],
                top_k=k,
                seed=s,
                return_result=True,
            )
            top = sorted(torch.argsort(res.flat_values, descending=True)[:k].tolist())
            matches.append(
                f"{'yes' if top == flat else _heads(top, per)} ({res.n_evaluations})"
            )
        held = hs.game(test.tokens, target=test.targets[:, 0])
        n = game.n_units
        single = held.value(~torch.eye(n, dtype=torch.bool))
        zeroed = hs.game(test.tokens, target=test.targets[:, 0], layer_baselines=0.0)
        single_zero = zeroed.value(~torch.eye(n, dtype=torch.bool))
        others = [i for i in range(n) if i not in flat]
        sets = _subsets(others, min(k, len(others)))
        keep = torch.ones(1 + len(sets), n, dtype=torch.bool)
        keep[0, flat] = False
        for i, c in enumerate(sets):
            keep[1 + i, c] = False
        acc = held.value(keep)
        rows.append(
            f"| {seed} | {_heads(flat, per)} | "
            f"{'yes' if exact_top == flat else _heads(exact_top, per)} | "
            f"{'; '.join(matches)} | {held.full_value():.3f} | {float(acc[0]):.3f} | "
            f"{float(acc[1:].min()):.3f} ({len(sets)} sets of "
            f"{min(k, len(others))}) |"
        )
        for i in range(n):
            layer, h = divmod(i, per)
            details.append(
                f"| {seed} | L{layer}.{h} | {'yes' if i in flat else ''} | "
                f"{float(roles['previous_token'][layer, h]):.2f} | "
                f"{float(roles['induction'][layer, h]):.2f} | {float(exact[i]):+.3f} | "
                f"{float(single[i]):.3f} | {float(single_zero[i]):.3f} |"
            )
    print(
        "| seed | circuit (attention) | exact top-k = circuit | estimates (seed "
        + ", ".join(map(str, estimator_seeds))
        + "; evaluations) | accuracy | circuit removed | other heads removed (min) |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print(
        "| seed | head | in circuit | previous-token score | induction score | "
        "exact Shapley | accuracy without it (mean) | (zero) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(details))


def _subsets(items: List[int], k: int) -> List[List[int]]:
    import itertools

    return [list(c) for c in itertools.combinations(items, k)]


def _main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description="Train RecallTransformer and save its weights (the shipped "
        "ones are regenerated with the default arguments), or --check models."
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SHIPPED_SEEDS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--max-steps", type=int, default=8000)
    parser.add_argument(
        "--check",
        action="store_true",
        help="print the circuits and their Shapley values instead of training",
    )
    parser.add_argument(
        "--weights", type=Path, default=None, help="with --check: load from here"
    )
    parser.add_argument(
        "--examples",
        type=int,
        default=400,
        help="with --check: sequences the Shapley values are computed on",
    )
    args = parser.parse_args(argv)
    from .examples import WEIGHTS_DIR

    torch.set_num_threads(1)
    if args.check:
        check(args.seeds, args.weights, examples=args.examples)
        return
    out = args.out or WEIGHTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        try:
            model = train_recall_transformer(
                seed, max_steps=args.max_steps, verbose=True
            )
        except RuntimeError as err:
            print(err, flush=True)
            continue
        path = out / f"recall_transformer_seed{seed}.pt"
        torch.save(model.state_dict(), path)
        circuit = induction_circuit(model, recall_data(1000, seed=1))
        print(f"saved {path}; induction circuit (layer, head): {circuit}", flush=True)


if __name__ == "__main__":
    _main()
