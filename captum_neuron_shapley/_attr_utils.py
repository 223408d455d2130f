r"""Helpers of the Captum classes in :mod:`.attr`: the players of each layer, the
stopping rule built from ``attribute``'s keywords, the checkpoint fingerprint, the
result, and the keywords that moved out of ``attribute``."""

from __future__ import annotations

import functools
import secrets
import time
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from captum._utils.common import _format_additional_forward_args
from torch import nn, Tensor
from torch.utils.data import DataLoader

from ._inputs import (
    check_finite,
    check_positive_int,
    explain_forward_errors,
    format_eval_data,
)

from .bounds import AnytimeBound, Bound, make_bound, PaperBound
from .distributed import Collective, rank_seed
from .estimator import ShapleyEstimator
from .game import LayerEval, model_guard, reference_pass, subset_args, UnitGame
from .metrics import default_metric, MeanOutput, Metric, metric_bounds
from .prefix import trace_prefix
from .refine import GreedyRefine
from .removal import (
    filter_groups,
    LayerUnits,
    neuron_groups,
    per_tensor,
    resolve_baseline,
)
from .result import LayerLayout, RunCost, ShapleyResult
from .sampler import PermutationSampler, Sampler, truncation_threshold
from .stopping import (
    Callback,
    Checkpoint,
    HalfWidth,
    MaxEvaluations,
    MaxPermutations,
    MaxTime,
    RuleDefaults,
    StoppingRule,
    TopKSeparated,
)
from .streaming import cat_targets, LoaderSource, StreamedGame

#: Default ``epsilon``: this fraction of ``|V(all) - V(none)|``.
DEFAULT_EPSILON = 0.01


def layer_units(
    layers: Sequence[nn.Module],
    names: Sequence[str],
    single: bool,
    grouping: str,
    evals: List[LayerEval],
    layer_baselines: Any,
    layer_mask: Any,
    layer_input: bool,
) -> List[LayerUnits]:
    r"""The players of every tensor of every layer, with their baselines."""
    counts = [len(ev.shapes) for ev in evals]
    baselines = per_tensor(layer_baselines, counts, names, single, "layer_baselines")
    masks = per_tensor(layer_mask, counts, names, single, "layer_mask")
    if grouping == "filter" and any(m is not None for m in masks):
        raise ValueError("`layer_mask` is not supported by FilterShapley")
    units: List[LayerUnits] = []
    for layer, name, ev in zip(layers, names, evals):
        for j, (shape, mean, dtype) in enumerate(zip(ev.shapes, ev.means, ev.dtypes)):
            k = len(units)
            part = f"{name}[{j}]" if ev.is_tuple else name
            if grouping == "filter":
                groups, ids = filter_groups(shape, part), torch.arange(shape[0])
            else:
                groups, ids = neuron_groups(shape, part, masks[k])
            u = LayerUnits(
                layer,
                part,
                shape,
                groups.to(mean.device),
                ids,
                grouping,
                None,
                j if ev.is_tuple else None,
                layer_input,
                dtype,
            )
            u.baseline = resolve_baseline(u, baselines[k], mean, grouping)
            units.append(u)
    return units


