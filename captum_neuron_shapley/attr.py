r"""Captum attribution class :class:`NeuronShapley` (:class:`FilterShapley` and
:class:`HeadShapley` are its subclasses with other groupings of the units).

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
    attr_layers,
    build_game,
    check_execution,
    efficiency_gap,
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
)
from ._deprecated import accepts_moved_keywords
from ._run import compose_stop, estimate
from .cost import CostEstimate, pilot
from .game import LayerEval, model_guard, UnitGame
from .refine import make_refine
from .removal import LayerUnits
from .result import ShapleyResult
from .sampler import make_sampler

__all__ = ["NeuronShapley"]


class NeuronShapley(LayerAttribution, PerturbationAttribution):
    r"""Neuron Shapley (Ghorbani & Zou, NeurIPS 2020): the Shapley value of each
    unit of one or more layers for a *dataset-level* metric of the model, such as
    its accuracy on an evaluation set.

    Unlike Captum's other layer methods, it attributes one number computed over
    the whole evaluation set (``inputs``): the attributions have no batch
    dimension. The players are the elements of the layer output (or units of a
    ``layer_mask``); all units of all given layers play one joint game. ``V(S)``
    is the metric of the model whose units outside ``S`` are replaced by a
    baseline (by forward hooks; the weights are never touched), estimated by
    truncated permutation chains and a bandit that stops once the top ``k`` are
    separated.

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
                        as ``model.forward``), run in ``eval`` mode without
                        gradients (the ``training`` flags are restored after).
                        TorchScript modules are refused: they run no forward
                        hooks, which remove the units.
            layer (torch.nn.Module, str or list): Layer(s) whose output units
                        (input units with ``attribute_to_layer_input``) are the
                        players, as modules or qualified names
                        (``"layer1.0.conv1"``); a list is one joint game. A
                        layer with a tuple of tensors gives the units of each.
            device_ids (list[int], optional): Device ID list, necessary only if
                        ``forward_func`` applies a DataParallel model (and is not
                        the DataParallel model itself, or has no ``device_ids``
                        attribute): the removal hooks find each replica's rows.
            internal_batch_size (int, optional): Examples per forward pass (times
                        the coalitions evaluated together). Default: None
            cache_activations (bool, optional): Compute the part of the model
                        that runs before the first ablated layer once and replay
                        it for every coalition (see
                        :mod:`captum_neuron_shapley.prefix`). Costs the memory of
                        those activations for the evaluation inputs. Not used
                        with a DataParallel model. Default: True
        """
        layers, model, names = attr_layers(forward_func, layer)
        self._names: List[str] = names
        single = not isinstance(layer, (list, tuple))
        LayerAttribution.__init__(
            self, forward_func, layers[0] if single else layers, device_ids
        )
        PerturbationAttribution.__init__(self, forward_func)
        self._layers: List[nn.Module] = layers
        self._single: bool = single
        self._model: Optional[nn.Module] = model
        self.internal_batch_size = internal_batch_size
        self.cache_activations = cache_activations
        self._check_execution()

    def _check_execution(self) -> None:
        check_execution(self.internal_batch_size, self.cache_activations)

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
                        (or per tensor, for a layer with several tensors), as
                        in Captum's ``LayerFeatureAblation``. Default: ``"mean"``
                        for FilterShapley, ``"zero"`` for NeuronShapley.
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
                        higher is better (see
                        :mod:`~captum_neuron_shapley.metrics`). Default: chosen
                        by ``target``
            truncation (float, str or None, optional): A chain stops once the
                        metric falls to this value (its remaining marginals count
                        as 0). ``"auto"``: ``V(none) + 0.05 * (V(all) - V(none))``
                        (none when removing every unit does not lower the
                        metric). ``None``: no truncation (the Shapley values
                        themselves). Default: ``"auto"``
            top_k (int, optional): Stop once the ``top_k`` most valuable units
                        are separated from the rest, up to ``epsilon``
                        (:class:`~captum_neuron_shapley.stopping.TopKSeparated`).
                        None: estimate every unit until each half-width is at
                        most ``epsilon``
                        (:class:`~captum_neuron_shapley.stopping.HalfWidth`) or a
                        budget ends. Default: None
            epsilon (float, optional): Tolerance of that rule, in units of the
                        metric. Default: ``0.01 * |V(all) - V(none)|`` (0.01 if
                        that is 0)
            refine (str or GreedyRefine, optional): ``"greedy"`` (or a
                        :class:`~captum_neuron_shapley.refine.GreedyRefine`):
                        after sampling, a greedy search on the same game for
                        the ``top_k`` units whose joint removal hurts most, among
                        the highest-valued units (``result.removal_set``); costs
                        about ``6 * top_k ** 2`` evaluations, counted in
                        ``n_evaluations``. Default: None (values only)
            max_evaluations (int, optional): Budget in coalitions evaluated.
                        Default: None
            max_permutations (int, optional): Budget in permutation chains.
                        Default: None
            max_time (float, optional): Budget in seconds, counting the game's
                        setup; checked between forward passes (chains it cuts
                        short are dropped). A ``refine`` search runs after it.
                        Default: None
            sampler (str or Sampler, optional): How marginals are sampled:
                        ``"chains"`` or a
                        :class:`~captum_neuron_shapley.sampler.PermutationSampler`
                        (truncated permutation chains, stratified by position,
                        each on a random batch of examples), or ``"msr"`` or an
                        :class:`~captum_neuron_shapley.msr.MSRSampler` (maximum
                        sample reuse). Default: ``PermutationSampler()``
            stop (StoppingRule or Bound, optional): More rules, combined with
                        the ones above by ``|``, such as ``MaxTime(600) |
                        Checkpoint("run.pt")`` or ``Callback(fn)``
                        (:mod:`~captum_neuron_shapley.stopping`); or a
                        :class:`~captum_neuron_shapley.bounds.Bound` for the
                        ``top_k``/``epsilon`` rule (default ``AnytimeBound()``,
                        valid at the bandit's stopping time). Default: None
            seed (int, optional): Seed of a private generator; the same seed
                        gives the same result, and the global RNG state is never
                        touched. Default: None (a fresh seed)
            show_progress (bool, optional): A progress bar over the budget
                        that binds (or the units decided). Default: False
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
        r"""What a budget buys on this game, projected from a short pilot of
        :meth:`attribute` (every unit sampled, until ``pilot_chains`` chains or
        ``pilot_time`` seconds).

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
            :class:`~captum_neuron_shapley.cost.CostEstimate` (print it for a
            table; ``.budget(max_time=600)`` for one budget).

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
        return efficiency_gap(game, attributions)

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
        return layer_units(self, evals, layer_baselines, layer_mask, layer_input)
