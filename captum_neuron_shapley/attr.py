r"""Captum attribution classes: :class:`NeuronShapley` and :class:`FilterShapley`."""

from __future__ import annotations

import time
import warnings
from typing import (
    Any,
    Callable,
    cast,
    Dict,
    Iterator,
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
from torch.utils.data import DataLoader

from ._inputs import (
    check_not_scripted,
    check_positive_int,
    format_eval_data,
    layer_names,
)
from .bandit import BoundConfig, TopKRule
from .distributed import Collective, rank_seed
from .estimator import Budget, fingerprint, TMABEstimator
from .game import (
    LayerEval,
    model_guard,
    module_of,
    reference_pass,
    subset_args,
    UnitGame,
)
from .metrics import default_metric, MeanOutput, metric_bounds
from .prefix import trace_prefix
from .refine import greedy_removal
from .removal import (
    filter_groups,
    LayerUnits,
    neuron_groups,
    per_tensor,
    resolve_baseline,
)
from .result import LayerLayout, ShapleyResult
from .sampler import make_sampler, resolve_strata, SAMPLERS, truncation_threshold

__all__ = ["NeuronShapley", "FilterShapley"]

PAPER_PATIENCE = 6
#: Default ``epsilon``: this fraction of ``|V(all) - V(none)|``.
DEFAULT_EPSILON = 0.01

Baseline = Union[None, str, float, int, Tensor]
#: ``layer_baselines``: one entry for every tensor, or a tuple (see ``attribute``).
LayerBaselines = Union[Baseline, Tuple[Any, ...]]
#: ``layer_mask``: one mask for every tensor, or a tuple (see ``attribute``).
LayerMasks = Union[None, Tensor, Tuple[Any, ...]]
#: What ``attribute`` returns: a tensor per layer tensor, tuples as the layers go.
LayerAttributions = Union[
    Tensor, Tuple[Tensor, ...], Tuple[Union[Tensor, Tuple[Tensor, ...]], ...]
]


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
        layer: Union[nn.Module, Sequence[nn.Module]],
        device_ids: Optional[List[int]] = None,
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
            layer (torch.nn.Module or list[torch.nn.Module]): Layer(s) whose
                        output units are the players (their input units with
                        ``attribute_to_layer_input``). A list gives one joint
                        game over all their units. A layer whose output is a
                        tuple of tensors contributes the units of every tensor.
            device_ids (list[int], optional): Device ID list, necessary only if
                        ``forward_func`` applies a DataParallel model. This allows
                        the removal hooks to find the rows of the batch that each
                        replica received. If ``forward_func`` is given as the
                        DataParallel model itself (or otherwise has a
                        ``device_ids`` attribute with the device ID list), then it
                        is not necessary to provide this argument.
        """
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

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def has_convergence_delta(self) -> bool:
        return True

    @overload
    def attribute(
        self,
        inputs: Union[Tensor, Tuple[Tensor, ...], DataLoader],
        layer_baselines: LayerBaselines = None,
        target: Any = None,
        additional_forward_args: Any = None,
        layer_mask: LayerMasks = None,
        attribute_to_layer_input: bool = False,
        perturbations_per_eval: int = 1,
        *,
        metric: Optional[Callable[[Tensor, Any], float]] = None,
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
        sampler: str = "chains",
        internal_batch_size: Optional[int] = None,
        cache_activations: bool = True,
        seed: Optional[int] = None,
        checkpoint: Optional[str] = None,
        checkpoint_interval: float = 60.0,
        show_progress: bool = False,
        callback: Optional[Callable[[TMABEstimator], Optional[bool]]] = None,
        return_convergence_delta: Literal[False] = False,
        return_result: Literal[False] = False,
        batch_size: Optional[int] = None,
    ) -> LayerAttributions: ...

    @overload
    def attribute(
        self,
        inputs: Union[Tensor, Tuple[Tensor, ...], DataLoader],
        layer_baselines: LayerBaselines = None,
        target: Any = None,
        additional_forward_args: Any = None,
        layer_mask: LayerMasks = None,
        attribute_to_layer_input: bool = False,
        perturbations_per_eval: int = 1,
        *,
        metric: Optional[Callable[[Tensor, Any], float]] = None,
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
        sampler: str = "chains",
        internal_batch_size: Optional[int] = None,
        cache_activations: bool = True,
        seed: Optional[int] = None,
        checkpoint: Optional[str] = None,
        checkpoint_interval: float = 60.0,
        show_progress: bool = False,
        callback: Optional[Callable[[TMABEstimator], Optional[bool]]] = None,
        return_convergence_delta: Literal[True],
        return_result: Literal[False] = False,
        batch_size: Optional[int] = None,
    ) -> Tuple[LayerAttributions, Tensor]: ...

    @overload
    def attribute(
        self,
        inputs: Union[Tensor, Tuple[Tensor, ...], DataLoader],
        layer_baselines: LayerBaselines = None,
        target: Any = None,
        additional_forward_args: Any = None,
        layer_mask: LayerMasks = None,
        attribute_to_layer_input: bool = False,
        perturbations_per_eval: int = 1,
        *,
        metric: Optional[Callable[[Tensor, Any], float]] = None,
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
        sampler: str = "chains",
        internal_batch_size: Optional[int] = None,
        cache_activations: bool = True,
        seed: Optional[int] = None,
        checkpoint: Optional[str] = None,
        checkpoint_interval: float = 60.0,
        show_progress: bool = False,
        callback: Optional[Callable[[TMABEstimator], Optional[bool]]] = None,
        return_convergence_delta: bool = False,
        return_result: Literal[True],
        batch_size: Optional[int] = None,
    ) -> ShapleyResult: ...

    @log_usage()
    def attribute(
        self,
        inputs: Union[Tensor, Tuple[Tensor, ...], DataLoader],
        layer_baselines: LayerBaselines = None,
        target: Any = None,
        additional_forward_args: Any = None,
        layer_mask: LayerMasks = None,
        attribute_to_layer_input: bool = False,
        perturbations_per_eval: int = 1,
        *,
        metric: Optional[Callable[[Tensor, Any], float]] = None,
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
        sampler: str = "chains",
        internal_batch_size: Optional[int] = None,
        cache_activations: bool = True,
        seed: Optional[int] = None,
        checkpoint: Optional[str] = None,
        checkpoint_interval: float = 60.0,
        show_progress: bool = False,
        callback: Optional[Callable[[TMABEstimator], Optional[bool]]] = None,
        return_convergence_delta: bool = False,
        return_result: bool = False,
        batch_size: Optional[int] = None,
    ) -> Union[LayerAttributions, Tuple[LayerAttributions, Tensor], ShapleyResult]:
        r"""
        Args:

            inputs (Tensor, tuple[Tensor, ...] or DataLoader): The evaluation
                        set, examples along dimension 0 (the metric is computed
                        over all of them). A tuple holds several input tensors
                        of the model, as in Captum. A DataLoader is read once;
                        its batches are ``(inputs..., target)`` when ``target``
                        is None (all elements are inputs otherwise).
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
                        compares the outputs with. Without ``metric``, each of
                        Captum's target forms has a dataset-level meaning (see
                        :func:`~captum_neuron_shapley.metrics.default_metric`):

                        - a tensor with one entry per example, or a list of
                          ints with one per example: class labels; the metric
                          is the accuracy over ``inputs``;
                        - an int or a tuple of ints (the same output index for
                          every example): the mean of that output over
                          ``inputs``
                          (:class:`~captum_neuron_shapley.metrics.MeanOutput`);
                        - a list of tuples, one per example: the mean of each
                          example's indexed output;
                        - None: the mean output, which must then be a single
                          value per example.

                        With ``metric``, ``target`` is passed to it as it is
                        (any object). Per-example targets (a tensor with one
                        entry per example, a list with one entry per example, a
                        tuple of such tensors) follow the examples when
                        ``subset_size`` samples them.
                        Default: None
            additional_forward_args (Any, optional): Arguments passed to the
                        model after the inputs, as in Captum. A tensor argument
                        must have one entry per example along dimension 0; it
                        follows the examples (``subset_size``,
                        ``internal_batch_size``) and is repeated for the
                        coalitions evaluated together. Other arguments are passed
                        as they are. With a DataLoader, a tensor argument covers
                        all the examples the loader yields, in order.
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
                        truncation (unbiased; efficiency holds).
                        Default: ``"auto"``
            top_k (int, optional): Stop once the ``top_k`` most valuable units
                        are separated from the rest (up to ``epsilon``). None:
                        estimate every unit until each half-width is at most
                        ``epsilon`` or a budget ends. Default: None
            refine (str, optional): ``"greedy"``: after sampling, answer the set
                        question "which ``top_k`` units hurt the metric most when
                        removed together" by a greedy search on the same game
                        (same metric, data and baselines) over the
                        ``refine_pool`` highest-valued units; the result's
                        ``removal_set`` and ``removal_curve`` hold the answer
                        (see :mod:`captum_neuron_shapley.refine`). Needs
                        ``top_k``; costs about ``top_k * refine_pool``
                        evaluations, counted in ``n_evaluations`` (with
                        ``torch.distributed``, every rank runs the same search;
                        it is counted once).
                        Default: None (values only)
            refine_pool (int, optional): Candidates of the greedy search: the
                        ``refine_pool`` highest-valued units.
                        Default: ``min(n_units, 6 * top_k)``
            refine_beam (int, optional): Partial sets the search keeps at each
                        step (1: plain greedy). Default: 1
            epsilon (float, optional): Tolerance of the stopping rule, in units
                        of the metric. The result's ``boundary_crowding()`` tells
                        how many units lie within ``epsilon`` of the top-k
                        boundary. Default: ``0.01 * |V(all) - V(none)|``, one
                        percent of what removing every unit changes (0.01 if
                        that is 0)
            max_evaluations (int, optional): Budget in coalitions evaluated.
                        Default: None
            max_permutations (int, optional): Budget in permutation chains.
                        Default: None
            max_time (float, optional): Budget in seconds, counting the game's
                        setup; checked between forward passes (chains it cuts
                        short are dropped). A ``refine`` search runs after it.
                        Default: None
            bound (str, optional): ``"anytime"``: an asymptotic confidence
                        sequence with a union bound over units, valid at the
                        bandit's own stopping time although it looks after every
                        round (see
                        :class:`~captum_neuron_shapley.bandit.BoundConfig`);
                        ``"fixed"``: the normal quantile of a fixed sample size
                        (narrower by about a fifth and faster to stop, but its
                        intervals at the stopping time miss more often than
                        ``delta``); ``"strict"``: empirical Bernstein with the
                        true range of a marginal and a union bound over units
                        (valid at every fixed sample size without asymptotics,
                        and far more conservative: expect thousands of chains on
                        a network with a hundred units); ``"paper"``: the
                        original code (empirical Bernstein with range 1,
                        ``delta=0.2`` per unit, and truncation only after 6
                        consecutive states below the threshold).
                        Default: ``"anytime"``
            delta (float, optional): Failure probability of the intervals.
                        Default: 0.05 (0.2 in paper mode)
            min_samples (int, optional): Samples a unit needs before it can leave
                        the active set. Default: for ``"anytime"`` and
                        ``"fixed"``, 20 chains' worth, i.e. 20 samples, 10
                        antithetic pairs or ``ceil(20 / strata)`` cycles, at
                        least 5 (with ``sampler="msr"``: 32 coalitions); 2
                        otherwise
            subset_size (int, optional): Evaluate each chain on this many
                        examples drawn at random (the same ones along the whole
                        chain). Default: None (all examples)
            antithetic (bool, optional): Pair each chain with its reversed order
                        (the pair's mean marginal is one sample). Default: False
            strata (int, optional): Draw chains in cycles of ``strata`` cyclic
                        shifts of one random removal order, so that over a cycle
                        each unit is removed once in every band of
                        ``n_units / strata`` positions; the cycle's mean marginal
                        is one sample. Unbiased (each chain is a uniformly random
                        order) and stratified by position, which removes the
                        variance between early, middle and truncated positions.
                        ``1``: independent chains. Default: ``4`` (or the number
                        of units, if fewer); ``1`` with ``antithetic``, which it
                        excludes, and with ``bound="paper"``
            chains_per_round (int, optional): Sets of chains (a cycle of
                        ``strata`` chains, an antithetic pair or one chain)
                        walked together, their states sharing forward passes
                        (useful on GPUs with a large ``perturbations_per_eval``;
                        unbiased, as every set is drawn independently).
                        Default: 1
            sampler (str, optional): How marginal contributions are sampled:
                        ``"chains"`` (truncated permutation chains, stratified by
                        position, the bandit restricting them to the undecided
                        units) or ``"msr"`` (maximum sample reuse: random
                        coalitions stratified by size, each giving a
                        regression-adjusted sample of *every* unit's Shapley
                        value; untruncated, so ``truncation``, ``strata``,
                        ``antithetic`` and ``subset_size`` do not apply, and
                        ``max_permutations`` counts coalitions; it wins where
                        units are many, their values small and close and their
                        marginals noisy, as on the benchmark's 128-neuron MLP; see
                        :class:`~captum_neuron_shapley.sampler.CoalitionSampler`).
                        Default: ``"chains"``
            internal_batch_size (int, optional): Examples per forward pass (times
                        the coalitions evaluated together), as Captum's
                        ``internal_batch_size``. Default: None (all examples)
            cache_activations (bool, optional): Compute the part of the model
                        that runs before the first ablated layer once and replay
                        it for every coalition (see
                        :mod:`captum_neuron_shapley.prefix`). Costs the memory of
                        those activations for all ``inputs``. Not used with a
                        DataParallel model. Default: True
            seed (int, optional): Seed of a private generator; the same seed
                        gives the same result, and the global RNG state is never
                        touched. Default: None (a fresh seed)
            checkpoint (str, optional): File to save the estimator's state to
                        (atomically, every ``checkpoint_interval`` seconds and at
                        the end) and to resume from if it exists. Default: None
            checkpoint_interval (float, optional): Seconds between checkpoint
                        saves. Default: 60.0
            show_progress (bool, optional): Show a progress bar over permutation
                        chains (Captum's progress helper). Default: False
            callback (Callable, optional): Called after every round with the
                        :class:`~captum_neuron_shapley.estimator.TMABEstimator`
                        (its ``stats.mean``, ``n_evaluations``...); returning True
                        stops the run. Default: None
            return_convergence_delta (bool, optional): Also return the efficiency
                        gap ``V(all) - V(none) - sum(values)`` (see
                        :meth:`compute_convergence_delta`). Default: False
            return_result (bool, optional): Return a :class:`ShapleyResult`
                        instead of tensors (float64 values, standard errors,
                        intervals, counts; its ``convergence_delta`` holds the
                        efficiency gap). Default: False
            batch_size (int, optional): Deprecated name of
                        ``internal_batch_size`` (a ``DeprecationWarning``).

        Returns:
            *Tensor* or *tuple[Tensor, ...]* of **attributions**, or a
            :class:`ShapleyResult`:
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
        internal_batch_size = _renamed_batch_size(internal_batch_size, batch_size)
        check_positive_int("top_k", top_k)
        check_positive_int("subset_size", subset_size)
        check_positive_int("chains_per_round", chains_per_round, False)
        if sampler not in SAMPLERS:
            raise ValueError(
                f"`sampler` must be one of {', '.join(map(repr, SAMPLERS))}, "
                f"got {sampler!r}"
            )
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
                layer_baselines,
                target,
                additional_forward_args,
                layer_mask,
                attribute_to_layer_input,
                perturbations_per_eval,
                metric=metric,
                internal_batch_size=internal_batch_size,
                cache_activations=cache_activations,
            )
            if top_k is not None and top_k >= game.n_units:
                raise ValueError(
                    f"`top_k` must be smaller than the number of units "
                    f"({game.n_units}), got {top_k}"
                )
            # paper mode keeps the original code's independent chains
            strata = resolve_strata(
                strata, antithetic, bound == "paper" or sampler == "msr", game.n_units
            )
            v_all, v_none = game.full_value(), game.empty_value()
            threshold = truncation_threshold(truncation, v_all, v_none)
            if epsilon is None:
                epsilon = DEFAULT_EPSILON * (abs(v_all - v_none) or 1.0)
            smp = make_sampler(
                sampler,
                game,
                generator,
                threshold,
                PAPER_PATIENCE if bound == "paper" else 1,
                subset_size,
                antithetic,
                chains_per_round,
                strata,
                bounds_cfg,
                min_samples is None,
            )
            threshold = smp.truncation  # None for sampler="msr"
            estimator = TMABEstimator(
                smp,
                TopKRule(top_k, float(epsilon)),
                bounds_cfg,
                budget,
                _marginal_range(game.metric),
                checkpoint,
                checkpoint_interval,
                fingerprint(smp, seed, top_k, epsilon, bounds_cfg),
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
        values = _in_layer_dtype(result.values, iter([u.dtype for u in game.units]))
        if return_convergence_delta:
            gap = torch.tensor(result.convergence_delta, dtype=torch.float64)
            return values, gap
        return values

    @log_usage()
    def compute_convergence_delta(
        self,
        attributions: LayerAttributions,
        inputs: Union[Tensor, Tuple[Tensor, ...], DataLoader],
        layer_baselines: LayerBaselines = None,
        target: Any = None,
        additional_forward_args: Any = None,
        layer_mask: LayerMasks = None,
        attribute_to_layer_input: bool = False,
        *,
        metric: Optional[Callable[[Tensor, Any], float]] = None,
        internal_batch_size: Optional[int] = None,
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
            inputs, layer_baselines, target, additional_forward_args,
            layer_mask, attribute_to_layer_input, metric, internal_batch_size:
                        As in :meth:`attribute` (they define the game).

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
            internal_batch_size=internal_batch_size,
            cache_activations=False,
        )
        total = sum(
            float(_unit_values(u, a).sum())
            for u, a in zip(game.units, _flat_attributions(attributions, game.units))
        )
        with model_guard(self.forward_func):
            v_all, v_none = game.full_value(), game.empty_value()
        return torch.tensor(v_all - v_none - total, dtype=torch.float64)

    def game(
        self,
        inputs: Union[Tensor, Tuple[Tensor, ...], DataLoader],
        layer_baselines: LayerBaselines = None,
        target: Any = None,
        additional_forward_args: Any = None,
        layer_mask: LayerMasks = None,
        attribute_to_layer_input: bool = False,
        perturbations_per_eval: int = 1,
        *,
        metric: Optional[Callable[[Tensor, Any], float]] = None,
        internal_batch_size: Optional[int] = None,
        cache_activations: bool = True,
        batch_size: Optional[int] = None,
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
        internal_batch_size = _renamed_batch_size(internal_batch_size, batch_size)
        check_positive_int("perturbations_per_eval", perturbations_per_eval, False)
        check_positive_int("internal_batch_size", internal_batch_size)
        if not isinstance(attribute_to_layer_input, bool):
            raise ValueError(
                "`attribute_to_layer_input` must be a bool, got "
                f"{type(attribute_to_layer_input).__name__}"
            )
        xs, target, args = format_eval_data(inputs, target, additional_forward_args)
        n = int(xs[0].shape[0])
        if metric is None:
            target, metric = default_metric(target, n, xs[0].device)
        elif not callable(metric):
            raise ValueError(f"`metric` must be callable, got {type(metric).__name__}")
        device_ids = self._device_ids()
        with model_guard(self.forward_func):
            skip: List[nn.Module] = []
            if cache_activations and self._model is not None and not device_ids:
                skip = trace_prefix(
                    self._model,
                    self._layers,
                    tuple(x[:1] for x in xs),
                    subset_args(args, slice(0, 1), n),
                    self.forward_func,
                )
            outputs, evals, cached = reference_pass(
                self.forward_func,
                self._layers,
                self._names,
                xs,
                args,
                internal_batch_size,
                skip,
                attribute_to_layer_input,
                device_ids,
            )
        if isinstance(metric, MeanOutput) and target is None:
            if outputs[0].numel() != 1:
                raise ValueError(
                    "`target` is required by the default metric when the model "
                    "returns more than one value per example (outputs of shape "
                    f"{tuple(outputs.shape[1:])}): pass per-example labels "
                    "(accuracy), an output index (its mean), or a `metric`"
                )
        units = self._units(
            evals, layer_baselines, layer_mask, attribute_to_layer_input
        )
        return UnitGame(
            self.forward_func,
            units,
            xs,
            target,
            metric,
            outputs,
            perturbations_per_eval,
            internal_batch_size,
            (skip, cached),
            args,
            device_ids,
        )

    def _device_ids(self) -> Optional[List[int]]:
        r"""The devices a DataParallel model scatters its batch to (Captum's
        rule: the constructor's ``device_ids``, else ``forward_func.device_ids``);
        None when the batch is not split."""
        ids = self.device_ids
        if ids is None:
            ids = getattr(self.forward_func, "device_ids", None)
        if ids is None and self._model is not None:
            ids = getattr(self._model, "device_ids", None)
        return list(ids) if ids else None

    def _units(
        self,
        evals: List[LayerEval],
        layer_baselines: Any,
        layer_mask: Any,
        layer_input: bool,
    ) -> List[LayerUnits]:
        counts = [len(ev.shapes) for ev in evals]
        baselines = per_tensor(
            layer_baselines, counts, self._names, self._single, "layer_baselines"
        )
        masks = per_tensor(layer_mask, counts, self._names, self._single, "layer_mask")
        if self._grouping == "filter" and any(m is not None for m in masks):
            raise ValueError("`layer_mask` is not supported by FilterShapley")
        units: List[LayerUnits] = []
        for layer, name, ev in zip(self._layers, self._names, evals):
            for j, (shape, mean, dtype) in enumerate(
                zip(ev.shapes, ev.means, ev.dtypes)
            ):
                k = len(units)
                part = f"{name}[{j}]" if ev.is_tuple else name
                if self._grouping == "filter":
                    groups = filter_groups(shape, part)
                    ids, kind = torch.arange(shape[0]), "filter"
                else:
                    groups, ids = neuron_groups(shape, part, masks[k])
                    kind = "neuron"
                u = LayerUnits(
                    layer,
                    part,
                    shape,
                    groups.to(mean.device),
                    ids,
                    kind,
                    None,
                    j if ev.is_tuple else None,
                    layer_input,
                    dtype,
                )
                u.baseline = resolve_baseline(u, baselines[k], mean, self._grouping)
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
        names: Dict[int, str] = {id(m): n for m, n in zip(self._layers, self._names)}
        layouts = []
        for u in units:
            groups = (
                torch.arange(u.n_units)
                if u.kind == "filter"
                else u.groups.expand(u.out_shape).cpu().clone()
            )
            assert u.baseline is not None
            base = u.baseline.detach().cpu().expand(u.out_shape).clone()
            layouts.append(
                LayerLayout(
                    u.name,
                    u.kind,
                    groups,
                    u.unit_ids.cpu(),
                    list(u.out_shape),
                    base,
                    names[id(u.layer)] if u.index is not None else None,
                    u.index,
                    u.layer_input,
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


def _renamed_batch_size(
    internal_batch_size: Optional[int], batch_size: Optional[int]
) -> Optional[int]:
    if batch_size is None:
        return internal_batch_size
    if internal_batch_size is not None:
        raise ValueError(
            "pass `internal_batch_size` only (`batch_size` is its deprecated name)"
        )
    warnings.warn(
        "`batch_size` is deprecated; use `internal_batch_size` (Captum's name)",
        DeprecationWarning,
        stacklevel=3,
    )
    return batch_size


def _in_layer_dtype(values: Any, dtypes: Iterator[Optional[torch.dtype]]) -> Any:
    r"""The attributions (float64, laid out as ``ShapleyResult.values``) in the
    dtype of each layer tensor, in layout order (float64 for integer tensors)."""
    if isinstance(values, Tensor):
        dtype = next(dtypes)
        return (
            values.to(dtype)
            if dtype is not None and dtype.is_floating_point
            else values
        )
    return tuple(_in_layer_dtype(v, dtypes) for v in values)


def _flat_attributions(attributions: Any, units: Sequence[LayerUnits]) -> List[Tensor]:
    r"""The tensors of ``attributions``, one per layer tensor, checked against
    the game's units."""
    flat: List[Tensor] = []

    def walk(a: Any) -> None:
        if isinstance(a, Tensor):
            flat.append(a)
        elif isinstance(a, (tuple, list)):
            for b in a:
                walk(b)
        else:
            raise ValueError(
                "`attributions` must be a Tensor or (nested) tuples of Tensors as "
                f"`attribute` returns, got {type(a).__name__}"
            )

    walk(attributions)
    want = [(u.n_units,) if u.kind == "filter" else tuple(u.out_shape) for u in units]
    got = [tuple(a.shape) for a in flat]
    if got != want:
        raise ValueError(
            f"`attributions` have shapes {got}; the layers' units give {want}"
        )
    return flat


def _unit_values(u: LayerUnits, attribution: Tensor) -> Tensor:
    r"""One value per unit: a filter's entry, or the mean over a unit's elements."""
    a = attribution.detach().to("cpu", torch.float64).reshape(-1)
    if u.kind == "filter":
        return a
    idx = u.groups.expand(u.out_shape).reshape(-1).cpu()
    sums = torch.zeros(u.n_units, dtype=torch.float64).index_add_(0, idx, a)
    return sums / torch.bincount(idx, minlength=u.n_units).clamp_min(1)


def _marginal_range(metric: Callable) -> Optional[float]:
    bounds = metric_bounds(metric)
    return None if bounds is None else 2.0 * (bounds[1] - bounds[0])


def _fresh_seed() -> int:
    import secrets

    return secrets.randbits(62)