def compose_stop(
    stop: Any,
    top_k: Optional[int],
    epsilon: Optional[float],
    max_evaluations: Optional[int],
    max_permutations: Optional[int],
    max_time: Optional[float],
) -> Tuple[StoppingRule, Optional[int]]:
    r"""The stopping rule of ``attribute``: the interval rule of ``top_k`` /
    ``epsilon`` (unless ``stop`` brings one), the budgets, and ``stop`` (a rule,
    or a :class:`Bound` for the interval rule); and the ``k`` of the top-k
    rule."""
    bound: Optional[Bound] = None
    if isinstance(stop, Bound):
        bound, stop = stop, None
    elif stop is not None and not isinstance(stop, StoppingRule):
        raise ValueError(
            "`stop` must be a stopping rule (TopKSeparated(...), MaxTime(...), ... "
            f"combined with | and &) or a Bound, got {type(stop).__name__}"
        )
    interval = [r for r in stop.leaves() if r.is_interval] if stop else []
    parts: List[StoppingRule] = []
    if not interval:
        parts.append(
            TopKSeparated(top_k, epsilon, bound)
            if top_k is not None
            else HalfWidth(epsilon, bound)
        )
    else:
        ks = [r.k for r in interval if isinstance(r, TopKSeparated)]
        if top_k is not None and top_k not in ks:
            raise ValueError(
                f"`top_k` ({top_k}) differs from the k of the TopKSeparated rule in "
                f"`stop` ({ks or 'none'}); give it once"
            )
        if epsilon is not None:
            raise ValueError(
                "`epsilon` applies to the rule built from `top_k`; `stop` brings its "
                "own interval rule: set its epsilon there"
            )
        top_k = ks[0] if ks else None
    if max_evaluations is not None:
        parts.append(MaxEvaluations(max_evaluations))
    if max_permutations is not None:
        parts.append(MaxPermutations(max_permutations))
    if max_time is not None:
        parts.append(MaxTime(max_time))
    if stop is not None:
        parts.append(stop)
    out = parts[0]
    for p in parts[1:]:
        out = out | p
    return out, top_k


def default_epsilon(v_all: float, v_none: float) -> float:
    r"""1% of ``|V(all) - V(none)|`` (0.01 if that is 0)."""
    return DEFAULT_EPSILON * (abs(v_all - v_none) or 1.0)


def marginal_range(metric: Callable) -> Optional[float]:
    r"""The true range of a marginal contribution: twice the metric's range."""
    bounds = metric_bounds(metric)
    return None if bounds is None else 2.0 * (bounds[1] - bounds[0])


def fingerprint(
    game: UnitGame, sampler: Sampler, stop: StoppingRule, seed: Optional[int]
) -> Dict[str, Any]:
    r"""The settings a checkpoint must match to be resumed."""
    metric = game.metric
    return {
        "layers": [u.name for u in game.units],
        "metric": (
            repr(metric)
            if isinstance(metric, Metric)
            else getattr(metric, "__qualname__", type(metric).__name__)
        ),
        "full_value": game.full_value(),
        "empty_value": game.empty_value(),
        "n_units": game.n_units,
        "n_examples": game.n_examples,
        "seed": seed,
        **sampler.settings(),
        **stop.settings(),
        "perturbations_per_eval": game.perturbations_per_eval,
        "world_size": Collective().world,
    }


def fresh_seed() -> int:
    return secrets.randbits(62)


