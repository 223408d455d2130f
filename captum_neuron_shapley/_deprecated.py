r"""The keywords that moved out of ``attribute`` (into sampler, stopping-rule and
refine objects, or to the constructor) keep working for one release, with a
``DeprecationWarning`` that says where each one went."""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Dict, List, Optional

from .bounds import Bound, make_bound
from .refine import GreedyRefine
from .sampler import PermutationSampler
from .stopping import Callback, Checkpoint, HalfWidth, StoppingRule, TopKSeparated

__all__ = ["accepts_moved_keywords", "MOVED_KEYS"]


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
            chains_per_round=smp.get("chains_per_round", "auto"),
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
