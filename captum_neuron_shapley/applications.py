r"""The paper's applications: units a class depends on, fairness repair and
adversarial repair (Ghorbani & Zou 2020, Sec. 4-5).

Each function estimates Shapley values on one split (``inputs``) with
:class:`~captum_neuron_shapley.FilterShapley` / :class:`NeuronShapley`, removes
units, and measures the model *before and after* on a held-out split
(``test_inputs``). Every number in an :class:`ApplicationReport` comes from running
the model; nothing is assumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .ablation import metric_after_removal, remove_units
from .attr import FilterShapley
from .game import model_guard
from .metrics import Accuracy, ClassRecall, Metric, SubgroupAccuracy
from .result import ShapleyResult

__all__ = [
    "ApplicationReport",
    "AdversarialVulnerability",
    "class_specific_units",
    "fairness_repair",
    "adversarial_repair",
    "pgd_attack",
    "ink_subgroup",
]

Layers = Union[nn.Module, Sequence[nn.Module]]


@dataclass
class ApplicationReport:
    r"""What an application removed and what changed.

    Attributes:
        name (str): The application.
        removed (list of int): Flat unit indices removed (into ``result``).
        removed_units (list of (str, int, float)): ``(layer, unit id, value)``.
        before (dict): Metrics of the intact model on the held-out split.
        after (dict): The same metrics with ``removed`` units removed.
        result (ShapleyResult): The Shapley values the removal was chosen from.
        extra (dict): Anything else measured (e.g. a fresh attack).
    """

    name: str
    removed: List[int]
    removed_units: List[Tuple[str, int, float]]
    before: Dict[str, float]
    after: Dict[str, float]
    result: ShapleyResult
    extra: Dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"{self.name}: removed {len(self.removed)} units"]
        lines += [f"  {n}[{u}] value {v:+.4f}" for n, u, v in self.removed_units[:10]]
        for key in self.before:
            lines.append(
                f"  {key:<28s} before {self.before[key]:.4f}  after "
                f"{self.after[key]:.4f}"
            )
        for key, val in self.extra.items():
            if isinstance(val, float):
                lines.append(f"  {key:<28s} {val:.4f}")
        return "\n".join(lines)


def _describe(
    result: ShapleyResult, flat: Sequence[int]
) -> List[Tuple[str, int, float]]:
    return [(*result.unit(int(i)), float(result.flat_values[i])) for i in flat]


def _estimate(
    model: nn.Module, layers: Layers, inputs: Any, target: Any, metric: Callable, kw
) -> ShapleyResult:
    kw = dict(kw)
    kw.setdefault("seed", 0)
    kw["return_result"] = True
    return FilterShapley(model, layers).attribute(
        inputs, target=target, metric=metric, **kw
    )


def _before_after(
    model: nn.Module,
    result: ShapleyResult,
    removed: List[int],
    inputs: Any,
    metrics: Dict[str, Tuple[Callable, Any]],
) -> Tuple[Dict[str, float], Dict[str, float]]:
    before, after = {}, {}
    for key, (metric, target) in metrics.items():
        v = metric_after_removal(model, result, [[], removed], inputs, target, metric)
        before[key], after[key] = float(v[0]), float(v[1])
    return before, after


def class_specific_units(
    model: nn.Module,
    layers: Layers,
    inputs: Tensor,
    labels: Tensor,
    cls: int,
    test_inputs: Tensor,
    test_labels: Tensor,
    n_remove: int = 10,
    exclude_fraction: float = 0.2,
    accuracy_result: Optional[ShapleyResult] = None,
    **attribute_kwargs: Any,
) -> ApplicationReport:
    r"""Units that one class depends on but the model as a whole does not.

    Estimates values for overall accuracy (unless ``accuracy_result`` is given) and
    for ``ClassRecall(cls)``; excludes the ``exclude_fraction`` of units most
    important for accuracy, and removes the ``n_remove`` remaining units with the
    highest (positive) recall value. The report shows the class's recall and the
    accuracy on the other classes before and after, on the held-out split.

    Args:
        model (nn.Module): The model.
        layers (nn.Module or list): Layers whose filters are the players.
        inputs (Tensor): Estimation inputs (e.g. the validation split).
        labels (Tensor): Their labels.
        cls (int): The class.
        test_inputs (Tensor): Held-out inputs to judge the removal on.
        test_labels (Tensor): Their labels.
        n_remove (int): Units to remove. Default: 10.
        exclude_fraction (float): Fraction of units, most valuable for accuracy,
            that are never removed. Default: 0.2.
        accuracy_result (ShapleyResult, optional): A finished accuracy run on the
            same layers (saves one estimation).
        **attribute_kwargs: Passed to ``FilterShapley.attribute`` (budgets,
            ``seed`` (default 0), ``top_k``, ``subset_size``, ...).

    Returns:
        ApplicationReport: ``before``/``after`` hold ``recall``,
        ``accuracy_other_classes`` and ``accuracy``.

    Examples::

        >>> rep = class_specific_units(model, model.conv_layers, x_val, y_val, 3,
        ...                            x_test, y_test, max_evaluations=2000)
        >>> print(rep)
    """
    if not 0.0 <= exclude_fraction < 1.0:
        raise ValueError(
            f"`exclude_fraction` must be in [0, 1), got {exclude_fraction}"
        )
    acc = accuracy_result or _estimate(
        model, layers, inputs, labels, Accuracy(), attribute_kwargs
    )
    rec = _estimate(model, layers, inputs, labels, ClassRecall(cls), attribute_kwargs)
    if acc.n_units != rec.n_units:
        raise ValueError("`accuracy_result` was computed for other layers")
    n_excl = int(round(exclude_fraction * acc.n_units))
    excluded = set(torch.argsort(acc.flat_values, descending=True)[:n_excl].tolist())
    order = torch.argsort(rec.flat_values, descending=True).tolist()
    removed = [i for i in order if i not in excluded and float(rec.flat_values[i]) > 0][
        :n_remove
    ]
    other = test_labels != cls
    before, after = _before_after(
        model,
        rec,
        removed,
        test_inputs,
        {
            "recall": (ClassRecall(cls), test_labels),
            "accuracy_other_classes": (SubgroupAccuracy(), (test_labels, other)),
            "accuracy": (Accuracy(), test_labels),
        },
    )
    return ApplicationReport(
        f"class {cls} units",
        removed,
        _describe(rec, removed),
        before,
        after,
        rec,
        {"excluded": sorted(excluded), "accuracy_result": acc},
    )


def fairness_repair(
    model: nn.Module,
    layers: Layers,
    inputs: Tensor,
    labels: Tensor,
    in_group: Tensor,
    test_inputs: Tensor,
    test_labels: Tensor,
    test_in_group: Tensor,
    n_remove: int = 5,
    **attribute_kwargs: Any,
) -> ApplicationReport:
    r"""Remove the units that hurt a subgroup.

    Estimates values for :class:`SubgroupAccuracy` (target ``(labels, in_group)``)
    and removes up to ``n_remove`` units with the most negative values (only units
    whose value is below 0). Reports subgroup and overall accuracy before and after
    on the held-out split.

    Args:
        model (nn.Module): The model.
        layers (nn.Module or list): Layers whose filters are the players.
        inputs, labels, in_group (Tensor): Estimation split and its subgroup mask.
        test_inputs, test_labels, test_in_group (Tensor): Held-out split.
        n_remove (int): At most this many units are removed. Default: 5.
        **attribute_kwargs: Passed to ``FilterShapley.attribute``.

    Returns:
        ApplicationReport: ``before``/``after`` hold ``subgroup_accuracy`` and
        ``accuracy``.

    Examples::

        >>> g_val, g_test = ink_subgroup(x_val, x_train), ink_subgroup(x_test, x_train)
        >>> rep = fairness_repair(model, model.conv_layers, x_val, y_val, g_val,
        ...                       x_test, y_test, g_test, max_evaluations=2000)
    """
    for name, g, y in (
        ("in_group", in_group, labels),
        ("test_in_group", test_in_group, test_labels),
    ):
        if not isinstance(g, Tensor) or g.shape != y.shape:
            raise ValueError(
                f"`{name}` must be a boolean tensor shaped like the labels"
            )
    res = _estimate(
        model,
        layers,
        inputs,
        (labels, in_group.bool()),
        SubgroupAccuracy(),
        attribute_kwargs,
    )
    order = torch.argsort(res.flat_values).tolist()
    removed = [i for i in order if float(res.flat_values[i]) < 0][:n_remove]
    before, after = _before_after(
        model,
        res,
        removed,
        test_inputs,
        {
            "subgroup_accuracy": (
                SubgroupAccuracy(),
                (test_labels, test_in_group.bool()),
            ),
            "accuracy": (Accuracy(), test_labels),
        },
    )
    return ApplicationReport(
        "fairness repair", removed, _describe(res, removed), before, after, res
    )


def ink_subgroup(
    images: Tensor, reference: Tensor, quantile: float = 0.8, above: bool = True
) -> Tensor:
    r"""A real subgroup of digit images by total ink: the boldest (``above``) or
    thinnest images, with the threshold taken from ``reference`` (e.g. the
    training split) so that every split uses the same rule.

    Args:
        images (Tensor): ``(N, ...)`` images in ``[0, 1]``.
        reference (Tensor): Images that fix the threshold.
        quantile (float): Quantile of the reference's ink. Default: 0.8.
        above (bool): Members are at or above (True) / below the threshold.

    Returns:
        Tensor: boolean ``(N,)``.

    Examples::

        >>> bold = ink_subgroup(x_test, x_train)  # top 20% by ink
    """
    thr = reference.flatten(1).sum(1).quantile(quantile)
    ink = images.flatten(1).sum(1)
    return ink >= thr if above else ink < thr


class AdversarialVulnerability(Metric):
    r"""Attack success rate minus ``clean_weight`` times clean accuracy.

    ``outputs`` are for clean and adversarial examples together; ``target`` is a
    triple ``(labels, attack_targets, is_adversarial)`` of per-example tensors.
    Success: an adversarial example is classified as its attack target. Higher
    means more vulnerable, so the units with the *highest* values are those the
    adversary relies on more than clean accuracy does (the ones to remove).

    Args:
        clean_weight (float): Weight of clean accuracy. Default: 1.
    """

    def __init__(self, clean_weight: float = 1.0) -> None:
        self.clean_weight = float(clean_weight)
        self.bounds = (-max(self.clean_weight, 0.0), 1.0 + max(-self.clean_weight, 0.0))

    def batched(self, outputs: Tensor, target: Any) -> Tensor:
        if not (isinstance(target, (tuple, list)) and len(target) == 3):
            raise ValueError(
                "AdversarialVulnerability expects `target` = (labels, attack_targets, "
                "is_adversarial)"
            )
        labels, goal, adv = target[0], target[1], target[2].bool()
        pred = outputs.argmax(-1)
        zero = torch.zeros(pred.shape[0], dtype=torch.float64, device=pred.device)
        success = (pred[:, adv] == goal[adv]).double().mean(-1) if adv.any() else zero
        clean = (
            (pred[:, ~adv] == labels[~adv]).double().mean(-1) if (~adv).any() else zero
        )
        return success - self.clean_weight * clean

    def __repr__(self) -> str:
        return f"AdversarialVulnerability(clean_weight={self.clean_weight})"


def pgd_attack(
    model: Callable,
    inputs: Tensor,
    labels: Tensor,
    eps: float = 0.1,
    step_num: int = 20,
    step_size: Optional[float] = None,
    attack_targets: Optional[Tensor] = None,
    bounds: Tuple[float, float] = (0.0, 1.0),
) -> Tuple[Tensor, Tensor]:
    r"""Targeted L-inf PGD (:class:`captum.robust.PGD`) against ``model`` as it is.

    The target of each example is, by default, the model's runner-up class on the
    clean input (the easiest wrong class). The model's modes are restored.

    Args:
        model (Callable): The model (attacked as given: intact, hooked or repaired).
        inputs (Tensor): Clean inputs.
        labels (Tensor): Their labels (the target is never the label).
        eps (float): L-inf radius. Default: 0.1.
        step_num (int): Steps. Default: 20.
        step_size (float, optional): Default ``2.5 * eps / step_num``.
        attack_targets (Tensor, optional): Classes to reach.
        bounds (tuple): Valid input range. Default ``(0, 1)``.

    Returns:
        (Tensor, Tensor): adversarial inputs and their attack targets.

    Examples::

        >>> x_adv, goal = pgd_attack(model, x_test, y_test, eps=0.1)
    """
    from captum.robust import PGD

    if not eps > 0:
        raise ValueError(f"`eps` must be positive, got {eps}")
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    flags = [(m, m.training) for m in modules]
    try:
        for m in modules:
            m.training = False
        if attack_targets is None:
            with torch.no_grad():
                logits = model(inputs).clone()
            logits[torch.arange(len(labels)), labels] = -float("inf")
            attack_targets = logits.argmax(1)
        pgd = PGD(model, lower_bound=bounds[0], upper_bound=bounds[1])
        adv = pgd.perturb(
            inputs,
            radius=eps,
            step_size=step_size or 2.5 * eps / step_num,
            step_num=step_num,
            target=attack_targets,
            targeted=True,
        )
    finally:
        for m, flag in flags:
            m.training = flag
    return adv.detach(), attack_targets


def _success(model: Callable, adv: Tensor, goal: Tensor) -> float:
    with model_guard(model):
        return float((model(adv).argmax(1) == goal).double().mean())


def adversarial_repair(
    model: nn.Module,
    layers: Layers,
    inputs: Tensor,
    labels: Tensor,
    test_inputs: Tensor,
    test_labels: Tensor,
    n_remove: int = 10,
    eps: float = 0.2,
    step_num: int = 20,
    clean_weight: float = 1.0,
    **attribute_kwargs: Any,
) -> ApplicationReport:
    r"""Remove the units an adversary relies on, then attack again.

    1. Craft targeted L-inf PGD examples against the *intact* model for both
       splits (the original code crafted them against ablated networks, a bug).
    2. Estimate values for :class:`AdversarialVulnerability` on clean plus
       adversarial estimation examples (no truncation: the metric is not
       monotone in the coalition) and remove the ``n_remove`` highest.
    3. On the held-out split report clean accuracy and the success rate of the
       same (transferred) attacks before and after, and ``fresh_attack_success``:
       a new PGD attack crafted against the repaired model. As the paper notes,
       the repaired model stays vulnerable to attacks made for it.

    Args:
        model (nn.Module): The model.
        layers (nn.Module or list): Layers whose filters are the players.
        inputs, labels (Tensor): Estimation split.
        test_inputs, test_labels (Tensor): Held-out split.
        n_remove (int): Units to remove. Default: 10.
        eps (float): L-inf radius of the attacks. Default: 0.2 (images in
            ``[0, 1]``).
        step_num (int): PGD steps. Default: 20.
        clean_weight (float): See :class:`AdversarialVulnerability`. Default: 1.
        **attribute_kwargs: Passed to ``FilterShapley.attribute``
            (``truncation`` defaults to None here).

    Returns:
        ApplicationReport: ``before``/``after`` hold ``attack_success`` and
        ``clean_accuracy``; ``extra`` holds ``fresh_attack_success``.

    Examples::

        >>> rep = adversarial_repair(model, model.conv_layers, x_val, y_val,
        ...                          x_test, y_test, max_evaluations=3000)
    """
    adv, goal = pgd_attack(model, inputs, labels, eps, step_num)
    adv_t, goal_t = pgd_attack(model, test_inputs, test_labels, eps, step_num)

    def pack(x, y, a, g):
        n = len(y)
        flag = torch.cat(
            [torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)]
        )
        return torch.cat([x, a]), (torch.cat([y, y]), torch.cat([g, g]), flag)

    x_game, t_game = pack(inputs, labels, adv, goal)
    kw = dict(attribute_kwargs)
    kw.setdefault("truncation", None)
    res = _estimate(
        model, layers, x_game, t_game, AdversarialVulnerability(clean_weight), kw
    )
    removed = torch.argsort(res.flat_values, descending=True)[:n_remove].tolist()
    n_t = len(test_labels)
    before, after = _before_after(
        model,
        res,
        removed,
        torch.cat([test_inputs, adv_t]),
        {
            "attack_success": (
                AdversarialVulnerability(0.0),
                pack(test_inputs, test_labels, adv_t, goal_t)[1],
            ),
            "clean_accuracy": (
                SubgroupAccuracy(),
                (torch.cat([test_labels, test_labels]), torch.arange(2 * n_t) < n_t),
            ),
        },
    )
    with remove_units(model, res, removed):
        fresh, fresh_goal = pgd_attack(model, test_inputs, test_labels, eps, step_num)
        fresh_success = _success(model, fresh, fresh_goal)
    return ApplicationReport(
        "adversarial repair",
        removed,
        _describe(res, removed),
        before,
        after,
        res,
        {"fresh_attack_success": fresh_success, "eps": float(eps)},
    )
