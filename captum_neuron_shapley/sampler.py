r"""Samplers: how marginal contributions are drawn.

A sampler is a small configuration object (:class:`PermutationSampler`, the
default, or :class:`~captum_neuron_shapley.msr.MSRSampler`) that ``attribute``
binds to a game when a run starts (:meth:`Sampler.bind` returns a bound copy; the
object passed in is never changed). Each round the estimator asks the bound
sampler for samples of the units that still need them (:meth:`Sampler.sample`);
a sample of a unit is an unbiased draw of its (truncated) Shapley value.

Permutation chains. A chain draws a random order of the units and removes them
one by one from the intact model. The drop in the metric when a unit is removed
is one sample of its Shapley value (the coalition before removal is uniformly
distributed in the Shapley sense). Only the states around *active* units are
evaluated: consecutive inactive units are removed together without an
evaluation. Once the metric falls to the truncation threshold the chain stops
and the remaining marginals count as 0. The whole chain uses the same evaluation
examples (paired differences).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .game import Batch, UnitGame
from .stopping import Limits

__all__ = [
    "Sampler",
    "PermutationSampler",
    "Samples",
    "make_sampler",
    "truncation_threshold",
    "AUTO_TRUNCATION_FRACTION",
    "DEFAULT_STRATA",
    "AUTO_BATCH_SIZE",
    "auto_batch_size",
]

#: One round's samples: ``(units, values)`` pairs (one sample of each listed
#: unit per pair) and the number of chains (or coalitions) completed.
Samples = Tuple[List[Tuple[Tensor, Tensor]], int]


class Sampler:
    r"""How marginal contributions are sampled (abstract).

    Subclasses are configuration objects: their constructor takes the user's
    settings, :meth:`bind` returns a copy attached to a game, a random generator
    and a truncation threshold, and the bound copy draws samples.
    """

    #: The name ``attribute(sampler=...)`` knows this sampler by.
    name: str = ""
    game: UnitGame
    generator: torch.Generator

    def bind(
        self,
        game: UnitGame,
        generator: torch.Generator,
        truncation: Optional[float] = None,
        paper: bool = False,
    ) -> "Sampler":
        r"""A copy of this sampler bound to ``game``, drawing from
        ``generator``.

        Args:
            game (UnitGame): The game to sample.
            generator (torch.Generator): The source of all randomness (CPU).
            truncation (float, optional): Stop a chain once ``V`` is at most
                this value (samplers that do not truncate ignore it).
            paper (bool): Fill unset settings as the original implementation
                did (independent chains, truncation after 6 states below the
                threshold).
        """
        bound = copy.copy(self)
        bound.game, bound.generator = game, generator
        bound._setup(truncation, paper)
        return bound

    def _setup(self, truncation: Optional[float], paper: bool) -> None:
        r"""Resolve the settings against the bound game."""

    @property
    def truncation(self) -> Optional[float]:
        r"""The truncation threshold applied, or None when the Shapley values
        themselves are the target."""
        return None

    @property
    def min_samples(self) -> int:
        r"""Samples a unit needs before an asymptotic interval is trusted."""
        return 20

    def chain_cost(self) -> Optional[float]:
        r"""Evaluations one sample takes (a chain, or a coalition), if known."""
        return None

    def sample(self, active: Tensor, limits: Limits, run: Any = None) -> Samples:
        r"""Draw one round of samples.

        Args:
            active (Tensor): Boolean mask of the units that need samples.
            limits (Limits): What the round may spend: the game's evaluation
                count it may reach, the chains (coalitions) it may complete and
                the time it must stop at.
            run (ShapleyEstimator, optional): The running estimator (its
                statistics and intervals), for samplers that choose by them.

        Returns:
            ``(samples, completed)``: a list of ``(units, values)`` pairs, one
            sample of each listed unit per pair, and the chains (coalitions)
            completed.
        """
        raise NotImplementedError

    def settings(self) -> Dict[str, Any]:
        r"""The settings of the bound sampler (checkpoints must match them)."""
        return {"sampler": self.name, "truncation": self.truncation}

    def state_dict(self) -> Dict[str, Tensor]:
        r"""State beyond the random generator's that a checkpoint keeps."""
        return {}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        r"""Restore :meth:`state_dict`."""

    def __repr__(self) -> str:
        shown = {
            k: v
            for k, v in vars(self).items()
            if not k.startswith("_") and k not in ("game", "generator")
        }
        args = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"{type(self).__name__}({args})"


