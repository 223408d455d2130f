r"""Captum attribution classes: :class:`NeuronShapley` and :class:`FilterShapley`."""

from __future__ import annotations

import time
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from captum.attr import LayerAttribution, PerturbationAttribution
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ._inputs import check_positive_int, format_eval_data, layer_names
from .bandit import BoundConfig, TopKRule
from .distributed import Collective, rank_seed
from .estimator import Budget, TMABEstimator, fingerprint
from .game import UnitGame, model_guard, reference_pass
from .metrics import accuracy, metric_bounds
from .prefix import trace_prefix
from .refine import greedy_removal
from .removal import (
    LayerUnits,
    filter_groups,
    neuron_groups,
    per_layer,
    resolve_baseline,
)
from .result import LayerLayout, ShapleyResult
from .sampler import ChainSampler, resolve_strata, truncation_threshold

__all__ = ["NeuronShapley", "FilterShapley"]

PAPER_PATIENCE = 6
#: Default ``epsilon``: this fraction of ``|V(all) - V(none)|``.
DEFAULT_EPSILON = 0.01

Baseline = Union[None, str, float, int, Tensor]


class NeuronShapley(LayerAttribution, PerturbationAttribution):
    r"""Neuron Shapley (Ghorbani & Zou, NeurIPS 2020): the Shapley value of each
    unit of one or more layers for a *dataset-level* metric of the model, such as
    its accuracy on the evaluation data.

    The players are the elements of the layer outputs (optionally grouped by a
    Captum-style ``layer_mask``); all units of all given layers play one joint game.
    ``V(S)`` is the metric of the model in which the units outside ``S`` are
    replaced by a baseline (by forward hooks; the model's weights are never
    touched). Values are estimated by truncated permutation chains with a
    multi-armed bandit that stops sampling units once their confidence interval
    places them clearly inside or outside the top ``k``.

    Args:
        forward_func (nn.Module or Callable): The model. When it is an
            ``nn.Module`` it is evaluated in ``eval`` mode without gradients and
            its modules' ``training`` flags are restored afterwards.
        layer (nn.Module or list[nn.Module]): Layer(s) whose output units are the
            players. A list gives one joint game over all their units and tuple
            outputs.
    """

    _grouping = "neuron"

    def __init__(
        self, forward_func: Callable, layer: Union[nn.Module, Sequence[nn.Module]]
    ) -> None:
        layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
        if not layers:
            raise ValueError("`layer` must be a module or a non-empty list of them")
        self._names = layer_names(forward_func, layers)
        LayerAttribution.__init__(self, forward_func, layer)
        PerturbationAttribution.__init__(self, forward_func)
        self._layers = layers
        self._single = not isinstance(layer, (list, tuple))

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def has_convergence_delta(self) -> bool:
        return True

    def attribute(
        self,
        inputs: Union[Tensor, Tuple[Tensor, ...], DataLoader],
        target: Any = None,
        metric: Optional[Callable[[Tensor, Any], float]] = None,
        layer_baselines: Union[Baseline, Tuple[Baseline, ...]] = None,
        layer_mask: Union[None, Tensor, Tuple[Optional[Tensor], ...]] = None,
        truncation: Union[None, str, float] = "auto",
        top_k: Optional[int] = None,
        refine: Optional[str] = None,
        refine_pool: Optional[int] = None,
        refine_beam: int = 1,
        epsilon: Optional[float] = None,
        max_evaluations: Optional[int] = None,
        max_permutations: Optional[int] = None,
        max_time: Optional[float] = None,
        bound: str = "anytime",
        delta: Optional[float] = None,
        min_samples: Optional[int] = None,
        subset_size: Optional[int] = None,
        antithetic: bool = False,
        strata: Optional[int] = None,
        chains_per_round: int = 1,
        perturbations_per_eval: int = 1,
        batch_size: Optional[int] = None,
        cache_activations: bool = True,
        seed: Optional[int] = None,
        checkpoint: Optional[str] = None,
        checkpoint_interval: float = 60.0,
        show_progress: bool = False,
        callback: Optional[Callable[[TMABEstimator], Optional[bool]]] = None,
        return_convergence_delta: bool = False,
        return_result: bool = False,
    ) -> Any:
        r"""
        Args:
            inputs (Tensor, tuple[Tensor, ...] or DataLoader): The evaluation set,
                examples along dimension 0. A DataLoader is read once; its batches
                are ``(inputs..., target)`` when ``target`` is None.
            target (Any, optional): What the metric compares the outputs with:
                per-example labels (a tensor with one entry per example), a tuple of
                per-example tensors, or any object. Per-example targets follow the
                examples when ``subset_size`` samples them.
            metric (Callable, optional): ``metric(outputs, target) -> float``,
                higher is better. Default: top-1 accuracy. See
                :mod:`captum_neuron_shapley.metrics` for recall, subgroup accuracy
                and negative cross-entropy, which also score many coalitions at once.
            layer_baselines (scalar, Tensor, str or tuple, optional): The value a
                removed unit is replaced with: ``"zero"``, ``"mean"`` (the unit's
                mean output over ``inputs``, averaged within the unit), a scalar or a
                tensor broadcastable to the layer output (without batch dimension,
                or with a leading 1), for every layer, or a tuple with one entry per
                layer. Default: ``"mean"`` for FilterShapley (each removed filter
                emits its channel mean), ``"zero"`` for NeuronShapley.
            layer_mask (Tensor or tuple, optional): NeuronShapley only: integer
                tensor broadcastable to the layer output (a leading batch dimension
                of 1 is allowed) grouping elements into units, one per layer for a
                list of layers. Each element of a unit gets the unit's value.
            truncation (float, str or None, optional): A chain stops once the
                metric falls to this value and the remaining marginals count as 0.
                ``"auto"`` (default): ``V(none) + 0.05 * (V(all) - V(none))``, i.e.
                5% of the way from the fully ablated model to the intact one, or no
                truncation when removing every unit does not lower the metric.
                ``None`` disables truncation (unbiased; efficiency holds).
            top_k (int, optional): Stop once the ``top_k`` most valuable units are
                separated from the rest (up to ``epsilon``). None: estimate every
                unit until each half-width is at most ``epsilon`` or a budget ends.
            refine (str, optional): ``"greedy"``: after sampling, answer the set
                question "which ``top_k`` units hurt the metric most when removed
                together" by a greedy search on the same game (same metric, data
                and baselines) over the ``refine_pool`` highest-valued units; the
                result's ``removal_set`` and ``removal_curve`` hold the answer
                (see :mod:`captum_neuron_shapley.refine`). Needs ``top_k``; costs
                about ``top_k * refine_pool`` evaluations, counted in
                ``n_evaluations`` (with ``torch.distributed``, every rank runs the
                same search; it is counted once). Default: None (values only).
            refine_pool (int, optional): Candidates of the greedy search: the
                ``refine_pool`` highest-valued units. Default:
                ``min(n_units, 6 * top_k)``.
            refine_beam (int): Partial sets the search keeps at each step (1:
                plain greedy). Default: 1.
            epsilon (float, optional): Tolerance of the stopping rule, in units of
                the metric. Default: ``0.01 * |V(all) - V(none)|``, one percent of
                what removing every unit changes (0.01 if that is 0). The result's
                ``boundary_crowding()`` tells how many units lie within
                ``epsilon`` of the top-k boundary.
            max_evaluations (int, optional): Budget in coalitions evaluated.
            max_permutations (int, optional): Budget in permutation chains.
            max_time (float, optional): Budget in seconds, counting the game's
                setup; checked between forward passes (chains it cuts short are
                dropped). A ``refine`` search runs after it.
            bound (str): ``"anytime"`` (default: an asymptotic confidence
                sequence with a union bound over units, valid at the bandit's own
                stopping time although it looks after every round; see
                :class:`~captum_neuron_shapley.bandit.BoundConfig`), ``"fixed"``
                (the normal quantile of a fixed sample size: narrower by about a
                fifth and faster to stop, but its intervals at the stopping time
                miss more often than ``delta``), ``"strict"`` (empirical Bernstein
                with the true range of a marginal and a union bound over units:
                valid at every fixed sample size without asymptotics, and far more
                conservative: expect thousands of chains on a network with a
                hundred units) or ``"paper"`` (the original code: empirical
                Bernstein with range 1, ``delta=0.2`` per unit, and truncation only
                after 6 consecutive states below the threshold).
            delta (float, optional): Failure probability of the intervals
                (default 0.05; 0.2 in paper mode).
            min_samples (int, optional): Samples a unit needs before it can leave
                the active set (default for ``"anytime"`` and ``"fixed"``: 20
                chains' worth, i.e.
                20 samples, 10 antithetic pairs or ``ceil(20 / strata)`` cycles,
                at least 5; 2 otherwise).
            subset_size (int, optional): Evaluate each chain on this many examples
                drawn at random (the same ones along the whole chain).
            antithetic (bool): Pair each chain with its reversed order (the
                pair's mean marginal is one sample).
            strata (int, optional): Draw chains in cycles of ``strata`` cyclic
                shifts of one random removal order, so that over a cycle each unit
                is removed once in every band of ``n_units / strata`` positions;
                the cycle's mean marginal is one sample. Unbiased (each chain is a
                uniformly random order) and stratified by position, which removes
                the variance between early, middle and truncated positions (about
                half of it on the digits CNN with ``strata=8``). ``1``: independent
                chains. Default: ``4`` (or the number of units, if fewer); ``1``
                with ``antithetic``, which it excludes, and with ``bound="paper"``
                (the original code's independent chains).
            chains_per_round (int): Sets of chains (a cycle of ``strata``
                chains, an antithetic pair or one chain) walked together, their
                states sharing forward passes (useful on GPUs with a large
                ``perturbations_per_eval``; unbiased, as every set is drawn
                independently).
            perturbations_per_eval (int): Coalitions evaluated in one forward pass
                (the batch is ``perturbations_per_eval`` copies of the examples).
            batch_size (int, optional): Examples per forward pass (all if None).
            cache_activations (bool): Compute the part of the model that runs
                before the first ablated layer once and replay it for every
                coalition (see :mod:`captum_neuron_shapley.prefix`). Costs the
                memory of those activations for all ``inputs``. Default: True.
            seed (int, optional): Seed of a private generator; the same seed gives
                the same result, and the global RNG state is never touched.
            checkpoint (str, optional): File to save the estimator's state to
                (atomically, every ``checkpoint_interval`` seconds and at the end)
                and to resume from if it exists.
            checkpoint_interval (float): Seconds between checkpoint saves.
            show_progress (bool): Show a progress bar over permutation chains.
            callback (Callable, optional): Called after every round with the
                :class:`~captum_neuron_shapley.estimator.TMABEstimator` (its
                ``stats.mean``, ``n_evaluations``...); returning True stops the run.
            return_convergence_delta (bool): Also return
                ``V(all) - V(none) - sum(values)``.
            return_result (bool): Return a :class:`ShapleyResult` instead of tensors
                (its ``convergence_delta`` holds the efficiency gap).

        Returns:
            *Tensor* or *tuple[Tensor, ...]* of **attributions**, or a
            :class:`ShapleyResult`:
            - **attributions**: NeuronShapley: the layer output's shape without the
              batch dimension; FilterShapley: shape ``(C,)``. A tuple with one entry
              per layer when ``layer`` is a list.
            - **delta** (*float*, returned if ``return_convergence_delta``): the
              efficiency gap.

        Examples::

            >>> net = ImageClassifier()
            >>> ns = NeuronShapley(net, net.fc1)
            >>> # Shapley value of each fc1 neuron for accuracy on (x_val, y_val),
            >>> # sampling until the 5 most valuable neurons are identified.
            >>> phi = ns.attribute(x_val, target=y_val, top_k=5, seed=0)
        """
        started = time.monotonic()
        check_positive_int("top_k", top_k)
        check_positive_int("subset_size", subset_size)
        check_positive_int("chains_per_round", chains_per_round, False)
        check_positive_int("strata", strata)
        check_positive_int("refine_pool", refine_pool)
        check_positive_int("refine_beam", refine_beam, False)
        if epsilon is not None and not (
            isinstance(epsilon, (int, float))
            and not isinstance(epsilon, bool)
            and epsilon >= 0
        ):
            raise ValueError(
                f"`epsilon` must be a non-negative number or None, got {epsilon!r}"
            )
        if refine not in (None, "greedy"):
            raise ValueError(f"`refine` must be None or 'greedy', got {refine!r}")
        if refine is not None and top_k is None:
            raise ValueError(
                "`refine` needs `top_k`: the size of the removal set to search for"
            )
        if refine_pool is not None and top_k is not None and refine_pool < top_k:
            raise ValueError(
                f"`refine_pool` must be at least `top_k` ({top_k}), got {refine_pool}"
            )
        budget = Budget(max_evaluations, max_permutations, max_time)
        bounds_cfg = BoundConfig(bound, delta, min_samples)
        generator = torch.Generator()
        base_seed = int(seed) if seed is not None else _fresh_seed()
        generator.manual_seed(rank_seed(base_seed, Collective().rank))
        with model_guard(self.forward_func):
            game = self.game(
                inputs,
                target,
                metric,
                layer_baselines,
                layer_mask,
                perturbations_per_eval,
                batch_size,
                cache_activations,
            )
            if top_k is not None and top_k >= game.n_units:
                raise ValueError(
                    f"`top_k` must be smaller than the number of units "
                    f"({game.n_units}), got {top_k}"
                )
            # paper mode keeps the original code's independent chains
            strata = resolve_strata(strata, antithetic, bound == "paper", game.n_units)
            if min_samples is None and bounds_cfg.asymptotic:  # 20 chains' worth
                bounds_cfg.min_samples = max(5, -(-20 // (2 if antithetic else strata)))
            v_all, v_none = game.full_value(), game.empty_value()
            threshold = truncation_threshold(truncation, v_all, v_none)
            if epsilon is None:
                epsilon = DEFAULT_EPSILON * (abs(v_all - v_none) or 1.0)
            sampler = ChainSampler(
                game,
                generator,
                threshold,
                PAPER_PATIENCE if bound == "paper" else 1,
                subset_size,
                antithetic,
                chains_per_round,
                strata,
            )
            estimator = TMABEstimator(
                sampler,
                TopKRule(top_k, float(epsilon)),
                bounds_cfg,
                budget,
                _marginal_range(game.metric),
                checkpoint,
                checkpoint_interval,
                fingerprint(sampler, seed, top_k, epsilon, bounds_cfg),
                show_progress,
                callback,
                time.monotonic() - started,
            ).run()
            removal: Optional[Tuple[List[int], Tensor, int]] = None
            if refine == "greedy":
                assert top_k is not None
                before = game.n_evaluations
                order = torch.argsort(estimator.stats.mean, descending=True)
                units, curve = greedy_removal(
                    game,
                    order.tolist(),
                    top_k,
                    refine_pool,
                    refine_beam,
                    show_progress and Collective().rank == 0,
                )
                removal = (units, curve, game.n_evaluations - before)
        result = self._result(
            estimator, game.units, v_all, v_none, threshold, top_k, bounds_cfg.mode
        )
        result.epsilon = float(epsilon)
        if removal is not None:
            result.removal_set, result.removal_curve = removal[0], removal[1]
            result.refine_evaluations = removal[2]
            result.n_evaluations += removal[2]
        if return_result:
            return result
        if return_convergence_delta:
            return result.values, result.convergence_delta
        return result.values

    def game(
        self,
        inputs: Union[Tensor, Tuple[Tensor, ...], DataLoader],
        target: Any = None,
        metric: Optional[Callable[[Tensor, Any], float]] = None,
        layer_baselines: Union[Baseline, Tuple[Baseline, ...]] = None,
        layer_mask: Union[None, Tensor, Tuple[Optional[Tensor], ...]] = None,
        perturbations_per_eval: int = 1,
        batch_size: Optional[int] = None,
        cache_activations: bool = True,
    ) -> UnitGame:
        r"""The :class:`UnitGame` that :meth:`attribute` estimates, for exact
        enumeration, other estimators (such as Captum's ``ShapleyValueSampling``
        through a mask wrapper) and removal experiments. Arguments as in
        :meth:`attribute`.

        Examples::

            >>> game = FilterShapley(model, model.conv1).game(x_val, target=y_val)
            >>> keep = torch.ones(1, game.n_units, dtype=torch.bool)
            >>> keep[0, 3] = False  # remove filter 3
            >>> game.value(keep)
        """
        check_positive_int("perturbations_per_eval", perturbations_per_eval, False)
        check_positive_int("batch_size", batch_size)
        xs, target = format_eval_data(inputs, target)
        if metric is None:
            if target is None:
                raise ValueError(
                    "`target` is required by the default metric (accuracy)"
                )
            metric = accuracy
        if not callable(metric):
            raise ValueError(f"`metric` must be callable, got {type(metric).__name__}")
        with model_guard(self.forward_func):
            skip: List[nn.Module] = []
            if cache_activations and isinstance(self.forward_func, nn.Module):
                skip = trace_prefix(
                    self.forward_func, self._layers, [x[:1] for x in xs]
                )
            outputs, shapes, means, cached = reference_pass(
                self.forward_func, self._layers, self._names, xs, batch_size, skip
            )
        units = self._units(shapes, means, layer_baselines, layer_mask)
        return UnitGame(
            self.forward_func,
            units,
            xs,
            target,
            metric,
            outputs,
            perturbations_per_eval,
            batch_size,
            (skip, cached),
        )

    def _units(
        self,
        shapes: List[torch.Size],
        means: List[Tensor],
        layer_baselines: Any,
        layer_mask: Any,
    ) -> List[LayerUnits]:
        n = len(self._layers)
        baselines = per_layer(layer_baselines, n, "layer_baselines")
        masks = per_layer(layer_mask, n, "layer_mask")
        if self._grouping == "filter" and any(m is not None for m in masks):
            raise ValueError("`layer_mask` is not supported by FilterShapley")
        units = []
        for i, (layer, name, shape) in enumerate(
            zip(self._layers, self._names, shapes)
        ):
            if self._grouping == "filter":
                groups = filter_groups(shape, name)
                ids, kind = torch.arange(shape[0]), "filter"
            else:
                groups, ids = neuron_groups(shape, name, masks[i])
                kind = "neuron"
            device = means[i].device
            u = LayerUnits(layer, name, shape, groups.to(device), ids, kind)
            u.baseline = resolve_baseline(u, baselines[i], means[i], self._grouping)
            units.append(u)
        return units

    def _result(
        self,
        est: TMABEstimator,
        units: List[LayerUnits],
        v_all: float,
        v_none: float,
        threshold: Optional[float],
        top_k: Optional[int],
        bound: str,
    ) -> ShapleyResult:
        layouts = []
        for u in units:
            groups = (
                torch.arange(u.n_units)
                if u.kind == "filter"
                else u.groups.expand(u.out_shape).cpu().clone()
            )
            base = u.baseline.detach().cpu().expand(u.out_shape).clone()
            layouts.append(
                LayerLayout(
                    u.name, u.kind, groups, u.unit_ids.cpu(), list(u.out_shape), base
                )
            )
        return ShapleyResult(
            flat_values=est.stats.mean.clone(),
            flat_stderr=est.stats.stderr,
            flat_radius=est.radius(),
            counts=est.stats.count.to(torch.long),
            n_evaluations=est.n_evaluations,
            n_permutations=est.n_permutations,
            converged=est.converged,
            stop_reason=est.stop_reason,
            top_k=top_k,
            full_value=v_all,
            empty_value=v_none,
            truncation=threshold,
            bound=bound,
            layers=layouts,
            history=est.history_tensor(),
            single_layer=self._single,
        )


class FilterShapley(NeuronShapley):
    r"""Neuron Shapley with one player per channel (convolutional filter).

    The same engine as :class:`NeuronShapley`, with the units of each layer being
    its output channels (dimension 1 of ``(N, C, L)`` or ``(N, C, H, W)``
    outputs). A removed filter emits, by default, its mean activation over the
    evaluation inputs (the per-channel constant of the original paper).

    Args:
        forward_func (nn.Module or Callable): The model.
        layer (nn.Module or list[nn.Module]): Layer(s) whose output channels are
            the players (one joint game over all their channels).

    Examples::

        >>> from captum_neuron_shapley import FilterShapley
        >>> fs = FilterShapley(model, [model.conv1, model.conv2])
        >>> phi1, phi2 = fs.attribute(x_val, target=y_val, top_k=10, seed=0)
        >>> phi1.shape  # one value per filter of conv1
        torch.Size([32])
    """

    _grouping = "filter"


def _marginal_range(metric: Callable) -> Optional[float]:
    bounds = metric_bounds(metric)
    return None if bounds is None else 2.0 * (bounds[1] - bounds[0])


def _fresh_seed() -> int:
    import secrets

    return secrets.randbits(62)
