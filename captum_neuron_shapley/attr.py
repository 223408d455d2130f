r"""Captum attribution classes: :class:`NeuronShapley` and :class:`FilterShapley`.

They format inputs and outputs the Captum way and delegate the work to small
parts: the game (:mod:`.game`), the sampler (:mod:`.sampler`), the running
statistics (:mod:`.statistics`), the stopping rule and bounds (:mod:`.stopping`,
:mod:`.bounds`), the estimator loop (:mod:`.estimator`), the removal-set search
(:mod:`.refine`) and the result (:mod:`.result`)."""

from __future__ import annotations

import time
from typing import (
    Any,
    Callable,
    cast,
    List,
    Literal,
    Optional,
    overload,
    Sequence,
    Tuple,
    Union,
)

import torch
from captum.attr import LayerAttribution, PerturbationAttribution
from captum.log import log_usage
from torch import nn, Tensor

from ._attr_utils import (
    build_game,
    flat_attributions,
    in_layer_dtype,
    Inputs,
    layer_units,
    LayerAttributions,
    LayerBaselines,
    LayerMasks,
    MetricFn,
    Refine,
    SamplerSpec,
    Stop,
    unit_values,
)
from ._deprecated import accepts_moved_keywords
from ._inputs import check_not_scripted, check_positive_int, layer_names, resolve_layers
from ._run import compose_stop, estimate
from .cost import CostEstimate, pilot
from .game import LayerEval, model_guard, module_of, UnitGame
from .refine import make_refine
from .removal import LayerUnits
from .result import ShapleyResult
from .sampler import make_sampler

__all__ = ["NeuronShapley", "FilterShapley"]


