r"""When a run stops, and which units still need samples.

Stopping rules are small objects composed with ``|`` (stop when any part says so)
and ``&`` (stop when every part says so):

- interval rules, which also say which units still need samples (the bandit's
  active set): :class:`TopKSeparated` and :class:`HalfWidth`, each judging with a
  confidence :class:`~captum_neuron_shapley.bounds.Bound`;
- budgets: :class:`MaxEvaluations`, :class:`MaxPermutations`, :class:`MaxTime`;
- :class:`Callback`, a user function called after every round;
- :class:`Checkpoint`, an observer that never stops a run: it resumes a run from
  a file and saves it as the run goes.

``attribute``'s ``top_k``, ``epsilon`` and ``max_*`` keywords build the common
rules; its ``stop`` keyword takes any composition, for example
``stop=MaxTime(600) | Checkpoint("run.pt")``.

A rule is consulted between rounds with the running estimator (``run``): its
statistics (``run.stats``), the observed range of the marginals
(``run.value_range``), the counts (``run.n_evaluations``, ``run.n_permutations``,
``run.rounds``) and the time spent (``run.elapsed``, setup included).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor

from .bounds import AnytimeBound, Bound

__all__ = [
    "StoppingRule",
    "TopKSeparated",
    "HalfWidth",
    "MaxEvaluations",
    "MaxPermutations",
    "MaxTime",
    "Callback",
    "Checkpoint",
    "Limits",
    "RuleDefaults",
]


@dataclass(frozen=True)
class Limits:
    r"""What a sampler may spend in the next round before a budget ends the run
    (None: no limit): the game's evaluation count it may reach, the permutation
    chains (or coalitions) it may complete, and the ``time.monotonic()`` value it
    must stop at."""

    max_evaluations: Optional[int] = None
    max_samples: Optional[int] = None
    deadline: Optional[float] = None

    def tighter(self, other: "Limits") -> "Limits":
        r"""Each limit at the smaller of the two (None is no limit)."""
        return Limits(
            *(_pick(min, a, b) for a, b in zip(_astuple(self), _astuple(other)))
        )

    def looser(self, other: "Limits") -> "Limits":
        r"""Each limit at the larger of the two (None when either has none)."""
        return Limits(
            *(
                None if a is None or b is None else max(a, b)
                for a, b in zip(_astuple(self), _astuple(other))
            )
        )


def _astuple(limits: Limits) -> Tuple[Any, ...]:
    return (limits.max_evaluations, limits.max_samples, limits.deadline)


def _pick(f: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else f(a, b)


@dataclass(frozen=True)
class RuleDefaults:
    r"""What a rule takes when its settings are None: the run's ``epsilon``
    (1% of ``|V(all) - V(none)|``) and its bound (``min_samples`` resolved for
    the sampler)."""

    epsilon: float
    bound: Bound
    min_samples: int


class StoppingRule:
    r"""A rule consulted between rounds. Compose rules with ``|`` (stop when any
    says so) and ``&`` (stop when all do). Subclasses override what they need:
    :meth:`reason` (why to stop now, or None), :meth:`needs` (the units that still
    need samples, or None for no opinion), :meth:`limits` (what the next round
    may spend) and the observer hooks :meth:`start`, :meth:`after_round` and
    :meth:`finish`.

    Examples::

        >>> from captum_neuron_shapley.stopping import MaxTime, TopKSeparated
        >>> # separate the top 10, or stop after ten minutes, whichever is first
        >>> fs.attribute(x, target=y, stop=TopKSeparated(10) | MaxTime(600))
    """

    #: Whether the rule judges confidence intervals (and so may say which units
    #: still need samples).
    is_interval: bool = False
    #: Whether the rule only observes (never stops a run).
    is_observer: bool = False

    def __or__(self, other: "StoppingRule") -> "StoppingRule":
        return AnyOf(self, _check_rule(other))

    def __and__(self, other: "StoppingRule") -> "StoppingRule":
        return AllOf(self, _check_rule(other))

    def leaves(self) -> Iterator["StoppingRule"]:
        r"""The rules this one is made of (itself, for a single rule)."""
        yield self

    def resolve(self, defaults: RuleDefaults) -> "StoppingRule":
        r"""A copy with the run's defaults filled in (the rule itself if it has
        none to fill)."""
        return self

    def reason(self, run: Any) -> Optional[str]:
        r"""Why the run should stop now, or None."""
        return None

    def needs(self, run: Any) -> Optional[Tensor]:
        r"""Boolean mask of the units that still need samples, or None."""
        return None

    def limits(self, run: Any) -> Limits:
        r"""What the next round may spend."""
        return Limits()

    def start(self, run: Any) -> None:
        r"""Called once before the first round."""

    def after_round(self, run: Any) -> None:
        r"""Called after every round."""

    def finish(self, run: Any) -> None:
        r"""Called once when the run stops."""

    def settings(self) -> Dict[str, Any]:
        r"""Settings a checkpoint must match (interval rules only)."""
        return {}


def _check_rule(rule: Any) -> StoppingRule:
    if not isinstance(rule, StoppingRule):
        raise TypeError(
            "stopping rules combine only with other rules (TopKSeparated, "
            f"HalfWidth, MaxEvaluations, ...), got {type(rule).__name__}"
        )
    return rule


class _Composite(StoppingRule):
    def __init__(self, *rules: StoppingRule) -> None:
        flat: List[StoppingRule] = []
        for r in rules:
            flat.extend(r.rules if type(r) is type(self) else [r])  # type: ignore
        self.rules: List[StoppingRule] = flat

    def leaves(self) -> Iterator[StoppingRule]:
        for r in self.rules:
            yield from r.leaves()

    def resolve(self, defaults: RuleDefaults) -> StoppingRule:
        return type(self)(*(r.resolve(defaults) for r in self.rules))

    def _deciding(self) -> List[StoppingRule]:
        return [r for r in self.rules if not r.is_observer]

    def needs(self, run: Any) -> Optional[Tensor]:
        masks = [m for m in (r.needs(run) for r in self.rules) if m is not None]
        if not masks:
            return None
        out = masks[0].clone()
        for m in masks[1:]:
            out |= m
        return out

    def start(self, run: Any) -> None:
        for r in self.rules:
            r.start(run)

    def after_round(self, run: Any) -> None:
        for r in self.rules:
            r.after_round(run)

    def finish(self, run: Any) -> None:
        for r in self.rules:
            r.finish(run)

    def settings(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for r in self.rules:
            out.update(r.settings())
        return out

    def __repr__(self) -> str:
        sep = " | " if isinstance(self, AnyOf) else " & "
        return "(" + sep.join(map(repr, self.rules)) + ")"


class AnyOf(_Composite):
    r"""Stop when any of the rules says so (``a | b``)."""

    def reason(self, run: Any) -> Optional[str]:
        for r in self._deciding():
            why = r.reason(run)
            if why is not None:
                return why
        return None

    def limits(self, run: Any) -> Limits:
        out = Limits()
        for r in self._deciding():
            out = out.tighter(r.limits(run))
        return out


class AllOf(_Composite):
    r"""Stop when every rule says so (``a & b``)."""

    def reason(self, run: Any) -> Optional[str]:
        reasons = [r.reason(run) for r in self._deciding()]
        if not reasons or any(why is None for why in reasons):
            return None
        return reasons[0]

    def limits(self, run: Any) -> Limits:
        rules = self._deciding()
        if not rules:
            return Limits()
        out = rules[0].limits(run)
        for r in rules[1:]:
            out = out.looser(r.limits(run))
        return out


def _check_epsilon(epsilon: Any) -> None:
    if epsilon is not None and (
        isinstance(epsilon, bool)
        or not isinstance(epsilon, (int, float))
        or not epsilon >= 0
    ):
        raise ValueError(
            f"`epsilon` must be a non-negative number or None, got {epsilon!r}"
        )


@dataclass(frozen=True)
class _IntervalRule(StoppingRule):
    epsilon: Optional[float] = None
    bound: Optional[Bound] = None

    is_interval = True

    def __post_init__(self) -> None:
        _check_epsilon(self.epsilon)
        if self.bound is not None and not isinstance(self.bound, Bound):
            raise ValueError(
                f"`bound` must be a Bound (AnytimeBound(), FixedBound(), ...), got "
                f"{type(self.bound).__name__}"
            )

    def resolve(self, defaults: RuleDefaults) -> StoppingRule:
        bound = defaults.bound if self.bound is None else self.bound
        return dataclasses.replace(
            self,
            epsilon=defaults.epsilon if self.epsilon is None else float(self.epsilon),
            bound=bound.resolve(defaults.min_samples),
        )

    @property
    def eps(self) -> float:
        assert self.epsilon is not None, "resolve() the rule first"
        return float(self.epsilon)

    def radius(self, run: Any) -> Tensor:
        bound = self.bound or AnytimeBound()
        return bound.radius(run.stats, run.value_range)

    def reason(self, run: Any) -> Optional[str]:
        needs = self.needs(run)
        return "converged" if needs is not None and not bool(needs.any()) else None

    def settings(self) -> Dict[str, Any]:
        bound = self.bound or AnytimeBound()
        return {"epsilon": self.epsilon, **bound.settings()}


@dataclass(frozen=True)
class TopKSeparated(_IntervalRule):
    r"""Stop once the ``k`` most valuable units are separated from the rest: a
    unit needs samples while its interval straddles the boundary between the
    k-th and (k+1)-th largest estimates, widened by ``epsilon`` on each side (it
    is done once its lower bound is at least ``boundary - epsilon`` or its upper
    bound at most ``boundary + epsilon``).

    Args:
        k (int): How many top units to separate.
        epsilon (float, optional): Tolerance, in units of the metric. Default:
            1% of ``|V(all) - V(none)|``
        bound (Bound, optional): The confidence bound judged with. Default:
            :class:`~captum_neuron_shapley.bounds.AnytimeBound`
    """

    k: int = 0

    def __init__(
        self, k: int, epsilon: Optional[float] = None, bound: Optional[Bound] = None
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"`top_k` must be a positive integer, got {k!r}")
        object.__setattr__(self, "k", k)
        object.__setattr__(self, "epsilon", epsilon)
        object.__setattr__(self, "bound", bound)
        self.__post_init__()

    def needs(self, run: Any) -> Optional[Tensor]:
        mean = run.stats.mean
        if self.k >= mean.numel():
            raise ValueError(
                f"`top_k` must be smaller than the number of units ({mean.numel()}), "
                f"got {self.k}"
            )
        radius = self.radius(run)
        top = torch.topk(mean, self.k + 1).values
        boundary = 0.5 * (top[-2] + top[-1])
        return (mean - radius < boundary - self.eps) & (
            mean + radius > boundary + self.eps
        )

    def settings(self) -> Dict[str, Any]:
        return {"top_k": self.k, **super().settings()}


@dataclass(frozen=True)
class HalfWidth(_IntervalRule):
    r"""Stop once every unit's confidence interval has a half-width of at most
    ``epsilon`` (what ``attribute`` uses without ``top_k``).

    Args:
        epsilon (float, optional): The half-width, in units of the metric.
            Default: 1% of ``|V(all) - V(none)|``
        bound (Bound, optional): The confidence bound. Default:
            :class:`~captum_neuron_shapley.bounds.AnytimeBound`
    """

    def needs(self, run: Any) -> Optional[Tensor]:
        return self.radius(run) > self.eps

    def settings(self) -> Dict[str, Any]:
        return {"top_k": None, **super().settings()}


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"`{name}` must be positive or None, got {value!r}")


class MaxEvaluations(StoppingRule):
    r"""Stop once ``n`` coalitions have been evaluated (the game's setup
    included); a chain the budget cuts short is dropped.

    Args:
        n (int): The budget in coalitions evaluated.
    """

    def __init__(self, n: int) -> None:
        _positive("max_evaluations", n)
        self.n = int(n)

    def reason(self, run: Any) -> Optional[str]:
        return "max_evaluations" if run.n_evaluations >= self.n else None

    def limits(self, run: Any) -> Limits:
        return Limits(max_evaluations=self.n)

    def __repr__(self) -> str:
        return f"MaxEvaluations({self.n})"


class MaxPermutations(StoppingRule):
    r"""Stop once ``n`` permutation chains (coalitions, for the maximum
    sample reuse sampler) have been completed.

    Args:
        n (int): The budget in chains.
    """

    def __init__(self, n: int) -> None:
        _positive("max_permutations", n)
        self.n = int(n)

    def reason(self, run: Any) -> Optional[str]:
        return "max_permutations" if run.n_permutations >= self.n else None

    def limits(self, run: Any) -> Limits:
        return Limits(max_samples=max(self.n - run.n_permutations, 0))

    def __repr__(self) -> str:
        return f"MaxPermutations({self.n})"


class MaxTime(StoppingRule):
    r"""Stop after ``seconds`` of wall time, counting the game's setup; checked
    between forward passes (chains it cuts short are dropped).

    Args:
        seconds (float): The budget in seconds.
    """

    def __init__(self, seconds: float) -> None:
        _positive("max_time", seconds)
        self.seconds = float(seconds)

    def reason(self, run: Any) -> Optional[str]:
        return "max_time" if run.elapsed >= self.seconds else None

    def limits(self, run: Any) -> Limits:
        return Limits(deadline=run.started + self.seconds)

    def __repr__(self) -> str:
        return f"MaxTime({self.seconds:g})"


class Callback(StoppingRule):
    r"""Call ``fn(run)`` after every round; a true return value stops the run
    (``stop_reason`` ``"callback"``, not converged). ``run`` is the
    :class:`~captum_neuron_shapley.estimator.ShapleyEstimator`: its
    ``stats.mean``, ``radius()``, ``n_evaluations``, ``n_permutations`` and
    ``elapsed`` are current.

    Args:
        fn (Callable): ``fn(run) -> Optional[bool]``.
    """

    def __init__(self, fn: Callable[[Any], Optional[bool]]) -> None:
        if not callable(fn):
            raise ValueError(f"`callback` must be callable, got {type(fn).__name__}")
        self.fn = fn
        self._stop = False

    def start(self, run: Any) -> None:
        self._stop = False

    def after_round(self, run: Any) -> None:
        self._stop = run.agree(bool(self.fn(run)))

    def reason(self, run: Any) -> Optional[str]:
        return "callback" if self._stop else None

    def __repr__(self) -> str:
        return f"Callback({getattr(self.fn, '__name__', 'fn')})"


class Checkpoint(StoppingRule):
    r"""Save the run to ``path`` (atomically) every ``interval`` seconds and when
    it stops, and resume from ``path`` if it exists. It never stops a run;
    combine it with ``|``.

    Args:
        path (str): The checkpoint file. Resuming needs the same settings (the
            error names the ones that differ); with ``torch.distributed`` it must
            be on a file system every rank sees.
        interval (float, optional): Seconds between saves. Default: 60.0

    Examples::

        >>> stop = MaxTime(3600) | Checkpoint("filters.pt", interval=120)
        >>> res = fs.attribute(x, target=y, top_k=10, stop=stop, return_result=True)
    """

    is_observer = True

    def __init__(self, path: Any, interval: float = 60.0) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise ValueError(f"`interval` must be a number, got {interval!r}")
        if interval < 0:
            raise ValueError(f"`interval` must be non-negative, got {interval}")
        self.path = os.fspath(path)
        self.interval = float(interval)
        self._last = 0.0

    def start(self, run: Any) -> None:
        run.resume(self.path)
        self._last = time.monotonic()

    def after_round(self, run: Any) -> None:
        if run.agree(time.monotonic() - self._last >= self.interval):
            run.save(self.path)
            self._last = time.monotonic()

    def finish(self, run: Any) -> None:
        run.save(self.path)

    def __repr__(self) -> str:
        return f"Checkpoint({self.path!r}, interval={self.interval:g})"