class _Walk:
    r"""The state of one chain: which states it needs, what it has measured."""

    def __init__(
        self,
        perm: Tensor,
        active: Tensor,
        v_full: float,
        thr: Optional[float],
        batch: Optional[Batch] = None,
    ) -> None:
        n = perm.numel()
        self.perm = perm
        self.batch = batch
        self.pos = active[perm].nonzero().flatten()  # positions of active units
        self.rank = torch.empty(n, dtype=torch.long)
        self.rank[perm] = torch.arange(n)
        self.values = torch.full((n + 1,), float("nan"), dtype=torch.float64)
        self.values[0] = v_full
        needed = torch.unique(torch.cat([self.pos, self.pos + 1]))
        self.needed = needed[needed > 0]
        self.cursor, self.below, self.evaluated = 0, 0, 0
        self.stop: Optional[int] = None
        if self.pos.numel() == 0 or (thr is not None and v_full <= thr):
            self.stop = 0
            self.cursor = self.needed.numel()

    @property
    def remaining(self) -> int:
        r"""States still to evaluate (at most; truncation may stop it sooner)."""
        return self.needed.numel() - self.cursor

    def expected(self, cost: Optional[float]) -> float:
        r"""States this walk is expected to still evaluate: ``cost`` (the mean
        evaluations of a completed chain, when known) less those done, within
        :attr:`remaining`."""
        if cost is None:
            return float(self.remaining)
        return min(float(self.remaining), max(cost - self.evaluated, 1.0))

    @property
    def done(self) -> bool:
        return self.cursor >= self.needed.numel()

    def take(self, k: int) -> Tensor:
        r"""The next ``k`` positions to evaluate, as ``(k, n)`` present-unit masks."""
        p = self.needed[self.cursor : self.cursor + k]
        self.cursor += p.numel()
        self.pending = p
        return self.rank.unsqueeze(0) >= p.unsqueeze(1)  # present: not yet removed

    def record(self, values: Tensor, thr: Optional[float], patience: int) -> None:
        r"""Store the values of the last positions taken; check truncation."""
        self.values[self.pending] = values
        self.evaluated += int(values.numel())
        if thr is None:
            return
        for q, v in zip(self.pending.tolist(), values.tolist()):
            self.below = self.below + 1 if v <= thr else 0
            if self.below >= patience:
                self.stop, self.cursor = q, self.needed.numel()
                return

    def projected(self, thr: Optional[float]) -> float:
        r"""States a walk cut short would have needed: those up to the position
        where the metric, falling linearly from the intact model's value as it did
        so far, would reach the threshold (all of them without truncation)."""
        total = float(self.needed.numel())
        done = self.needed[: self.cursor]
        if thr is None or done.numel() == 0:
            return total
        v0, last = float(self.values[0]), float(self.values[int(done[-1])])
        if not v0 > last > thr:
            return total
        stop = float(done[-1]) * (v0 - thr) / (v0 - last)
        return float(max((self.needed <= stop).sum(), done.numel()))

    def result(self) -> Optional[Tuple[Tensor, Tensor]]:
        r"""``(units, marginals)``, or None for a walk cut short by the budget."""
        if not self.done:
            return None
        values = self.values
        if self.stop is not None:
            values[self.stop + 1 :] = values[self.stop]
        return self.perm[self.pos], values[self.pos] - values[self.pos + 1]


