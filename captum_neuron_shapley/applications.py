r"""The paper's applications: units a class depends on, fairness repair and
adversarial repair (Ghorbani & Zou 2020, Sec. 4-5).

Each function estimates Shapley values on one split (``inputs``) with
:class:`~captum_neuron_shapley.FilterShapley`, removes units, and measures the
model *before and after* on a held-out split (``test_inputs``). Every number in
an :class:`ApplicationReport` comes from running the model; nothing is assumed.

Which units are removed, two answers from the same game:

- by value (the paper's answer): the ``n_remove`` units with the highest values
  (the lowest for a repair, where removing units should *raise* the metric);
- ``refine="greedy"``: the set answer of
  :func:`~captum_neuron_shapley.refine.greedy_removal`, the ``n_remove`` units
  whose *joint* removal moves the metric most on the estimation split, searched
  among the ``refine_pool`` best candidates by value. Often much stronger, at
  about ``n_remove * refine_pool`` more evaluations (counted in
  ``ApplicationReport.n_evaluations``).

Removed units emit their mean activation over the (clean) estimation inputs, so
that a repaired unit outputs what it outputs on average on ordinary data; the
games of the class and subgroup questions are played on the examples their
metric reads (the class's or the subgroup's), which is cheaper and gives the
same game.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn, Tensor

from .ablation import metric_after_removal, remove_units
from .filter_shapley import FilterShapley
from .game import model_guard
from .metrics import Accuracy, ClassRecall, Metric, SubgroupAccuracy
from .refine import default_pool_size, greedy_removal
from .result import ShapleyResult

__all__ = [
    "ApplicationReport",
    "AdversarialVulnerability",
    "class_specific_units",
    "fairness_repair",
    "adversarial_repair",
    "pgd_attack",
    "attack_success",
    "mean_baselines",
    "ink_subgroup",
]

Layers = Union[nn.Module, str, Sequence[Union[nn.Module, str]]]


@dataclass
class ApplicationReport:
    r"""What an application removed and what changed.

    Attributes:
        name (str): The application.
        removed (list of int): Flat unit indices removed (into ``result``), in
            removal order.
        removed_units (list of (str, int, float)): ``(layer, unit id, value)``.
        before (dict): Metrics of the intact model on the held-out split.
        after (dict): The same metrics with ``removed`` units removed.
        result (ShapleyResult): The Shapley values the removal was chosen from.
        extra (dict): Anything else measured (e.g. a fresh attack), and
            ``"by_value"``: the units the values alone would remove;
            ``"removal_curve"``: with ``refine``, the metric on the estimation
            split along ``removed``.
        n_evaluations (int): Coalitions evaluated for this report: the
            estimation(s) and the refinement search.
    """

    name: str
    removed: List[int]
    removed_units: List[Tuple[str, int, float]]
    before: Dict[str, float]
    after: Dict[str, float]
    result: ShapleyResult
    extra: Dict[str, Any] = field(default_factory=dict)
    n_evaluations: int = 0

    def __str__(self) -> str:
        lines = [
            f"{self.name}: removed {len(self.removed)} units "
            f"({self.n_evaluations} evaluations)"
        ]
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


def _zero_metric(outputs: Tensor, target: Any) -> float:
    return 0.0


def mean_baselines(
    model: nn.Module, layers: Layers, inputs: Tensor, batch_size: Optional[int] = None
) -> Tuple[Tensor, ...]:
    r"""Each filter's mean activation over ``inputs``, one tensor per layer:
    the removal rule :class:`~captum_neuron_shapley.FilterShapley` uses by
    default, computed once so that games on other data (a class's or a
    subgroup's examples) can remove units the same way (pass it as
    ``layer_baselines``).

    Args:
        model (nn.Module): The model.
        layers (nn.Module, str or list): Layers whose filters are the players
            (modules or their qualified names).
        inputs (Tensor): Examples to average over.
        batch_size (int, optional): Examples per forward pass.

    Returns:
        tuple of Tensor: One baseline per layer, broadcastable to its output.

    Examples::

        >>> base = mean_baselines(model, model.conv_layers, x_val)
        >>> fs.attribute(x_val[y_val == 3], target=y_val[y_val == 3],
        ...              layer_baselines=base)
    """
    game = FilterShapley(model, layers, internal_batch_size=batch_size).game(
        inputs, metric=_zero_metric
    )
    return tuple(_baseline(u.baseline) for u in game.units)


def _baseline(b: Optional[Tensor]) -> Tensor:
    assert b is not None  # the game resolves every unit's baseline
    return b.detach()


def _estimate(
    model: nn.Module, layers: Layers, inputs: Any, target: Any, metric: Callable, kw
) -> ShapleyResult:
    kw = dict(kw)
    kw.setdefault("seed", 0)
    kw.pop("return_result", None)
    execution = {k: kw.pop(k) for k in _EXECUTION_KEYS if k in kw}
    return FilterShapley(model, layers, **execution).attribute(
        inputs, target=target, metric=metric, return_result=True, **kw
    )


_GAME_KEYS = ("layer_baselines", "perturbations_per_eval")
#: ``attribute`` keywords of the applications that configure the classes.
_EXECUTION_KEYS = ("internal_batch_size", "cache_activations")


def _refine(
    model: nn.Module,
    layers: Layers,
    inputs: Any,
    target: Any,
    metric: Callable,
    kw: Dict[str, Any],
    order: List[int],
    k: int,
    pool: Optional[int],
    goal: str,
) -> Tuple[List[int], Tensor, int]:
    r"""The greedy set search on the game ``attribute`` estimated (same data,
    metric and removal baselines): ``(units, curve, evaluations)``."""
    execution = {k: kw[k] for k in _EXECUTION_KEYS if k in kw}
    game = FilterShapley(model, layers, **execution).game(
        inputs,
        target=target,
        metric=metric,
        **{key: kw[key] for key in _GAME_KEYS if key in kw},
    )
    pool = default_pool_size(k, game.n_units) if pool is None else pool
    pool = min(pool, len(order))
    units, curve = greedy_removal(game, order, k, pool, goal=goal)
    return units, curve, game.n_evaluations


def _check_refine(refine: Optional[str]) -> None:
    if refine not in (None, "greedy"):
        raise ValueError(f"`refine` must be None or 'greedy', got {refine!r}")


def _check_n_remove(n_remove: Any) -> None:
    if isinstance(n_remove, bool) or not isinstance(n_remove, int) or n_remove < 1:
        raise ValueError(f"`n_remove` must be a positive integer, got {n_remove!r}")


def _before_after(
    model: nn.Module,
    result: ShapleyResult,
    removed: List[int],
    inputs: Any,
    metrics: Mapping[str, Tuple[Callable, Any]],
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
    refine: Optional[str] = None,
    refine_pool: Optional[int] = None,
    **attribute_kwargs: Any,
) -> ApplicationReport:
    r"""Units that one class depends on but the model as a whole does not.

    Estimates values for overall accuracy (unless ``accuracy_result`` is given) and
    for ``ClassRecall(cls)`` (a game on the class's examples, whose removed units
    emit the accuracy game's baselines: their means over all ``inputs``);
    excludes the ``exclude_fraction`` of units most important for accuracy, and
    removes ``n_remove`` of the rest: those with the highest (positive) recall
    values, or with ``refine="greedy"`` the set whose joint removal lowers the
    recall most on ``inputs``. The report shows the class's recall, the accuracy
    on the other classes and overall accuracy before and after, on the held-out
    split.

    Args:
        model (nn.Module): The model.
        layers (nn.Module, str or list): Layers whose filters are the players
            (modules or their qualified names).
        inputs (Tensor): Estimation inputs (e.g. the validation split).
        labels (Tensor): Their labels.
        cls (int): The class.
        test_inputs (Tensor): Held-out inputs to judge the removal on.
        test_labels (Tensor): Their labels.
        n_remove (int): Units to remove. Default: 10.
        exclude_fraction (float): Fraction of units, most valuable for accuracy,
            that are never removed. Default: 0.2.
        accuracy_result (ShapleyResult, optional): A finished accuracy run on the
            same layers and ``inputs`` (saves one estimation; its baselines are
            the removal rule).
        refine (str, optional): ``"greedy"``: remove the set answer (see the
            module docstring). Default: None (by value).
        refine_pool (int, optional): Candidates of the search: the highest
            recall values outside the excluded units. Default:
            ``6 * n_remove``.
        **attribute_kwargs: Passed to ``FilterShapley.attribute`` (budgets,
            ``seed`` (default 0), ``top_k``, ``subset_size``, ...).

    Returns:
        ApplicationReport: ``before``/``after`` hold ``recall``,
        ``accuracy_other_classes`` and ``accuracy``; ``extra`` the
        ``excluded`` units and the ``accuracy_result``.

    Examples::

        >>> rep = class_specific_units(model, model.conv_layers, x_val, y_val, 3,
        ...                            x_test, y_test, max_evaluations=2000,
        ...                            refine="greedy")
        >>> print(rep)
    """
    if not 0.0 <= exclude_fraction < 1.0:
        raise ValueError(
            f"`exclude_fraction` must be in [0, 1), got {exclude_fraction}"
        )
    _check_refine(refine)
    _check_n_remove(n_remove)
    sel = labels == cls
    if not bool(sel.any()):
        raise ValueError(f"`cls`: no example of class {cls} in `labels`")
    n_eval = 0
    if accuracy_result is None:
        accuracy_result = _estimate(
            model, layers, inputs, labels, Accuracy(), attribute_kwargs
        )
        n_eval += accuracy_result.n_evaluations
    acc = accuracy_result
    kw = dict(attribute_kwargs)
    if kw.get("layer_baselines") is None:  # remove units as the accuracy game did
        kw["layer_baselines"] = tuple(lay.baseline for lay in acc.layers)
    rec = _estimate(model, layers, inputs[sel], labels[sel], ClassRecall(cls), kw)
    n_eval += rec.n_evaluations
    if acc.n_units != rec.n_units:
        raise ValueError("`accuracy_result` was computed for other layers")
    n_excl = int(round(exclude_fraction * acc.n_units))
    excluded = set(torch.argsort(acc.flat_values, descending=True)[:n_excl].tolist())
    order = [
        i
        for i in torch.argsort(rec.flat_values, descending=True).tolist()
        if i not in excluded
    ]
    by_value = [i for i in order if float(rec.flat_values[i]) > 0][:n_remove]
    extra: Dict[str, Any] = {
        "excluded": sorted(excluded),
        "accuracy_result": acc,
        "by_value": by_value,
    }
    removed = by_value
    if refine == "greedy":
        removed, curve, n_ref = _refine(
            model,
            layers,
            inputs[sel],
            labels[sel],
            ClassRecall(cls),
            kw,
            order,
            n_remove,
            refine_pool,
            "lower",
        )
        n_eval += n_ref
        extra["removal_curve"] = curve
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
        extra,
        n_eval,
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
    refine: Optional[str] = None,
    refine_pool: Optional[int] = None,
    **attribute_kwargs: Any,
) -> ApplicationReport:
    r"""Remove the units that hurt a subgroup.

    Estimates values for the subgroup's accuracy (a game on the subgroup's
    examples of ``inputs``; removed units emit their mean over *all*
    ``inputs``, so that the repaired model treats everyone alike) and removes
    ``n_remove`` units: those with the most negative values (only values below
    0), or with ``refine="greedy"`` the set whose joint removal *raises* the
    subgroup's accuracy most on ``inputs``, searched among the ``refine_pool``
    lowest-valued units (``greedy_removal(..., goal="raise")``). Reports the
    accuracy of the subgroup, of the rest and overall, before and after, on the
    held-out split.

    Every unit is sampled until the budget (``max_evaluations`` etc.): the
    bandit's ``top_k`` rule separates the *highest* values, not the lowest ones
    a repair needs, so ``top_k`` is not accepted here.

    Args:
        model (nn.Module): The model.
        layers (nn.Module, str or list): Layers whose filters are the players
            (modules or their qualified names).
        inputs, labels, in_group (Tensor): Estimation split and its subgroup mask.
        test_inputs, test_labels, test_in_group (Tensor): Held-out split.
        n_remove (int): At most this many units are removed. Default: 5.
        refine (str, optional): ``"greedy"``: remove the set answer. Default:
            None (by value).
        refine_pool (int, optional): Candidates of the search. Default:
            ``6 * n_remove``.
        **attribute_kwargs: Passed to ``FilterShapley.attribute`` (budgets,
            ``seed`` (default 0), ``layer_baselines``, ...).

    Returns:
        ApplicationReport: ``before``/``after`` hold ``subgroup_accuracy``,
        ``rest_accuracy`` and ``accuracy``.

    Examples::

        >>> s = bold_minority_splits()
        >>> model = trained_digits_resnet(bold_fraction=0.01)
        >>> rep = fairness_repair(model, model.conv_layers, s.x_val, s.y_val,
        ...                       s.g_val, s.x_test, s.y_test, s.g_test,
        ...                       max_evaluations=2000, refine="greedy")
    """
    for name, g, y in (
        ("in_group", in_group, labels),
        ("test_in_group", test_in_group, test_labels),
    ):
        if not isinstance(g, Tensor) or g.shape != y.shape:
            raise ValueError(
                f"`{name}` must be a boolean tensor shaped like the labels"
            )
        if not bool(g.bool().any()) or bool(g.bool().all()):
            raise ValueError(
                f"`{name}` must mark some but not all examples (the subgroup and "
                "the rest)"
            )
    if attribute_kwargs.get("top_k") is not None:
        raise ValueError(
            "`top_k` is not supported by fairness_repair: the bandit's top-k rule "
            "separates the highest values, and a repair removes the lowest; "
            "bound the run with `max_evaluations` instead"
        )
    _check_refine(refine)
    _check_n_remove(n_remove)
    g = in_group.bool()
    kw = dict(attribute_kwargs)
    if kw.get("layer_baselines") is None:
        kw["layer_baselines"] = mean_baselines(
            model, layers, inputs, kw.get("batch_size")
        )
    res = _estimate(model, layers, inputs[g], labels[g], Accuracy(), kw)
    n_eval = res.n_evaluations
    order = torch.argsort(res.flat_values).tolist()  # most negative first
    by_value = [i for i in order if float(res.flat_values[i]) < 0][:n_remove]
    extra: Dict[str, Any] = {"by_value": by_value}
    removed = by_value
    if refine == "greedy":
        removed, curve, n_ref = _refine(
            model,
            layers,
            inputs[g],
            labels[g],
            Accuracy(),
            kw,
            order,
            n_remove,
            refine_pool,
            "raise",
        )
        n_eval += n_ref
        extra["removal_curve"] = curve
    tg = test_in_group.bool()
    before, after = _before_after(
        model,
        res,
        removed,
        test_inputs,
        {
            "subgroup_accuracy": (SubgroupAccuracy(), (test_labels, tg)),
            "rest_accuracy": (SubgroupAccuracy(), (test_labels, ~tg)),
            "accuracy": (Accuracy(), test_labels),
        },
    )
    return ApplicationReport(
        "fairness repair",
        removed,
        _describe(res, removed),
        before,
        after,
        res,
        extra,
        n_eval,
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


def _cross_entropy(outputs: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(outputs, target, reduction="none")


def random_attack_targets(labels: Tensor, n_classes: int, seed: int = 0) -> Tensor:
    r"""A class other than the label for each example, uniformly at random from a
    private generator seeded by ``seed`` (the paper's targeted attacks)."""
    g = torch.Generator().manual_seed(int(seed))
    shift = torch.randint(1, n_classes, (len(labels),), generator=g)
    return (labels.cpu() + shift) % n_classes


def pgd_attack(
    model: Callable,
    inputs: Tensor,
    labels: Tensor,
    eps: float = 0.1,
    step_num: int = 20,
    step_size: Optional[float] = None,
    attack_targets: Union[None, str, Tensor] = None,
    bounds: Tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
) -> Tuple[Tensor, Tensor]:
    r"""Targeted L-inf PGD (:class:`captum.robust.PGD`) against ``model`` as it is.

    The loss is the cross-entropy of the model's outputs (logits) with the
    attack target. (Captum's default loss, ``-log(outputs)``, expects
    probabilities: on logits it is undefined wherever a logit is negative and
    the attack silently stalls there.) The model's modes are restored and its
    parameters get no gradients.

    Args:
        model (Callable): The model (attacked as given: intact, hooked or repaired).
        inputs (Tensor): Clean inputs.
        labels (Tensor): Their labels (the target is never the label).
        eps (float): L-inf radius. Default: 0.1.
        step_num (int): Steps. Default: 20.
        step_size (float, optional): Default ``2.5 * eps / step_num``.
        attack_targets (str or Tensor, optional): Classes to reach: a tensor,
            ``"runner_up"`` (default: the model's runner-up class on the clean
            input, the easiest wrong class) or ``"random"`` (a random wrong class
            per example, from ``seed``: the paper's attack).
        bounds (tuple): Valid input range. Default ``(0, 1)``.
        seed (int): Seed of the ``"random"`` targets. Default: 0.

    Returns:
        (Tensor, Tensor): adversarial inputs and their attack targets.

    Examples::

        >>> x_adv, goal = pgd_attack(model, x_test, y_test, eps=0.3,
        ...                          attack_targets="random")
    """
    from captum.robust import PGD

    if not eps > 0:
        raise ValueError(f"`eps` must be positive, got {eps}")
    if isinstance(attack_targets, str) and attack_targets not in (
        "runner_up",
        "random",
    ):
        raise ValueError(
            "`attack_targets` must be a tensor, 'runner_up' or 'random', got "
            f"{attack_targets!r}"
        )
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    flags = [(m, m.training) for m in modules]
    try:
        for m in modules:
            m.training = False
        if attack_targets is None or isinstance(attack_targets, str):
            with torch.no_grad():
                logits = model(inputs).clone()
            if attack_targets == "random":
                attack_targets = random_attack_targets(
                    labels, logits.shape[-1], seed
                ).to(labels.device)
            else:
                logits[torch.arange(len(labels)), labels] = -float("inf")
                attack_targets = logits.argmax(1)
        pgd = PGD(
            model,
            loss_func=_cross_entropy,
            lower_bound=bounds[0],
            upper_bound=bounds[1],
        )
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


def attack_success(model: Callable, adv: Tensor, goal: Tensor) -> float:
    r"""Fraction of ``adv`` that ``model`` classifies as their attack target
    ``goal`` (eval mode, no gradients; modes restored)."""
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
    eps: float = 0.3,
    step_num: int = 20,
    clean_weight: float = 1.0,
    attack_targets: str = "random",
    transfer_from: Optional[nn.Module] = None,
    refine: Optional[str] = None,
    refine_pool: Optional[int] = None,
    **attribute_kwargs: Any,
) -> ApplicationReport:
    r"""Remove the units an adversary relies on, then attack again.

    1. Craft targeted L-inf PGD examples against the *intact* model for both
       splits (the original code crafted them against ablated networks, a bug).
    2. Estimate values for :class:`AdversarialVulnerability` on clean plus
       adversarial estimation examples (no truncation: the metric is not
       monotone in the coalition; removed units emit their mean over the clean
       estimation inputs) and remove ``n_remove`` units: the highest values, or
       with ``refine="greedy"`` the set whose joint removal lowers the metric
       most.
    3. On the held-out split report clean accuracy and the success rate of the
       same attacks (crafted against the intact model) before and after;
       ``fresh_attack_success``: a new PGD attack crafted against the repaired
       model (the paper: it still works); and, with ``transfer_from``, the
       success of attacks crafted against that other model with the same
       targets (a black-box transfer attack), before and after.

    Args:
        model (nn.Module): The model.
        layers (nn.Module, str or list): Layers whose filters are the players
            (modules or their qualified names).
        inputs, labels (Tensor): Estimation split.
        test_inputs, test_labels (Tensor): Held-out split.
        n_remove (int): Units to remove. Default: 10.
        eps (float): L-inf radius of the attacks. Default: 0.3 (images in
            ``[0, 1]``; the usual radius for MNIST-like digits).
        step_num (int): PGD steps. Default: 20.
        clean_weight (float): See :class:`AdversarialVulnerability`. Default: 1.
        attack_targets (str): ``"random"`` (default, as in the paper) or
            ``"runner_up"``; see :func:`pgd_attack`. The held-out split's random
            targets use seed 1, the estimation split's seed 0.
        transfer_from (nn.Module, optional): Another model to craft a transfer
            attack on.
        refine (str, optional): ``"greedy"``: remove the set answer. Default:
            None (by value). ``top_k`` defaults to ``n_remove`` then.
        refine_pool (int, optional): Candidates of the search. Default:
            ``6 * n_remove``.
        **attribute_kwargs: Passed to ``FilterShapley.attribute``
            (``truncation`` defaults to None here).

    Returns:
        ApplicationReport: ``before``/``after`` hold ``attack_success``,
        ``clean_accuracy`` and, with ``transfer_from``,
        ``transfer_attack_success``; ``extra`` holds ``fresh_attack_success``
        and ``attacks``: the adversarial examples and their targets
        (``"estimation"`` and ``"test"`` pairs, ``"transfer"`` examples or None).

    Examples::

        >>> rep = adversarial_repair(model, model.conv_layers, x_val, y_val,
        ...                          x_test, y_test, max_evaluations=3000,
        ...                          refine="greedy", transfer_from=other_model)
    """
    _check_refine(refine)
    _check_n_remove(n_remove)
    adv, goal = pgd_attack(
        model, inputs, labels, eps, step_num, attack_targets=attack_targets, seed=0
    )
    adv_t, goal_t = pgd_attack(
        model,
        test_inputs,
        test_labels,
        eps,
        step_num,
        attack_targets=attack_targets,
        seed=1,
    )

    def pack(x, y, a, g):
        n = len(y)
        flag = torch.arange(2 * n, device=y.device) >= n
        return torch.cat([x, a]), (torch.cat([y, y]), torch.cat([g, g]), flag)

    x_game, t_game = pack(inputs, labels, adv, goal)
    kw = dict(attribute_kwargs)
    kw.setdefault("truncation", None)
    if kw.get("layer_baselines") is None:
        kw["layer_baselines"] = mean_baselines(
            model, layers, inputs, kw.get("batch_size")
        )
    if refine is not None and kw.get("top_k") is None:
        kw["top_k"] = n_remove
    metric = AdversarialVulnerability(clean_weight)
    res = _estimate(model, layers, x_game, t_game, metric, kw)
    n_eval = res.n_evaluations
    order = torch.argsort(res.flat_values, descending=True).tolist()
    by_value = order[:n_remove]
    extra: Dict[str, Any] = {"by_value": by_value}
    removed = by_value
    if refine == "greedy":
        removed, curve, n_ref = _refine(
            model,
            layers,
            x_game,
            t_game,
            metric,
            kw,
            order,
            n_remove,
            refine_pool,
            "lower",
        )
        n_eval += n_ref
        extra["removal_curve"] = curve
    n_t = len(test_labels)
    metrics = {
        "attack_success": (
            AdversarialVulnerability(0.0),
            pack(test_inputs, test_labels, adv_t, goal_t)[1],
        ),
        "clean_accuracy": (
            SubgroupAccuracy(),
            (
                torch.cat([test_labels, test_labels]),
                torch.arange(2 * n_t, device=test_labels.device) < n_t,
            ),
        ),
    }
    before, after = _before_after(
        model, res, removed, torch.cat([test_inputs, adv_t]), metrics
    )
    x_tr: Optional[Tensor] = None
    if transfer_from is not None:
        x_tr, _ = pgd_attack(
            transfer_from,
            test_inputs,
            test_labels,
            eps,
            step_num,
            attack_targets=goal_t,
        )
        v = metric_after_removal(
            model,
            res,
            [[], removed],
            torch.cat([test_inputs, x_tr]),
            pack(test_inputs, test_labels, x_tr, goal_t)[1],
            AdversarialVulnerability(0.0),
        )
        before["transfer_attack_success"] = float(v[0])
        after["transfer_attack_success"] = float(v[1])
    with remove_units(model, res, removed):
        fresh, fresh_goal = pgd_attack(
            model, test_inputs, test_labels, eps, step_num, attack_targets=goal_t
        )
        extra["fresh_attack_success"] = attack_success(model, fresh, fresh_goal)
    extra["eps"] = float(eps)
    extra["attacks"] = {
        "estimation": (adv, goal),
        "test": (adv_t, goal_t),
        "transfer": x_tr,
    }
    return ApplicationReport(
        "adversarial repair",
        removed,
        _describe(res, removed),
        before,
        after,
        res,
        extra,
        n_eval,
    )