class NeuronShapley(LayerAttribution, PerturbationAttribution):
    r"""Neuron Shapley (Ghorbani & Zou, NeurIPS 2020): the Shapley value of each
    unit of one or more layers for a *dataset-level* metric of the model, such as
    its accuracy on an evaluation set.

    Unlike Captum's other layer methods, which attribute each example's output
    to the layer's units, Neuron Shapley attributes one number computed over the
    whole evaluation set (``inputs``) to the units: the attributions have no
    batch dimension. The players are the elements of the layer output
    (optionally grouped into units by a Captum-style ``layer_mask``); all units
    of all given layers play one joint game. ``V(S)`` is the metric of the model
    in which the units outside ``S`` are replaced by a baseline (by forward
    hooks; the model's weights are never touched). Values are estimated by
    truncated permutation chains with a multi-armed bandit that stops sampling
    units once their confidence intervals place them clearly inside or outside
    the top ``k``.

    More details: Amirata Ghorbani and James Zou, "Neuron Shapley: Discovering
    the Responsible Neurons", NeurIPS 2020, https://arxiv.org/abs/2002.09815

    Examples::

        >>> # ImageClassifier takes a single input tensor of images Nx3x32x32,
        >>> # and returns an Nx10 tensor of class probabilities.
        >>> net = ImageClassifier()
        >>> x_val, y_val = torch.randn(200, 3, 32, 32), torch.randint(10, (200,))
        >>> ns = NeuronShapley(net, net.fc1)
        >>> # Shapley value of each fc1 neuron for the accuracy on (x_val, y_val),
        >>> # sampling until the 5 most valuable neurons are identified.
        >>> phi = ns.attribute(x_val, target=y_val, top_k=5, seed=0)
        >>> phi.shape  # the shape of fc1's output without the batch dimension
        torch.Size([120])
        >>> # the same for the mean logit of class 3 over x_val
        >>> phi3 = ns.attribute(x_val, target=3, top_k=5, seed=0)
    """

    _grouping: str = "neuron"

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: Union[nn.Module, str, Sequence[Union[nn.Module, str]]],
        device_ids: Optional[List[int]] = None,
        *,
        internal_batch_size: Optional[int] = None,
        cache_activations: bool = True,
    ) -> None:
        r"""
        Args:

            forward_func (Callable): The model or a forward function of it (such
                        as ``model.forward``). When it is an ``nn.Module`` (or a
                        bound method of one) the model is evaluated in ``eval``
                        mode without gradients and its modules' ``training``
                        flags are restored afterwards. TorchScript modules
                        (``torch.jit.trace`` or ``torch.jit.script``) are refused:
                        units are removed by forward hooks, which they do not run.
            layer (torch.nn.Module, str or list): Layer(s) whose
                        output units are the players (their input units with
                        ``attribute_to_layer_input``), as modules or by their
                        qualified names in the model (``"layer1.0.conv1"``, as
                        in ``model.named_modules()``). A list gives one joint
                        game over all their units. A layer whose output is a
                        tuple of tensors contributes the units of every tensor.
            device_ids (list[int], optional): Device ID list, necessary only if
                        ``forward_func`` applies a DataParallel model. This allows
                        the removal hooks to find the rows of the batch that each
                        replica received. If ``forward_func`` is given as the
                        DataParallel model itself (or otherwise has a
                        ``device_ids`` attribute with the device ID list), then it
                        is not necessary to provide this argument.
            internal_batch_size (int, optional): Examples per forward pass (times
                        the coalitions evaluated together), as Captum's
                        ``internal_batch_size``. Default: None (all the examples
                        a coalition is evaluated on)
            cache_activations (bool, optional): Compute the part of the model
                        that runs before the first ablated layer once and replay
                        it for every coalition (see
                        :mod:`captum_neuron_shapley.prefix`). Costs the memory of
                        those activations for the evaluation inputs. Not used
                        with a DataParallel model. Default: True
        """
        layer = resolve_layers(module_of(forward_func), layer)  # names -> modules
        layers = cast(
            List[nn.Module],
            list(layer) if isinstance(layer, (list, tuple)) else [layer],
        )
        if not layers:
            raise ValueError("`layer` must be a module or a non-empty list of them")
        model = module_of(forward_func)
        check_not_scripted(model, layers)
        self._names: List[str] = layer_names(forward_func, layers, model)
        LayerAttribution.__init__(
            self,
            forward_func,
            layer if isinstance(layer, nn.Module) else layers,
            device_ids,
        )
        PerturbationAttribution.__init__(self, forward_func)
        self._layers: List[nn.Module] = layers
        self._single: bool = not isinstance(layer, (list, tuple))
        self._model: Optional[nn.Module] = model
        self.internal_batch_size = internal_batch_size
        self.cache_activations = cache_activations
        self._check_execution()

    def _check_execution(self) -> None:
        check_positive_int("internal_batch_size", self.internal_batch_size)
        if not isinstance(self.cache_activations, bool):
            raise ValueError(
                "`cache_activations` must be a bool, got "
                f"{type(self.cache_activations).__name__}"
            )

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def has_convergence_delta(self) -> bool:
        return True

    @overload
    def attribute(
        self,
        inputs: Inputs,
        layer_baselines: LayerBaselines = None,
        target: Any = None,
        additional_forward_args: Any = None,
        layer_mask: LayerMasks = None,
        attribute_to_layer_input: bool = False,
        perturbations_per_eval: int = 1,
        *,
        metric: MetricFn = None,
        truncation: Union[None, str, float] = "auto",
        top_k: Optional[int] = None,
        epsilon: Optional[float] = None,
        refine: Refine = None,
        max_evaluations: Optional[int] = None,
        max_permutations: Optional[int] = None,
        max_time: Optional[float] = None,
        sampler: SamplerSpec = None,
        stop: Stop = None,
        seed: Optional[int] = None,
        show_progress: bool = False,
        return_convergence_delta: Literal[False] = False,
        return_result: Literal[False] = False,
    ) -> LayerAttributions: ...

    @overload
    def attribute(
        self,
        inputs: Inputs,
        layer_baselines: LayerBaselines = None,
        target: Any = None,
        additional_forward_args: Any = None,
        layer_mask: LayerMasks = None,
        attribute_to_layer_input: bool = False,
        perturbations_per_eval: int = 1,
        *,
        metric: MetricFn = None,
        truncation: Union[None, str, float] = "auto",
        top_k: Optional[int] = None,
        epsilon: Optional[float] = None,
        refine: Refine = None,
        max_evaluations: Optional[int] = None,
        max_permutations: Optional[int] = None,
        max_time: Optional[float] = None,
        sampler: SamplerSpec = None,
        stop: Stop = None,
        seed: Optional[int] = None,
        show_progress: bool = False,
        return_convergence_delta: Literal[True],
        return_result: Literal[False] = False,
    ) -> Tuple[LayerAttributions, Tensor]: ...

    @overload
    def attribute(
        self,
        inputs: Inputs,
        layer_baselines: LayerBaselines = None,
        target: Any = None,
        additional_forward_args: Any = None,
        layer_mask: LayerMasks = None,
        attribute_to_layer_input: bool = False,
        perturbations_per_eval: int = 1,
        *,
        metric: MetricFn = None,
        truncation: Union[None, str, float] = "auto",
        top_k: Optional[int] = None,
        epsilon: Optional[float] = None,
        refine: Refine = None,
        max_evaluations: Optional[int] = None,
        max_permutations: Optional[int] = None,
        max_time: Optional[float] = None,
        sampler: SamplerSpec = None,
        stop: Stop = None,
        seed: Optional[int] = None,
        show_progress: bool = False,
        return_convergence_delta: bool = False,
        return_result: Literal[True],
    ) -> ShapleyResult: ...

    @accepts_moved_keywords
    @log_usage()
    def attribute(
        self,
        inputs: Inputs,
        layer_baselines: LayerBaselines = None,
        target: Any = None,
        additional_forward_args: Any = None,
        layer_mask: LayerMasks = None,
        attribute_to_layer_input: bool = False,
        perturbations_per_eval: int = 1,
        *,
        metric: MetricFn = None,
        truncation: Union[None, str, float] = "auto",
        top_k: Optional[int] = None,
        epsilon: Optional[float] = None,
        refine: Refine = None,
        max_evaluations: Optional[int] = None,
        max_permutations: Optional[int] = None,
        max_time: Optional[float] = None,
        sampler: SamplerSpec = None,
        stop: Stop = None,
        seed: Optional[int] = None,
        show_progress: bool = False,
        return_convergence_delta: bool = False,
        return_result: bool = False,
    ) -> Union[LayerAttributions, Tuple[LayerAttributions, Tensor], ShapleyResult]:
        r"""
        Args:

            inputs (Tensor, tuple[Tensor, ...] or DataLoader): The evaluation
                        set, examples along dimension 0 (the metric is computed
                        over all of them). A tuple holds several input tensors
                        of the model, as in Captum. A DataLoader is read batch
                        by batch, never held whole
                        (:mod:`~captum_neuron_shapley.streaming`); its batches
                        are ``(inputs..., target)`` when ``target`` is None.
            layer_baselines (scalar, Tensor, str or tuple, optional): The value
                        a removed unit is replaced with: ``"zero"``, ``"mean"``
                        (the unit's mean over ``inputs``, averaged within the
                        unit), a number or a tensor broadcastable to the layer
                        tensor without its batch dimension (or with a leading
                        1), for every layer, or a tuple with one entry per layer
                        (as in Captum's ``LayerFeatureAblation``). For a single
                        layer with several tensors a tuple has one entry per
                        tensor; in a list of layers, the entry of such a layer
                        may be such a tuple.
                        Default: ``"mean"`` for FilterShapley (each removed
                        filter emits its channel mean), ``"zero"`` for
                        NeuronShapley.
            target (int, tuple, Tensor, list or Any, optional): What the metric
                        compares the outputs with. Without ``metric``, Captum's
                        target forms have a dataset-level meaning
                        (:func:`~captum_neuron_shapley.metrics.default_metric`):
                        per-example labels (a tensor or a list of ints) score
                        the accuracy over ``inputs``; an int or tuple of ints,
                        or a list of per-example tuples, the mean of the indexed
                        output; None the mean output (one value per example).
                        With ``metric``, ``target`` is passed to it as it is;
                        per-example targets follow the examples into batches.
                        Default: None
            additional_forward_args (Any, optional): Arguments passed to the
                        model after the inputs, as in Captum. A tensor argument
                        must have one entry per example along dimension 0; it
                        follows the examples (per-chain batches,
                        ``internal_batch_size``) and is repeated for the
                        coalitions evaluated together. Other arguments are passed
                        as they are. With a DataLoader, a tensor argument covers
                        its dataset, in the dataset's order.
                        Default: None
            layer_mask (Tensor or tuple[Tensor, ...], optional): NeuronShapley
                        only: integer tensor broadcastable to the layer tensor
                        (a leading batch dimension of 1 is allowed) grouping its
                        elements into units, as Captum's ``LayerFeatureAblation``
                        groups features; a tuple as for ``layer_baselines``.
                        Each element of a unit gets the unit's value.
                        Default: None (a unit per element)
            attribute_to_layer_input (bool, optional): The units are the elements
                        of the layer's input(s) (every positional input tensor of
                        the layer) instead of its output(s), removed by a forward
                        pre-hook. Default: False
            perturbations_per_eval (int, optional): Coalitions evaluated in one
                        forward pass (the batch is ``perturbations_per_eval``
                        copies of the examples, or of ``internal_batch_size`` of
                        them). Default: 1
            metric (Callable, optional): ``metric(outputs, target) -> float``,
                        higher is better; ``outputs`` are the model outputs for
                        the evaluation examples. Default: chosen by ``target``
                        (see there). See :mod:`captum_neuron_shapley.metrics` for
                        recall, subgroup accuracy and negative cross-entropy,
                        which also score many coalitions at once.
            truncation (float, str or None, optional): A chain stops once the
                        metric falls to this value and the remaining marginals
                        count as 0. ``"auto"``: ``V(none) + 0.05 * (V(all) -
                        V(none))``, i.e. 5% of the way from the fully ablated
                        model to the intact one, or no truncation when removing
                        every unit does not lower the metric. ``None`` disables
                        truncation (unbiased; efficiency holds). Samplers that do
                        not walk chains ignore it. Default: ``"auto"``
            top_k (int, optional): Stop once the ``top_k`` most valuable units
                        are separated from the rest, up to ``epsilon``
                        (:class:`~captum_neuron_shapley.stopping.TopKSeparated`).
                        None: estimate every unit until each half-width is at
                        most ``epsilon``
                        (:class:`~captum_neuron_shapley.stopping.HalfWidth`) or a
                        budget ends. Default: None
            epsilon (float, optional): Tolerance of that rule, in units of the
                        metric. The result's ``boundary_crowding()`` tells how
                        many units lie within ``epsilon`` of the top-k boundary.
                        Default: ``0.01 * |V(all) - V(none)|``, one percent of
                        what removing every unit changes (0.01 if that is 0)
            refine (str or GreedyRefine, optional): ``"greedy"`` (or a
                        :class:`~captum_neuron_shapley.refine.GreedyRefine` with
                        its pool and beam): after sampling, answer the set
                        question "which ``top_k`` units hurt the metric most when
                        removed together" by a greedy search on the same game
                        (same metric, data and baselines) over the highest-valued
                        units; the result's ``removal_set`` and ``removal_curve``
                        hold the answer. Needs ``top_k``; costs about ``top_k``
                        times the pool (``6 * top_k``) in evaluations, counted in
                        ``n_evaluations`` (with ``torch.distributed``, every rank
                        runs the same search; it is counted once).
                        Default: None (values only)
            max_evaluations (int, optional): Budget in coalitions evaluated.
                        Default: None
            max_permutations (int, optional): Budget in permutation chains.
                        Default: None
            max_time (float, optional): Budget in seconds, counting the game's
                        setup; checked between forward passes (chains it cuts
                        short are dropped). A ``refine`` search runs after it.
                        Default: None
            sampler (str or Sampler, optional): How marginal contributions
                        are sampled: ``"chains"`` or a
                        :class:`~captum_neuron_shapley.sampler.PermutationSampler`
                        (truncated permutation chains stratified by position, the
                        stopping rule restricting them to undecided units; its
                        arguments set strata, antithetic pairs, per-chain batches
                        of examples and chains walked together), or ``"msr"`` or
                        an :class:`~captum_neuron_shapley.msr.MSRSampler`
                        (maximum sample reuse: random coalitions stratified by
                        size, each giving a regression-adjusted sample of every
                        unit's untruncated value; it wins where units are many,
                        their values small and close and their marginals noisy).
                        Default: ``PermutationSampler()``
            stop (StoppingRule or Bound, optional): More stopping rules, combined
                        with the ones above by ``|``: for example
                        ``MaxTime(600) | Checkpoint("run.pt")`` (resume from and
                        save to a file) or ``Callback(fn)`` (called after every
                        round; True stops), or an interval rule of its own
                        (``TopKSeparated(10, bound=StrictBound())``). A
                        :class:`~captum_neuron_shapley.bounds.Bound` alone sets
                        the confidence bound of the ``top_k``/``epsilon`` rule:
                        ``AnytimeBound()`` (the default; its intervals hold for
                        all units at once at the bandit's stopping time),
                        ``FixedBound()``, ``StrictBound()`` or ``PaperBound()``
                        (the original code's settings). See
                        :mod:`captum_neuron_shapley.stopping`. Default: None
            seed (int, optional): Seed of a private generator; the same seed
                        gives the same result, and the global RNG state is never
                        touched. Default: None (a fresh seed)
            show_progress (bool, optional): Show a progress bar (Captum's
                        helper) over the binding budget: seconds with
                        ``max_time``, else evaluations with ``max_evaluations``,
                        else the units decided so far. Default: False
            return_convergence_delta (bool, optional): Also return the efficiency
                        gap ``V(all) - V(none) - sum(values)`` (see
                        :meth:`compute_convergence_delta`). Default: False
            return_result (bool, optional): Return a :class:`ShapleyResult`
                        instead of tensors (float64 values, standard errors,
                        intervals, counts; its ``convergence_delta`` holds the
                        efficiency gap). Default: False

        Returns:
            *Tensor* or *tuple[Tensor, ...]* of **attributions**, 2-element tuple
            of **attributions**, **delta**, or a :class:`ShapleyResult`:

            - **attributions** (*Tensor* or *tuple[Tensor, ...]*):
              The estimated Shapley value of every unit, in the dtype
              of the layer's tensor (on the CPU). NeuronShapley: the
              layer tensor's shape without the batch dimension, each
              element carrying its unit's value; FilterShapley: shape
              ``(C,)``, one value per channel. A layer with several
              tensors gives a tuple with one per tensor; a list of
              layers gives a tuple with one entry per layer.
            - **delta** (*Tensor*, returned if ``return_convergence_delta``):
              The efficiency gap, a float64 scalar tensor (one number
              for the whole evaluation set).

        Examples::

            >>> net = ImageClassifier()
            >>> ns = NeuronShapley(net, net.fc1)
            >>> # Shapley value of each fc1 neuron for accuracy on (x_val, y_val),
            >>> # sampling until the 5 most valuable neurons are identified.
            >>> phi = ns.attribute(x_val, target=y_val, top_k=5, seed=0)
            >>> # the same, with the estimate's uncertainty
            >>> res = ns.attribute(x_val, target=y_val, top_k=5, seed=0,
            >>>                    return_result=True)
            >>> res.top_units(5)  # (layer name, unit id, value)
        """
        started = time.monotonic()
        refiner = make_refine(refine)
        sampler_cfg = make_sampler(sampler)
        rule, top_k = compose_stop(
            stop, top_k, epsilon, max_evaluations, max_permutations, max_time
        )
        if refiner is not None:
            refiner.check(top_k)
        for name, flag in (
            ("show_progress", show_progress),
            ("return_convergence_delta", return_convergence_delta),
            ("return_result", return_result),
        ):
            if not isinstance(flag, bool):
                raise ValueError(f"`{name}` must be a bool, got {flag!r}")
        with model_guard(self.forward_func):
            game = self.game(
                inputs,
                layer_baselines,
                target,
                additional_forward_args,
                layer_mask,
                attribute_to_layer_input,
                perturbations_per_eval,
                metric=metric,
            )
            names = {id(m): n for m, n in zip(self._layers, self._names)}
            result = estimate(
                game,
                sampler_cfg,
                rule,
                top_k,
                refiner,
                truncation,
                seed,
                show_progress,
                started,
                (names, self._single),
            )
        if return_result:
            return result
        values = in_layer_dtype(result.values, iter([u.dtype for u in game.units]))
        if return_convergence_delta:
            gap = torch.tensor(result.convergence_delta, dtype=torch.float64)
            return values, gap
        return values

    def estimate_cost(
        self,
        inputs: Inputs,
        *args: Any,
        pilot_chains: int = 8,
        pilot_time: float = 30.0,
        **kwargs: Any,
    ) -> CostEstimate:
        r"""What a budget buys on this game: runs a short pilot of
        :meth:`attribute` (every unit sampled, until ``pilot_chains`` chains or
        ``pilot_time`` seconds) and projects from it. The pilot's chain cost
        is measured, or, when no chain finishes in time, projected from the
        most advanced one.

        Args:
            inputs (Tensor, tuple[Tensor, ...] or DataLoader): As for
                        :meth:`attribute`.
            *args: Captum's shared arguments of :meth:`attribute` after
                        ``inputs``, positionally.
            **kwargs: Keywords of :meth:`attribute` that define the game and
                        the sampler; budgets, ``top_k``, ``refine``, ``stop``
                        and the return options do not apply.
            pilot_chains (int, optional): Chains the pilot runs. Default: 8
            pilot_time (float, optional): Seconds the pilot runs at most
                        (setup included). Default: 30.0

        Returns:
            :class:`~captum_neuron_shapley.cost.CostEstimate`: seconds per
            evaluation, evaluations per chain, and for a budget
            (``.budget(max_time=600)``) the chains it buys and the typical
            standard error of a value; printing it shows a table.

        Examples::

            >>> est = fs.estimate_cost(x_val, target=y_val)
            >>> print(est)  # chains, evaluations, time and stderr
            >>> est.budget(max_time=600).chains
        """
        return pilot(self, inputs, args, kwargs, pilot_chains, pilot_time)

    @accepts_moved_keywords
    @log_usage()
    def compute_convergence_delta(
        self,
        attributions: LayerAttributions,
        inputs: Inputs,
        layer_baselines: LayerBaselines = None,
        target: Any = None,
        additional_forward_args: Any = None,
        layer_mask: LayerMasks = None,
        attribute_to_layer_input: bool = False,
        *,
        metric: MetricFn = None,
    ) -> Tensor:
        r"""Captum's completeness check, for a game: the efficiency gap
        ``V(all) - V(none) - sum(values)``, where ``V(all)`` is the metric of
        the intact model on ``inputs``, ``V(none)`` the metric with every unit
        removed, and ``values`` the unit values in ``attributions``. Exact
        Shapley values sum to ``V(all) - V(none)`` (efficiency); estimates do up
        to sampling error, and truncated chains leave out their tails. This is
        the ``delta`` that ``attribute`` returns with
        ``return_convergence_delta=True`` (costs two model evaluations over
        ``inputs``).

        Args:

            attributions (Tensor or tuple): What :meth:`attribute` returned for
                        the same layers and arguments (any dtype). For
                        NeuronShapley each unit counts once: its value is the
                        mean over its elements (with a ``layer_mask``, all the
                        elements of a unit carry its value).
            inputs (Tensor, tuple[Tensor, ...] or DataLoader): As in
                        :meth:`attribute`; this and the arguments below define
                        the game.
            layer_baselines (scalar, Tensor, str or tuple, optional): As in
                        :meth:`attribute`.
            target (Any, optional): As in :meth:`attribute`.
            additional_forward_args (Any, optional): As in :meth:`attribute`.
            layer_mask (Tensor or tuple[Tensor, ...], optional): As in
                        :meth:`attribute`.
            attribute_to_layer_input (bool, optional): As in :meth:`attribute`.
            metric (Callable, optional): As in :meth:`attribute`.

        Returns:
            *Tensor* of **delta**: a float64 scalar tensor (one number for the
            whole evaluation set).

        Examples::

            >>> phi = ns.attribute(x_val, target=y_val, truncation=None, seed=0)
            >>> ns.compute_convergence_delta(phi, x_val, target=y_val)
            tensor(0.0012, dtype=torch.float64)
        """
        game = self.game(
            inputs,
            layer_baselines,
            target,
            additional_forward_args,
            layer_mask,
            attribute_to_layer_input,
            metric=metric,
            cache_activations=False,
        )
        total = sum(
            float(unit_values(u, a).sum())
            for u, a in zip(game.units, flat_attributions(attributions, game.units))
        )
        with model_guard(self.forward_func):
            v_all, v_none = game.full_value(), game.empty_value()
        return torch.tensor(v_all - v_none - total, dtype=torch.float64)

    def game(
        self,
        inputs: Inputs,
        layer_baselines: LayerBaselines = None,
        target: Any = None,
        additional_forward_args: Any = None,
        layer_mask: LayerMasks = None,
        attribute_to_layer_input: bool = False,
        perturbations_per_eval: int = 1,
        *,
        metric: MetricFn = None,
        cache_activations: Optional[bool] = None,
    ) -> UnitGame:
        r"""The :class:`UnitGame` that :meth:`attribute` estimates, for exact
        enumeration, other estimators (such as Captum's ``ShapleyValueSampling``
        through a mask wrapper) and removal experiments. Arguments as in
        :meth:`attribute`; ``cache_activations`` overrides the constructor's.

        Examples::

            >>> game = FilterShapley(model, model.conv1).game(x_val, target=y_val)
            >>> keep = torch.ones(1, game.n_units, dtype=torch.bool)
            >>> keep[0, 3] = False  # remove filter 3
            >>> game.value(keep)
        """
        return build_game(
            self,
            inputs,
            layer_baselines,
            target,
            additional_forward_args,
            layer_mask,
            attribute_to_layer_input,
            perturbations_per_eval,
            metric,
            self.cache_activations if cache_activations is None else cache_activations,
        )

    def _units(
        self,
        evals: List[LayerEval],
        layer_baselines: Any,
        layer_mask: Any,
        layer_input: bool,
    ) -> List[LayerUnits]:
        r"""The players of every layer tensor (subclasses change the grouping)."""
        return layer_units(
            self._layers,
            self._names,
            self._single,
            self._grouping,
            evals,
            layer_baselines,
            layer_mask,
            layer_input,
        )


