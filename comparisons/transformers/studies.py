r"""The studies of the transformer comparison (:func:`build_study`): a model, the
units ranked (attention heads or MLP neurons), the metric, the estimation and
test splits, and what is known of the mechanism.

- ``recall<s>-induction`` and ``recall<s>-overall``: the 8 heads of
  :class:`~captum_neuron_shapley.recall.RecallTransformer` (training seed
  ``s``), for the induction task's accuracy (its circuit, previous-token and
  induction heads, read from attention patterns) and for the mean accuracy over
  the four tasks (every head's role read likewise);
- ``modular<s>-mlp``: the 128 MLP neurons of
  :class:`~captum_neuron_shapley.modular.ModularTransformer`, for the held-out
  accuracy of modular addition.

Every method sees the model through :class:`Embedded`: the same model on its
first layer's input (the token embeddings plus positions), so that conductance
can interpolate it and every method's passes are counted on one module; the
Shapley games on it are the games on the tokens (nothing before the first
layer is removed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ContextManager, Dict, List, Optional

import torch
from captum_neuron_shapley import feature_mask, HeadShapley, NeuronShapley
from captum_neuron_shapley.metrics import Accuracy, Metric
from captum_neuron_shapley.modular import modular_splits, trained_modular_transformer
from captum_neuron_shapley.recall import (
    head_roles,
    induction_circuit,
    recall_data,
    TASKS,
    trained_recall_transformer,
)
from torch import nn, Tensor

from ..methods.transformer import head_sites, neuron_sites, Site
from .options import parse_study_key, study_key, TransformerOptions

__all__ = ["Embedded", "TaskAccuracy", "Study", "build_study", "ROLE_THRESHOLD"]

#: An attention score above which a head is given a role (as
#: :func:`~captum_neuron_shapley.recall.induction_circuit`).
ROLE_THRESHOLD = 0.5

#: Estimation and test sequences of the recall model come from these seeds
#: (training never drew them; the same as the recall model's own checks).
RECALL_EST_SEED, RECALL_TEST_SEED = 1, 2


class Embedded(nn.Module):
    r"""A model on its first layer's input: ``forward(x)`` is
    ``model.forward_embeddings(x, **kwargs)``."""

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        super().__init__()
        self.model = model
        self.kwargs = kwargs

    def forward(self, x: Tensor) -> Tensor:
        fn = getattr(self.model, "forward_embeddings")
        return fn(x, **self.kwargs)


class TaskAccuracy(Metric):
    r"""Mean accuracy over several answers per example: outputs ``(N, T, C)``,
    labels ``(N, T)``; each example counts each of its ``T`` answers."""

    decomposable = True
    bounds = (0.0, 1.0)

    def batched(self, outputs: Tensor, target: Any) -> Tensor:
        if not isinstance(target, Tensor) or target.dim() != 2:
            raise ValueError("TaskAccuracy expects labels (N, T)")
        hit = outputs.argmax(-1) == target
        return hit.to(torch.float64).flatten(-2).mean(-1)


@dataclass
class Study:
    r"""One model, one kind of unit, one metric.

    Attributes:
        key (str): ``"recall0-induction"``, ``"modular1-mlp"``, ...
        title (str): The study in words.
        model_name (str): The model in words.
        units (str): ``"heads"`` or ``"MLP neurons"``.
        question (str): ``"induction"``, ``"overall"`` or ``"modular"``.
        forward (Embedded): The model on embeddings.
        layers (list of nn.Module): The attention modules or the MLPs'
            second linear layers.
        x_est, y_est, x_test, y_test (Tensor): Embeddings and answers.
        metric (Metric): The game's metric (higher is better).
        metric_name (str): Its name in the tables.
        input_baseline (Tensor): Start of conductance's path: the positions
            alone (no token information), ``(1, L, d)``.
        k (int): The headline ``k`` (the bandit's ``top_k``).
        K (int): Curves run to this ``k``.
        unit_names (list of str): ``"L0.3"`` for heads, ``"n17"`` for neurons.
        roles (list of str, optional): Each head's roles from its attention.
        mechanism (list of int, optional): Flat units of the known mechanism.
        mechanism_roles (list of str, optional): Their roles.
        all_mlp_removed (dict): Metric with every MLP neuron removed (mean), on
            the test split: why the MLP study uses the modular model.
    """

    key: str
    title: str
    model_name: str
    units: str
    question: str
    forward: Embedded
    layers: List[nn.Module]
    x_est: Tensor
    y_est: Tensor
    x_test: Tensor
    y_test: Tensor
    metric: Metric
    metric_name: str
    input_baseline: Tensor
    k: int
    K: int
    unit_names: List[str]
    roles: Optional[List[str]] = None
    mechanism: Optional[List[int]] = None
    mechanism_roles: Optional[List[str]] = None
    all_mlp_removed: Dict[str, float] = field(default_factory=dict)

    @property
    def heads(self) -> bool:
        return self.units == "heads"

    def shapley(self) -> NeuronShapley:
        r"""The Shapley object on :attr:`forward` and :attr:`layers`."""
        if self.heads:
            return HeadShapley(self.forward, self.layers)
        return NeuronShapley(self.forward, self.layers)

    def game_kwargs(self) -> Dict[str, Any]:
        r"""The keywords that make the game's units (MLP neurons: one unit per
        hidden feature of the second linear layer's input, mean removal)."""
        if self.heads:
            return {}
        width = int(getattr(self.layers[0], "in_features"))
        return dict(
            attribute_to_layer_input=True,
            layer_mask=feature_mask(width),
            layer_baselines="mean",
        )

    def sites(self) -> ContextManager[List[Site]]:
        r"""The units' sites for the gradient methods."""
        if self.heads:
            return head_sites(self.forward, self.layers)
        return neuron_sites(self.layers)


def _embed(model: Any, tokens: Tensor) -> Tensor:
    with torch.no_grad():
        return model.embed_tokens(tokens).detach()


def _head_roles(model: nn.Module, data: Any) -> List[str]:
    roles = head_roles(model, data)  # type: ignore[arg-type]
    per = roles["previous_token"].shape[1]
    names = {
        "previous_token": "previous-token",
        "induction": "induction",
        "first": "first",
        "marked": "marked",
        "offset": "offset",
    }
    out = []
    for i in range(roles["previous_token"].numel()):
        layer, h = divmod(i, per)
        got = [
            names[r]
            for r in names
            if float(roles[r][layer, h]) > ROLE_THRESHOLD
            and not (r == "previous_token" and layer != 0)
            and not (r == "induction" and layer != 1)
        ]
        out.append(", ".join(got) or "-")
    return out


def _recall(seed: int, question: str, opts: TransformerOptions) -> Study:
    model = trained_recall_transformer(seed)
    est = recall_data(opts.recall_est, seed=RECALL_EST_SEED)
    test = recall_data(opts.recall_test, seed=RECALL_TEST_SEED)
    layers = [layer.self_attn for layer in model.encoder.layers]
    per = layers[0].num_heads
    n = per * len(layers)
    names = [f"L{i // per}.{i % per}" for i in range(n)]
    circuit = sorted(layer * per + h for layer, h in induction_circuit(model, test))
    roles = _head_roles(model, test)
    overall = question == "overall"
    forward = Embedded(model, task=None if overall else 0)
    metric: Metric = TaskAccuracy() if overall else Accuracy()
    y_est = est.targets if overall else est.targets[:, 0]
    y_test = test.targets if overall else test.targets[:, 0]
    study = Study(
        key=study_key("recall", seed, "heads", question),
        title=(
            f"RecallTransformer seed {seed}, heads, "
            + ("mean accuracy over the four tasks" if overall else "induction accuracy")
        ),
        model_name=f"RecallTransformer (trained_recall_transformer({seed}))",
        units="heads",
        question=question,
        forward=forward,
        layers=list(layers),
        x_est=_embed(model, est.tokens),
        y_est=y_est,
        x_test=_embed(model, test.tokens),
        y_test=y_test,
        metric=metric,
        metric_name=(
            f"mean accuracy over {', '.join(TASKS)}"
            if overall
            else "induction accuracy"
        ),
        input_baseline=model.pos.detach().unsqueeze(0).clone(),
        k=len(circuit),
        K=n,
        unit_names=names,
        roles=roles,
        mechanism=circuit,
        mechanism_roles=[roles[i] for i in circuit],
    )
    study.all_mlp_removed = {"recall": _all_mlp_removed(study, model)}
    return study


def _all_mlp_removed(study: Study, model: Any) -> float:
    r"""The study's metric on its test split with every MLP neuron of the
    model removed (each replaced by its mean over the estimation split)."""
    linears = [layer.linear2 for layer in model.encoder.layers]
    ns = NeuronShapley(study.forward, linears)
    width = int(linears[0].in_features)
    est = ns.game(
        study.x_est,
        target=study.y_est,
        metric=study.metric,
        attribute_to_layer_input=True,
        layer_mask=feature_mask(width),
        layer_baselines="mean",
    )
    test = ns.game(
        study.x_test,
        target=study.y_test,
        metric=study.metric,
        attribute_to_layer_input=True,
        layer_mask=feature_mask(width),
        layer_baselines=tuple(u.baseline for u in est.units),
    )
    return float(test.value(torch.zeros(1, test.n_units, dtype=torch.bool))[0])


def _modular(seed: int, opts: TransformerOptions) -> Study:
    model = trained_modular_transformer(seed)
    s = modular_splits()
    cut = opts.max_modular
    x_est, y_est = s.x_est[:cut], s.y_est[:cut]
    x_test, y_test = s.x_test[:cut], s.y_test[:cut]
    width = int(model.layer.linear2.in_features)
    forward = Embedded(model)
    study = Study(
        key=study_key("modular", seed, "mlp", "modular"),
        title=f"ModularTransformer seed {seed}, MLP neurons, "
        "accuracy of (a + b) mod 59",
        model_name=f"ModularTransformer (trained_modular_transformer({seed}))",
        units="MLP neurons",
        question="modular",
        forward=forward,
        layers=[model.layer.linear2],
        x_est=_embed(model, x_est),
        y_est=y_est,
        x_test=_embed(model, x_test),
        y_test=y_test,
        metric=Accuracy(),
        metric_name="accuracy on held-out pairs",
        input_baseline=model.pos.detach().unsqueeze(0).clone(),
        k=min(opts.mlp_top_k, width - 1),
        K=min(opts.mlp_max_k, width),
        unit_names=[f"n{i}" for i in range(width)],
    )
    ns = NeuronShapley(forward, [model.layer.linear2])
    kw = study.game_kwargs()
    est = ns.game(study.x_est, target=y_est, metric=study.metric, **kw)
    kw["layer_baselines"] = tuple(u.baseline for u in est.units)
    test = ns.game(study.x_test, target=y_test, metric=study.metric, **kw)
    study.all_mlp_removed = {
        "modular": float(test.value(torch.zeros(1, width, dtype=torch.bool))[0])
    }
    return study


def build_study(key: str, opts: TransformerOptions) -> Study:
    r"""The study named ``key`` (``"recall<s>-induction"``,
    ``"recall<s>-overall"``, ``"modular<s>-mlp"``)."""
    model, seed, question = parse_study_key(key)
    if model == "recall":
        return _recall(seed, question, opts)
    return _modular(seed, opts)