class PermutationSampler(Sampler):
    r"""Truncated permutation chains, stratified by position (the default).

    Args:
        strata (int, optional): Draw chains in cycles of ``strata`` cyclic shifts
            of one random order, so that over a cycle every unit is removed once
            in each band of ``n_units / strata`` positions (exactly when
            ``strata`` divides ``n_units``, within a position otherwise); the
            cycle's mean marginal is one sample: unbiased (each chain is a
            uniformly random order), with the variance between early, middle and
            truncated positions removed. ``1``: independent chains. Exclusive
            with ``antithetic``. Default: :data:`DEFAULT_STRATA` (at most the
            number of units); 1 with ``antithetic`` or a
            :class:`~captum_neuron_shapley.bounds.PaperBound`
        antithetic (bool, optional): Pair each chain with its reversed order (the
            pair's mean marginal is one sample). Default: False
        batch_size (int, str or None, optional): Evaluate each chain on this
            many examples drawn at random without replacement (the same ones
            along the whole chain, fresh ones for the next chain), as the
            original paper did. The values are the same as on all examples when
            the metric is a mean over examples (its ``decomposable``), since the
            Shapley value is linear in the game; each evaluation costs a fraction
            of one on all examples, and the noise of the batch is part of every
            sample, so the intervals include it. ``"auto"``:
            :func:`auto_batch_size` (64 examples for a mean-over-examples metric
            on more than 128 examples, all examples otherwise). None: every
            chain on all examples. With a ``DataLoader``, batches are read from
            it (see :mod:`captum_neuron_shapley.streaming`). Default: ``"auto"``
        chains_per_round (int or str, optional): Sets of chains (one chain, an
            antithetic pair or a cycle of ``strata`` shifts) walked together,
            their states sharing forward passes (unbiased, as every set is drawn
            independently). A pass holds at most ``perturbations_per_eval``
            times the evaluation set's examples, as Captum bounds a pass: on
            batches of ``b`` of ``N`` examples, up to
            ``perturbations_per_eval * N // b`` states (:meth:`pass_size`), at
            most ``max(perturbations_per_eval, N // b)`` of one chain.
            ``"auto"``: enough sets that one state of each chain fills one copy
            of the set, ``N // b`` states (1 on all examples).
            Default: ``"auto"``
        patience (int, optional): Consecutive evaluated states at or below the
            truncation threshold before a chain stops. Default: 1 (6 with a
            ``PaperBound``, as the original code)

    Examples::

        >>> # independent chains, each on its own 128 random examples
        >>> sampler = PermutationSampler(strata=1, batch_size=128)
        >>> phi = fs.attribute(x, target=y, top_k=10, sampler=sampler)
    """

    name = "chains"

    def __init__(
        self,
        strata: Optional[int] = None,
        antithetic: bool = False,
        batch_size: Union[None, int, str] = "auto",
        chains_per_round: Union[int, str] = "auto",
        patience: Optional[int] = None,
    ) -> None:
        for arg, value in (("strata", strata), ("patience", patience)):
            _check_positive_int(arg, value)
        if batch_size != "auto":
            _check_positive_int("batch_size", batch_size)
        if chains_per_round != "auto":
            _check_positive_int("chains_per_round", chains_per_round, False)
        if not isinstance(antithetic, bool):
            raise ValueError(f"`antithetic` must be a bool, got {antithetic!r}")
        if antithetic and strata is not None and strata > 1:
            raise ValueError(
                "`antithetic` and `strata` > 1 cannot be combined; choose one"
            )
        self.strata = strata
        self.antithetic = antithetic
        self.batch_size = batch_size
        self._chains_per_round = chains_per_round
        self.patience = patience
        self._truncation: Optional[float] = None
        self._costs: List[int] = []
        self._projected: Optional[float] = None

    def _setup(self, truncation: Optional[float], paper: bool) -> None:
        n = self.game.n_units
        if self.strata is None:
            self.strata = 1 if self.antithetic or paper else min(DEFAULT_STRATA, n)
        elif self.strata > n:
            raise ValueError(
                f"`strata` must be at most the number of units ({n}), got "
                f"{self.strata}"
            )
        if self.patience is None:
            self.patience = PAPER_PATIENCE if paper else 1
        if self.batch_size == "auto":
            self.batch_size = auto_batch_size(self.game)
        self._truncation = truncation
        self._costs, self._projected = [], None

    @property
    def truncation(self) -> Optional[float]:
        return self._truncation

    def pass_size(self) -> int:
        r"""States one forward pass may hold: ``perturbations_per_eval`` copies of
        the evaluation set's examples, as Captum bounds a pass. So
        ``perturbations_per_eval * N // b`` states on per-chain batches of ``b``
        of ``N`` examples, and ``perturbations_per_eval`` on all examples or
        with a ``DataLoader`` (whose passes hold one of its batches per state).
        """
        pass_states = getattr(self.game, "pass_states", None)
        if pass_states is None:  # a game without per-chain batches
            return self.game.perturbations_per_eval
        return pass_states(self.examples_per_chain)

    @property
    def chains_per_round(self) -> int:
        r"""Sets of chains per round; ``"auto"`` resolves, once bound to a game,
        to enough sets that one state of each chain fills one copy of the
        evaluation set, ``N // b`` states (1 on all examples)."""
        cpr = self._chains_per_round
        if isinstance(cpr, int):
            return cpr
        if getattr(self, "game", None) is None:
            return 1
        copies = self.pass_size() // self.game.perturbations_per_eval
        return max(1, -(-copies // self.set_size))

    @property
    def set_size(self) -> int:
        r"""Chains whose marginals are averaged into one sample."""
        return 2 if self.antithetic else int(self.strata or 1)

    @property
    def min_samples(self) -> int:
        r"""20 chains' worth of samples (20 samples, 10 antithetic pairs or
        ``ceil(20 / strata)`` cycles), at least 5."""
        return max(5, -(-20 // self.set_size))

    def settings(self) -> Dict[str, Any]:
        return {
            **super().settings(),
            "batch_size": self.batch_size,
            "antithetic": self.antithetic,
            "strata": self.strata,
            "chains_per_round": self.chains_per_round,
            "patience": self.patience,
        }

    def _subset(self) -> Optional[Batch]:
        r"""The examples of the next set of chains (None: all of them)."""
        size = self.batch_size  # an int or None once bound
        if not isinstance(size, int) or (
            not self.game.streamed and size >= self.game.n_examples
        ):
            return None
        return self.game.draw(self.generator, size)

    @property
    def examples_per_chain(self) -> int:
        r"""Examples each chain is evaluated on."""
        n = self.game.n_examples
        size = self.batch_size
        return n if not isinstance(size, int) else min(size, n)

    def _draw_set(self, size: int) -> List[Tensor]:
        r"""One random removal order and its companions: its reverse (antithetic),
        or its ``strata`` cyclic shifts by ``j * n / strata`` places, so that over
        the set every unit is removed once in each ``n / strata``-wide band of
        positions. Each order on its own is a uniformly random permutation."""
        n = self.game.n_units
        perm = torch.randperm(n, generator=self.generator)
        if self.antithetic:
            return [perm, perm.flip(0)][:size]
        strata = self.set_size
        return [perm.roll(j * n // strata) for j in range(size)]

    def sample(self, active: Tensor, limits: Limits, run: Any = None) -> Samples:
        r"""Draw up to ``chains_per_round`` sets of chains (a set is one chain, an
        antithetic pair or a cycle of ``strata`` shifts; at most
        ``limits.max_samples`` chains in all, the last set cut short if needed)
        and walk them.

        Returns the samples, one ``(units, marginals)`` per set (the marginals of
        a unit along the set's chains are averaged into one sample, since they
        are not independent), and the number of chains completed. Chains cut short
        by ``limits.max_evaluations`` (a limit on the game's evaluation count) are
        dropped: their evaluations count, their marginals, which come only from
        the large coalitions early in the chain, do not; a set whose chains were
        not all completed gives the mean of those that were. Chains still running
        at ``limits.deadline`` (a ``time.monotonic()`` value) are cut short
        likewise.
        """
        limit = self.chains_per_round * self.set_size
        if limits.max_samples is not None:
            limit = min(limit, limits.max_samples)
        perms: List[Tensor] = []
        batches: List[Optional[Batch]] = []
        sizes: List[int] = []  # chains per set, in walking order
        while len(perms) < limit:
            chains = self._draw_set(min(self.set_size, limit - len(perms)))
            sizes.append(len(chains))
            batch = self._subset()  # one set, the same examples
            perms += chains
            batches += [batch] * len(chains)
        walked = self.walk(
            perms, active, batches, limits.max_evaluations, limits.deadline
        )
        done = sum(w is not None for w in walked)
        if self.set_size > 1:
            walked = self._set_means(walked, sizes)
        return [w for w in walked if w is not None], done

    def _set_means(
        self, walked: List[Optional[Tuple[Tensor, Tensor]]], sizes: List[int]
    ) -> List[Optional[Tuple[Tensor, Tensor]]]:
        r"""One sample per set: the mean of its completed chains' marginals (each
        chain is a uniformly random order; None when no chain of the set was
        completed)."""
        out: List[Optional[Tuple[Tensor, Tensor]]] = []
        i = 0
        for size in sizes:
            chains = [c for c in walked[i : i + size] if c is not None]
            i += size
            if not chains:
                out.append(None)
                continue
            dense = torch.zeros(len(chains), self.game.n_units, dtype=torch.float64)
            for row, (units, marginals) in zip(dense, chains):
                row[units] = marginals
            units = chains[0][0]
            out.append((units, dense[:, units].mean(0)))
        return out

    def chain(
        self,
        perm: Tensor,
        active: Tensor,
        batch: Optional[Batch] = None,
        max_evaluations: Optional[int] = None,
    ) -> Optional[Tuple[Tensor, Tensor]]:
        r"""Walk one removal order ``perm`` (on ``batch``, or on all examples);
        returns ``(units, marginals)``, or None when ``max_evaluations`` cut it
        short."""
        return self.walk([perm], active, [batch], max_evaluations)[0]

    def walk(
        self,
        perms: List[Tensor],
        active: Tensor,
        batches: Optional[Sequence[Optional[Batch]]] = None,
        max_evaluations: Optional[int] = None,
        deadline: Optional[float] = None,
    ) -> List[Optional[Tuple[Tensor, Tensor]]]:
        r"""Walk removal orders in lockstep, each on its own examples
        (``batches``, one per order; None: all examples): each forward pass
        evaluates up to :meth:`pass_size` states, shared fairly among the chains
        still running; truncation is checked per chain after each pass.
        Stops once the game's evaluation count reaches ``max_evaluations``; when
        what is left of it may not finish every chain, the chains are served in
        order instead, so that as many as possible complete. Stops (leaving the
        running chains unfinished) once ``time.monotonic()`` passes
        ``deadline``."""
        thr, patience = self.truncation, int(self.patience or 1)
        ppe = self.game.perturbations_per_eval
        cost = self.chain_cost() if self._costs else None
        per_chain = max(ppe, self.pass_size() // ppe)
        batches = list(batches) if batches is not None else [None] * len(perms)
        walks = [
            _Walk(p, active, self.game.full_value(b), thr, b)
            for p, b in zip(perms, batches)
        ]
        while True:
            running = [w for w in walks if not w.done]
            left: float = math.inf
            if max_evaluations is not None:
                left = max_evaluations - self.game.n_evaluations
            budget = int(min(self.pass_size(), left))
            if not running or budget <= 0:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            if left < sum(w.expected(cost) for w in running):
                # the budget may not finish every chain: finish them in order,
                # state by state, so that as many as possible complete (a cut
                # chain is dropped)
                budget = share = min(budget, ppe)
            else:
                # a fair share of the pass (ceil), at most one copy of the set's
                # worth of one chain (or perturbations_per_eval states): a chain
                # may evaluate a few states past its truncation point, which
                # costs less than passes holding fewer states
                share = min(-(-budget // len(running)), per_chain)
            masks: List[Tensor] = []
            takers = []
            for w in running:
                k = min(share, budget - sum(m.shape[0] for m in masks))
                if k <= 0:
                    break
                masks.append(w.take(k))
                takers.append(w)
            values = self.game.value(torch.cat(masks), _pass_rows(takers, masks))
            start = 0
            for w, m in zip(takers, masks):
                w.record(values[start : start + m.shape[0]], thr, patience)
                start += m.shape[0]
        for w in walks:
            if w.done:
                self._costs.append(w.evaluated)
            elif w.evaluated:
                self._projected = max(self._projected or 0.0, w.projected(thr))
        return [w.result() for w in walks]

    def chain_cost(self) -> Optional[float]:
        r"""Evaluations a chain takes: the mean over the chains completed so far;
        without one, what the most advanced chain cut short would have needed
        (:meth:`_Walk.projected`); None before any evaluation."""
        if self._costs:
            return sum(self._costs) / len(self._costs)
        return self._projected


def _pass_rows(walks: List[_Walk], masks: List[Tensor]) -> Any:
    r"""The examples of a pass: all (None), one batch shared by every state, or
    one batch per state."""
    first = walks[0].batch
    if all(w.batch is first for w in walks):
        return first
    return [w.batch for w, m in zip(walks, masks) for _ in range(m.shape[0])]


#: Examples per chain of ``batch_size="auto"``.
AUTO_BATCH_SIZE = 64


def auto_batch_size(game: UnitGame) -> Optional[int]:
    r"""The examples each chain is evaluated on by default: all of them unless
    the metric is a mean over examples (``decomposable``) and there are more
    than ``2 * AUTO_BATCH_SIZE``; then :data:`AUTO_BATCH_SIZE`, or more for a
    metric that counts examples (bounded in ``[0, 1]``, such as accuracy) when
    the drop from ``V(all)`` to ``V(none)`` is small: at least 40 examples per
    unit of that drop, so that the truncation threshold (5% of the drop above
    ``V(none)``) lies at least two examples from ``V(none)`` on a batch. Small
    slices (one class's examples) keep the whole set; so do ratio metrics
    (recall, subgroup accuracy), whose value on a batch is not an unbiased
    estimate of their value on the set."""
    n = game.n_examples
    if not getattr(game.metric, "decomposable", False):
        return None
    if n <= 2 * AUTO_BATCH_SIZE:
        return None
    size = AUTO_BATCH_SIZE
    if getattr(game.metric, "bounds", None) == (0.0, 1.0):
        drop = abs(game.full_value() - game.empty_value())
        if drop > 0:
            size = max(size, math.ceil(2.0 / (AUTO_TRUNCATION_FRACTION * drop)))
    return None if size >= n else size


#: Cycles of this many cyclic shifts by default (see ``PermutationSampler``).
DEFAULT_STRATA = 4
#: Consecutive states below the threshold before the original code truncated.
PAPER_PATIENCE = 6


def _check_positive_int(name: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")


def make_sampler(spec: Any) -> Sampler:
    r"""The sampler for ``attribute(sampler=...)``: None or ``"chains"`` (a
    default :class:`PermutationSampler`), ``"msr"`` (a default
    :class:`~captum_neuron_shapley.msr.MSRSampler`) or a :class:`Sampler`."""
    if isinstance(spec, Sampler):
        return spec
    if spec is None or spec == "chains":
        return PermutationSampler()
    if spec == "msr":
        from .msr import MSRSampler

        return MSRSampler()
    raise ValueError(
        "`sampler` must be 'chains', 'msr' or a Sampler object (PermutationSampler"
        f"(...), MSRSampler(...)), got {spec!r}"
    )


AUTO_TRUNCATION_FRACTION = 0.05


def truncation_threshold(
    truncation: Any, v_all: float, v_none: float
) -> Optional[float]:
    r"""The threshold a chain stops at, from the user's ``truncation``: a number,
    ``None`` (never) or ``"auto"``: ``AUTO_TRUNCATION_FRACTION`` of the way from
    ``V(none)`` to ``V(all)``, or no truncation when ``V(all) <= V(none)``."""
    if truncation is None:
        return None
    if isinstance(truncation, str):
        if truncation != "auto":
            raise ValueError(
                f"`truncation` must be a number, 'auto' or None, got {truncation!r}"
            )
        if v_all <= v_none:
            return None  # removing every unit does not hurt: nothing to truncate
        return v_none + AUTO_TRUNCATION_FRACTION * (v_all - v_none)
    if isinstance(truncation, bool) or not isinstance(truncation, (int, float)):
        raise ValueError(
            f"`truncation` must be a number, 'auto' or None, got {truncation!r}"
        )
    if not math.isfinite(truncation):
        raise ValueError(f"`truncation` must be finite, got {truncation}")
    if v_all <= truncation:
        raise ValueError(
            f"the intact model's metric ({v_all:.4g}) is already at or below "
            f"`truncation` ({truncation:.4g}): every chain would stop at once. Lower "
            "`truncation` or pass None"
        )
    return float(truncation)