class FilterShapley(NeuronShapley):
    r"""Neuron Shapley with one player per channel (convolutional filter).

    The same method as :class:`NeuronShapley`, with the units of each layer
    being its output channels (dimension 1 of ``(N, C, L)``, ``(N, C, H, W)`` or
    ``(N, C, D, H, W)`` outputs; of each tensor, for a layer with several). A
    removed filter emits, by default, its mean activation over the evaluation
    inputs (the per-channel constant of the original paper, which removed a
    filter by zeroing its weights and batch-norm moving mean). ``layer_mask`` is
    not supported. The attributions of a layer have shape ``(C,)``.

    The constructor takes the arguments of :class:`NeuronShapley`; so does
    ``attribute``.

    Examples::

        >>> # ImageClassifier takes a single input tensor of images Nx3x32x32,
        >>> # and returns an Nx10 tensor of class probabilities. It contains
        >>> # the conv layers conv1 (6 filters) and conv2 (16 filters).
        >>> net = ImageClassifier()
        >>> fs = FilterShapley(net, [net.conv1, net.conv2])
        >>> # One joint game over the 22 filters: their Shapley values for the
        >>> # accuracy on (x_val, y_val), until the top 10 are separated.
        >>> phi1, phi2 = fs.attribute(x_val, target=y_val, top_k=10, seed=0)
        >>> phi1.shape  # one value per filter of conv1
        torch.Size([6])
        >>> # the filters whose joint removal hurts the accuracy most
        >>> res = fs.attribute(x_val, target=y_val, top_k=10, seed=0,
        >>>                    refine="greedy", return_result=True)
        >>> res.removal_set
    """

    _grouping: str = "filter"