def layouts(units: Sequence[LayerUnits], names: Dict[int, str]) -> List[LayerLayout]:
    r"""How each tensor's units map to its reported tensor (for the result)."""
    out = []
    for u in units:
        groups = (
            torch.arange(u.n_units)
            if u.per_unit
            else u.groups.expand(u.out_shape).cpu().clone()
        )
        assert u.baseline is not None
        base = u.baseline.detach().cpu().expand(u.out_shape).clone()
        out.append(
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
    return out


def in_layer_dtype(values: Any, dtypes: Iterator[Optional[torch.dtype]]) -> Any:
    r"""The attributions (float64, laid out as ``ShapleyResult.values``) in the
    dtype of each layer tensor, in layout order (float64 for integer tensors)."""
    if isinstance(values, Tensor):
        dtype = next(dtypes)
        return (
            values.to(dtype)
            if dtype is not None and dtype.is_floating_point
            else values
        )
    return tuple(in_layer_dtype(v, dtypes) for v in values)


def flat_attributions(attributions: Any, units: Sequence[LayerUnits]) -> List[Tensor]:
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
    want = [(u.n_units,) if u.per_unit else tuple(u.out_shape) for u in units]
    got = [tuple(a.shape) for a in flat]
    if got != want:
        raise ValueError(
            f"`attributions` have shapes {got}; the layers' units give {want}"
        )
    return flat


def unit_values(u: LayerUnits, attribution: Tensor) -> Tensor:
    r"""One value per unit: a filter's entry, or the mean over a unit's elements."""
    a = attribution.detach().to("cpu", torch.float64).reshape(-1)
    if u.per_unit:
        return a
    idx = u.groups.expand(u.out_shape).reshape(-1).cpu()
    sums = torch.zeros(u.n_units, dtype=torch.float64).index_add_(0, idx, a)
    return sums / torch.bincount(idx, minlength=u.n_units).clamp_min(1)


# -- keywords that moved out of ``attribute`` ---------------------------------------

_SAMPLER_KEYS = ("subset_size", "antithetic", "strata", "chains_per_round")
_BOUND_KEYS = ("bound", "delta", "min_samples")
_RUN_KEYS = ("checkpoint", "checkpoint_interval", "callback")
_REFINE_KEYS = ("refine_pool", "refine_beam")
_EXEC_KEYS = ("internal_batch_size", "cache_activations", "batch_size")
MOVED_KEYS = _SAMPLER_KEYS + _BOUND_KEYS + _RUN_KEYS + _REFINE_KEYS + _EXEC_KEYS

_WHERE = {
    **{
        k: "sampler=PermutationSampler(...) (batch_size=None keeps every chain on "
        "all examples, as these keywords did)"
        for k in _SAMPLER_KEYS
    },
    **{
        k: "stop=AnytimeBound(...) (or the bound of a stopping rule)"
        for k in _BOUND_KEYS
    },
    "checkpoint": "stop=... | Checkpoint(path, interval)",
    "checkpoint_interval": "stop=... | Checkpoint(path, interval)",
    "callback": "stop=... | Callback(fn)",
    **{k: "refine=GreedyRefine(pool, beam)" for k in _REFINE_KEYS},
    "internal_batch_size": "the constructor",
    "cache_activations": "the constructor",
    "batch_size": "the constructor's internal_batch_size",
}


def accepts_moved_keywords(attribute: Callable) -> Callable:
    r"""Let ``attribute`` take, for one release and with a ``DeprecationWarning``,
    the keywords that moved into sampler, stopping-rule and refine objects or to
    the constructor (the signature shown is the new one)."""

    @functools.wraps(attribute)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        moved = {k: kwargs.pop(k) for k in list(kwargs) if k in MOVED_KEYS}
        if not moved:
            return attribute(self, *args, **kwargs)
        warnings.warn(
            "`attribute` keywords moved: "
            + "; ".join(f"`{k}` -> {_WHERE[k]}" for k in moved)
            + ". The old keywords work until the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        _translate(moved, kwargs)
        saved = (self.internal_batch_size, self.cache_activations)
        if "batch_size" in moved:
            if "internal_batch_size" in moved:
                raise ValueError(
                    "pass `internal_batch_size` only (`batch_size` is its old name)"
                )
            moved["internal_batch_size"] = moved.pop("batch_size")
        try:
            if "internal_batch_size" in moved:
                self.internal_batch_size = moved["internal_batch_size"]
            if "cache_activations" in moved:
                self.cache_activations = moved["cache_activations"]
            self._check_execution()
            return attribute(self, *args, **kwargs)
        finally:
            self.internal_batch_size, self.cache_activations = saved

    return wrapper


def _translate(moved: Dict[str, Any], kwargs: Dict[str, Any]) -> None:
    r"""Rewrite the moved keywords in ``moved`` into ``kwargs``' new ones."""
    smp = {k: moved[k] for k in _SAMPLER_KEYS if k in moved}
    if smp:
        if kwargs.get("sampler") not in (None, "chains"):
            name = kwargs.get("sampler")
            if name == "msr":
                unused = {"subset_size": None, "antithetic": False, "strata": 1}
                for k, default in unused.items():
                    if k in smp and smp[k] is not default and smp[k] != default:
                        raise ValueError(f"`{k}` applies to sampler='chains' only")
            raise ValueError(
                f"pass {', '.join(smp)} inside the sampler object, not beside it"
            )
        kwargs["sampler"] = PermutationSampler(
            strata=smp.get("strata"),
            antithetic=bool(smp.get("antithetic", False)),
            batch_size=smp.get("subset_size"),
            chains_per_round=smp.get("chains_per_round", 1),
        )
    refine_args = {k: moved[k] for k in _REFINE_KEYS if k in moved}
    if refine_args:
        pool, beam = refine_args.get("refine_pool"), refine_args.get("refine_beam", 1)
        top_k = kwargs.get("top_k")
        refine = GreedyRefine(pool, beam)
        if top_k is not None:
            refine.check(top_k)
        if kwargs.get("refine") == "greedy":
            kwargs["refine"] = refine
    run_args = {k: moved[k] for k in _BOUND_KEYS + _RUN_KEYS if k in moved}
    bound: Optional[Bound] = None
    if any(k in run_args for k in _BOUND_KEYS):
        bound = make_bound(
            run_args.get("bound"), run_args.get("delta"), run_args.get("min_samples")
        )
    extra: List[StoppingRule] = []
    if run_args.get("checkpoint") is not None:
        extra.append(
            Checkpoint(
                run_args["checkpoint"], run_args.get("checkpoint_interval", 60.0)
            )
        )
    if run_args.get("callback") is not None:
        extra.append(Callback(run_args["callback"]))
    stop = kwargs.get("stop")
    if bound is None and not extra:
        return
    if isinstance(stop, Bound) or (
        stop is not None and any(r.is_interval for r in stop.leaves())
    ):
        if bound is not None:
            raise ValueError("pass the bound inside `stop`, not beside it")
    elif bound is not None or extra:
        # the rule of top_k / epsilon, with the bound, then the rest
        top_k, eps = kwargs.get("top_k"), kwargs.pop("epsilon", None)
        rule: StoppingRule = (
            TopKSeparated(top_k, eps, bound)
            if top_k is not None
            else HalfWidth(eps, bound)
        )
        stop = rule if stop is None else rule | stop
    if isinstance(stop, Bound):  # the rule of top_k / epsilon, with that bound
        top_k, eps = kwargs.get("top_k"), kwargs.pop("epsilon", None)
        stop = (
            TopKSeparated(top_k, eps, stop)
            if top_k is not None
            else HalfWidth(eps, stop)
        )
    for e in extra:
        stop = e if stop is None else stop | e
    kwargs["stop"] = stop


def make_result(
    run: Any,
    game: UnitGame,
    names: Dict[int, str],
    single: bool,
    top_k: Optional[int],
    removal: Optional[Tuple[List[int], Tensor, int, int, float]],
) -> ShapleyResult:
    r"""The :class:`ShapleyResult` of a finished run and its refine search
    (``removal``: the set, its curve, its evaluations, examples and seconds)."""
    rules = [r for r in run.stop.leaves() if r.is_interval]
    epsilon = getattr(rules[0], "epsilon", None) if rules else None
    return ShapleyResult(
        flat_values=run.stats.mean.clone(),
        flat_stderr=run.stats.stderr,
        flat_radius=run.radius(),
        counts=run.stats.count.to(torch.long),
        n_evaluations=run.n_evaluations + (removal[2] if removal else 0),
        n_permutations=run.n_permutations,
        converged=run.converged,
        stop_reason=run.stop_reason,
        top_k=top_k,
        full_value=game.full_value(),
        empty_value=game.empty_value(),
        truncation=run.sampler.truncation,
        bound=run.bound.name,
        layers=layouts(game.units, names),
        history=run.history_tensor(),
        single_layer=single,
        epsilon=None if epsilon is None else float(epsilon),
        removal_set=removal[0] if removal else None,
        removal_curve=removal[1] if removal else None,
        refine_evaluations=removal[2] if removal else 0,
        cost=RunCost(
            examples=run.examples_evaluated + (removal[3] if removal else 0),
            seconds=time.monotonic() - run.started,
            setup_seconds=run.setup_time,
            setup_evaluations=run.setup_evaluations,
            refine_seconds=removal[4] if removal else 0.0,
            evaluations_per_chain=run.sampler.chain_cost(),
            batch_size=getattr(run.sampler, "batch_size", None),
        ),
    )


def estimate(
    game: UnitGame,
    sampler: Sampler,
    stop: StoppingRule,
    top_k: Optional[int],
    refine: Optional[GreedyRefine],
    truncation: Any,
    seed: Optional[int],
    show_progress: bool,
    started: float,
    layout: Tuple[Dict[int, str], bool],
) -> ShapleyResult:
    r"""Run ``attribute``'s estimate on ``game``: bind the sampler, resolve the
    stopping rule, run the estimator loop, then the removal-set search.
    ``layout`` holds the layers' names (by ``id``) and whether a single layer
    was given."""
    if top_k is not None and top_k >= game.n_units:
        raise ValueError(
            f"`top_k` must be smaller than the number of units ({game.n_units}), "
            f"got {top_k}"
        )
    base_seed = int(seed) if seed is not None else fresh_seed()
    generator = torch.Generator().manual_seed(rank_seed(base_seed, Collective().rank))
    v_all, v_none = game.full_value(), game.empty_value()
    paper = any(
        isinstance(getattr(r, "bound", None), PaperBound) for r in stop.leaves()
    )
    smp = sampler.bind(
        game, generator, truncation_threshold(truncation, v_all, v_none), paper=paper
    )
    stop = stop.resolve(
        RuleDefaults(default_epsilon(v_all, v_none), AnytimeBound(), smp.min_samples)
    )
    run = ShapleyEstimator(
        smp,
        stop,
        value_range=marginal_range(game.metric),
        fingerprint=fingerprint(game, smp, stop, seed),
        show_progress=show_progress,
        started=started,
    ).run()
    warn_unestimated(run)
    removal: Optional[Tuple[List[int], Tensor, int, int, float]] = None
    sampled = run.stats.count > 0
    if refine is not None and int(sampled.sum()) < int(top_k or 0):
        warnings.warn(
            f"no removal set: it needs {top_k} units with samples and the run "
            f"has {int(sampled.sum())}; raise the budget (see the warning above "
            "or estimate_cost)",
            UnestimatedWarning,
            stacklevel=5,  # estimate, attribute, usage log, moved keywords, caller
        )
    elif refine is not None:
        assert top_k is not None
        before, rows = game.n_evaluations, game.examples_evaluated
        t0 = time.monotonic()
        units, curve = refine.search(
            game,
            run.stats.mean,
            top_k,
            show_progress and Collective().rank == 0,
            sampled,
        )
        removal = (
            units,
            curve,
            game.n_evaluations - before,
            game.examples_evaluated - rows,
            time.monotonic() - t0,
        )
    return make_result(run, game, layout[0], layout[1], top_k, removal)


def device_ids_of(attr: Any) -> Optional[List[int]]:
    r"""The devices a DataParallel model scatters its batch to (Captum's rule: the
    constructor's ``device_ids``, else ``forward_func.device_ids``); None when the
    batch is not split."""
    ids = attr.device_ids
    if ids is None:
        ids = getattr(attr.forward_func, "device_ids", None)
    if ids is None and attr._model is not None:
        ids = getattr(attr._model, "device_ids", None)
    return list(ids) if ids else None


def build_game(
    attr: Any,
    inputs: Any,
    layer_baselines: Any,
    target: Any,
    additional_forward_args: Any,
    layer_mask: Any,
    attribute_to_layer_input: bool,
    perturbations_per_eval: int,
    metric: Optional[Callable],
    cache_activations: bool,
) -> UnitGame:
    r"""The game of ``attr`` (a :class:`~captum_neuron_shapley.NeuronShapley`):
    check and format the evaluation data, run the intact model once (reference
    outputs, layer shapes and means, the replayed prefix), and build the units."""
    check_positive_int("perturbations_per_eval", perturbations_per_eval, False)
    if not isinstance(attribute_to_layer_input, bool):
        raise ValueError(
            "`attribute_to_layer_input` must be a bool, got "
            f"{type(attribute_to_layer_input).__name__}"
        )
    if metric is not None and not callable(metric):
        raise ValueError(f"`metric` must be callable, got {type(metric).__name__}")
    device_ids = device_ids_of(attr)
    if isinstance(inputs, DataLoader):
        return _streamed_game(
            attr,
            inputs,
            layer_baselines,
            target,
            additional_forward_args,
            layer_mask,
            attribute_to_layer_input,
            perturbations_per_eval,
            metric,
            cache_activations,
        )
    xs, target, args = format_eval_data(inputs, target, additional_forward_args)
    n = int(xs[0].shape[0])
    if metric is None:
        target, metric = default_metric(target, n, xs[0].device)
    with model_guard(attr.forward_func), explain_forward_errors(attr._model, xs):
        skip: List[nn.Module] = []
        if cache_activations and attr._model is not None and not device_ids:
            skip = trace_prefix(
                attr._model,
                attr._layers,
                tuple(x[:1] for x in xs),
                subset_args(args, slice(0, 1), n),
                attr.forward_func,
            )
        outputs, evals, cached = reference_pass(
            attr.forward_func,
            attr._layers,
            attr._names,
            xs,
            args,
            attr.internal_batch_size,
            skip,
            attribute_to_layer_input,
            device_ids,
        )
    _check_target_needed(metric, target, outputs)
    units = attr._units(evals, layer_baselines, layer_mask, attribute_to_layer_input)
    game = UnitGame(
        attr.forward_func,
        units,
        xs,
        target,
        metric,
        outputs,
        perturbations_per_eval,
        attr.internal_batch_size,
        (skip, cached),
        args,
        device_ids,
    )
    game.examples_evaluated += n  # the reference pass
    return game


def _check_target_needed(metric: Any, target: Any, outputs: Tensor) -> None:
    if isinstance(metric, MeanOutput) and target is None:
        if outputs[0].numel() != 1:
            raise ValueError(
                "`target` is required by the default metric when the model "
                "returns more than one value per example (outputs of shape "
                f"{tuple(outputs.shape[1:])}): pass per-example labels "
                "(accuracy), an output index (its mean), or a `metric`"
            )


def _model_device(attr: Any) -> Optional[torch.device]:
    model = attr._model
    if model is None:
        return None
    first = next(iter(model.parameters()), None)
    return None if first is None else first.device


def _streamed_game(
    attr: Any,
    loader: DataLoader,
    layer_baselines: Any,
    target: Any,
    additional_forward_args: Any,
    layer_mask: Any,
    attribute_to_layer_input: bool,
    perturbations_per_eval: int,
    metric: Optional[Callable],
    cache_activations: bool,
) -> UnitGame:
    r"""The game of a ``DataLoader`` of examples (see :mod:`.streaming`): one
    pass gives the intact model's outputs, the layer means and the targets."""
    args = _format_additional_forward_args(additional_forward_args)
    source = LoaderSource(loader, target, args, _model_device(attr))
    if source.n is not None:
        _check_loader_lengths(source, target, args)
    targets: List[Any] = []
    seen: List[Tensor] = []  # the batch being run, for explain_forward_errors

    def chunks() -> Iterator[Tuple[Tuple[Tensor, ...], Any]]:
        for b, (xs, tgt, a, _) in enumerate(source.passes()):
            for i, x in enumerate(xs):
                part = f" (tensor {i})" if len(xs) > 1 else ""
                check_finite("inputs", x, f"{part} in DataLoader batch {b}")
            seen[:] = xs
            targets.append(tgt)
            yield xs, a

    device_ids = device_ids_of(attr)
    with model_guard(attr.forward_func), explain_forward_errors(attr._model, seen):
        skip: List[nn.Module] = []
        if cache_activations and attr._model is not None and not device_ids:
            xs, _, a, _ = next(source.passes())
            seen[:] = xs
            skip = trace_prefix(
                attr._model,
                attr._layers,
                tuple(x[:1] for x in xs),
                subset_args(a, slice(0, 1), int(xs[0].shape[0])),
                attr.forward_func,
            )
        outputs, evals, _ = reference_pass(
            attr.forward_func,
            attr._layers,
            attr._names,
            (),
            None,
            None,
            (),
            attribute_to_layer_input,
            device_ids,
            chunks=chunks(),
        )
    if not targets:
        raise ValueError("`inputs` is empty: the DataLoader yielded no batch")
    n = int(outputs.shape[0])
    whole = cat_targets(targets)
    if metric is None:
        whole, metric = default_metric(whole, n, outputs.device)
        if target is not None:  # the form the metric reads, for drawn batches
            source.target = default_metric(target, n, outputs.device)[0]
    _check_target_needed(metric, whole, outputs)
    units = attr._units(evals, layer_baselines, layer_mask, attribute_to_layer_input)
    game = StreamedGame(
        attr.forward_func,
        units,
        source,
        whole,
        metric,
        outputs,
        perturbations_per_eval,
        attr.internal_batch_size,
        skip,
        device_ids,
    )
    game.examples_evaluated += n  # the reference pass
    return game


def _check_loader_lengths(source: LoaderSource, target: Any, args: Any) -> None:
    n = int(source.n or 0)
    items = target if isinstance(target, (tuple, list)) else [target]
    for t in items:
        if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] != n:
            raise ValueError(
                f"`target` has {t.shape[0]} entries but the DataLoader's dataset "
                f"has {n} examples"
            )
    for i, a in enumerate(args or ()):
        if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] != n:
            raise ValueError(
                f"`additional_forward_args` tensor {i} has shape {tuple(a.shape)}; "
                f"a tensor argument must have one entry per example ({n}) along "
                "dimension 0, as in Captum (pass other values as non-tensors or "
                "wrap the model)"
            )


class UnestimatedWarning(RuntimeWarning):
    r"""A run ended with units that have no sample (its budget completed no
    chain that reached them): their values are 0 with infinite intervals."""


def warn_unestimated(run: Any) -> None:
    r"""Warn when units have no sample, naming the budget a chain needs."""
    missing = int((run.stats.count == 0).sum())
    if not missing:
        return
    per_chain = run.sampler.chain_cost()
    sampled = run.n_evaluations - run.setup_evaluations
    rate = (run.elapsed - run.setup_time) / sampled if sampled > 0 else None
    need = ""
    if per_chain is not None:
        about = "about" if run.n_permutations else "up to about"
        need = f"; one chain takes {about} {per_chain:,.0f} evaluations"
        if rate is not None:
            need += f" ({per_chain * rate:.3g} s at the {rate:.3g} s per evaluation"
            need += " measured here)"
        need += (
            f", so some {20 * per_chain:,.0f} evaluations buy the 20 chains a "
            "confidence interval needs"
        )
    warnings.warn(
        f"{missing} of {run.game.n_units} units have no sample: the run stopped "
        f"({run.stop_reason}) after {run.n_permutations} completed chain(s) and "
        f"{run.n_evaluations:,} evaluations{need}. Their values are 0 with "
        "infinite intervals (result.unestimated); raise max_evaluations / "
        "max_time, or see estimate_cost()",
        UnestimatedWarning,
        stacklevel=6,  # here, estimate, attribute, usage log, moved keywords, caller
    )
