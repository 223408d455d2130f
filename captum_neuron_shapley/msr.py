r"""Maximum-sample-reuse sampling (``attribute(sampler="msr")``): random
coalitions stratified by size, each of which gives a (regression-adjusted) sample
of every unit's untruncated Shapley value."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from .sampler import Sampler, Samples
from .stopping import Limits

__all__ = ["MSRSampler", "MSR_MIN_SAMPLES"]

#: ``min_samples`` of the asymptotic bounds with this sampler: four rounds of 8
#: coalitions.
MSR_MIN_SAMPLES = 32


class MSRSampler(Sampler):
    r"""Maximum-sample-reuse sampling: random coalitions, stratified by size, each
    giving one sample of *every* unit's Shapley value.

    The Shapley value of unit ``i`` is

    .. math::
        \phi_i = \frac{V(N) - V(\emptyset)}{n} + \frac1n \sum_{t=1}^{n-1} D_{i,t},
        \qquad D_{i,t} = \mathbb E[V(A) \mid i \in A] - \mathbb E[V(A) \mid
        i \notin A]

    over uniformly random coalitions ``A`` of ``t`` units. A round draws sizes
    ``t`` with probabilities ``w_t`` and a uniformly random coalition of each
    size; with ``p = t / n`` and ``H_i = [i \in A] / p - [i \notin A] / (1 - p)``
    the sample of unit ``i`` is

    .. math::
        Y_i = \frac{(V(A) - c(A)) H_i + g_t \kappa_i}{n w_t}
        + \frac{V(N) - V(\emptyset)}{n},

    where the control ``c(A) = m_t + g_t (z(A) - t B / n)`` removes most of the
    variation of ``V`` between coalitions: ``m_t`` is the mean of ``V`` at size
    ``t`` (smoothed over neighbouring sizes), ``z(A)`` the sum of the current
    estimates ``b`` of the units in ``A``, ``B = \sum_j b_j``, and ``g_t`` a
    slope per band of sizes; ``\kappa_i = b_i - (B - b_i) / (n - 1)`` adds the
    control's own contribution back exactly (regression-adjusted Monte Carlo).
    The allocation ``w`` follows where ``V`` varies (Neyman allocation learnt
    from the residuals, mixed with the uniform one). Every fitted quantity
    comes from earlier rounds only, so ``E[Y_i] = phi_i`` exactly (no truncation:
    the target is the Shapley value itself), and the samples of one coalition add
    up to ``V(N) - V(\emptyset)``: the estimates satisfy efficiency at every
    step.

    Unlike permutation chains, whose marginal contributions are paired
    differences, ``Y`` is an unpaired contrast between coalitions; stratifying
    by size and the control make it competitive, and since every evaluation
    informs every unit it wins where marginals are small and noisy compared with
    the differences between units (many redundant units). The active set is
    ignored: every unit gets a sample from every coalition.

    Args:
        coalitions_per_round (int, optional): Coalitions evaluated per round.
            Default: ``max(8, perturbations_per_eval)``
        uniform_mix (float, optional): Weight of the uniform size distribution
            in ``w``. Default: 0.3

    Examples::

        >>> # every evaluation informs every unit (no truncation)
        >>> phi = ns.attribute(x, target=y, sampler=MSRSampler(), max_evaluations=4000)
    """

    name = "msr"

    def __init__(
        self, coalitions_per_round: Optional[int] = None, uniform_mix: float = 0.3
    ) -> None:
        if coalitions_per_round is not None and (
            isinstance(coalitions_per_round, bool)
            or not isinstance(coalitions_per_round, int)
            or coalitions_per_round < 1
        ):
            raise ValueError(
                "`coalitions_per_round` must be a positive integer or None, got "
                f"{coalitions_per_round!r}"
            )
        if not 0.0 <= uniform_mix <= 1.0:
            raise ValueError(f"`uniform_mix` must lie in [0, 1], got {uniform_mix!r}")
        self.coalitions_per_round = coalitions_per_round
        self.uniform_mix = float(uniform_mix)

    def _setup(self, truncation: Optional[float], paper: bool) -> None:
        game = self.game
        n = game.n_units
        if n < 2:
            raise ValueError(f"sampler='msr' needs at least 2 units, the game has {n}")
        self.n = n
        self.per_round = self.coalitions_per_round or max(
            8, game.perturbations_per_eval
        )
        self.v_all, self.v_none = game.full_value(), game.empty_value()
        self.sizes = torch.arange(n + 1, dtype=torch.float64)
        self.n_bands = min(8, n - 1)
        band = ((self.sizes - 1).clamp_min(0) * self.n_bands / (n - 1)).long()
        self.band = band.clamp(max=self.n_bands - 1)
        self.uniform = torch.zeros(n + 1, dtype=torch.float64)
        self.uniform[1:n] = 1.0 / (n - 1)
        # everything below is fitted on earlier rounds (the state of a checkpoint)
        self.state: Dict[str, Tensor] = {
            "w": self.uniform.clone(),
            "m": self.v_none + (self.v_all - self.v_none) * self.sizes / n,
            "g": torch.zeros(self.n_bands, dtype=torch.float64),
            "b": torch.zeros(n, dtype=torch.float64),
            "sum_v": torch.zeros(n + 1, dtype=torch.float64),
            "sum_r2": torch.zeros(n + 1, dtype=torch.float64),
            "count": torch.zeros(n + 1, dtype=torch.float64),
            "sum_y": torch.zeros(n, dtype=torch.float64),
            "zz": torch.zeros(self.n_bands, dtype=torch.float64),
            "zr": torch.zeros(self.n_bands, dtype=torch.float64),
        }

    @property
    def min_samples(self) -> int:
        r"""Four rounds of 8 coalitions."""
        return MSR_MIN_SAMPLES

    def chain_cost(self) -> Optional[float]:
        r"""One evaluation per coalition (a sample of every unit)."""
        return 1.0

    def settings(self) -> Dict[str, Any]:
        return {**super().settings(), "coalitions_per_round": self.per_round}

    def state_dict(self) -> Dict[str, Tensor]:
        return {k: v.clone() for k, v in self.state.items()}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        for k, v in self.state.items():
            if state[k].shape != v.shape:
                raise ValueError(f"sampler state {k!r} has the wrong shape")
            self.state[k] = state[k].to(torch.float64).clone()

    def sample(self, active: Tensor, limits: Limits, run: Any = None) -> Samples:
        r"""Evaluate up to ``coalitions_per_round`` coalitions (fewer when
        ``limits.max_evaluations``, a limit on the game's evaluation count, or
        ``limits.max_samples``, here a number of coalitions, is smaller); returns
        one ``(all units, samples)`` per coalition and the number of coalitions.
        ``active`` is ignored: every coalition samples every unit."""
        m = self.per_round
        if limits.max_evaluations is not None:
            m = min(m, limits.max_evaluations - self.game.n_evaluations)
        if limits.max_samples is not None:
            m = min(m, limits.max_samples)
        if m <= 0:
            return [], 0
        t = torch.multinomial(self.state["w"], m, True, generator=self.generator)
        keys = torch.rand(m, self.n, generator=self.generator)
        keep = keys.argsort(1).argsort(1) < t.unsqueeze(1)
        v = self.game.value(keep)
        y, z, resid = self.contributions(keep, t, v)
        self._update(t, v, y, z, resid)
        units = torch.arange(self.n)
        return [(units, y[j]) for j in range(m)], m

    def contributions(
        self, keep: Tensor, t: Tensor, v: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor]:
        r"""``(m, n)`` samples of every unit from coalitions ``keep`` of sizes
        ``t`` with values ``v`` (and the control's covariate and residuals)."""
        st, n = self.state, self.n
        td = t.to(torch.float64)
        p = (td / n).unsqueeze(1)
        a = keep.to(torch.float64)
        h = a / p - (1 - a) / (1 - p)
        b = st["b"]
        big_b = float(b.sum())
        g = st["g"][self.band[t]]
        z = a @ b - td * big_b / n
        resid = v - st["m"][t] - g * z
        kappa = b - (big_b - b) / (n - 1)
        scale = (n * st["w"][t]).unsqueeze(1)
        y = (resid.unsqueeze(1) * h + g.unsqueeze(1) * kappa) / scale
        return y + (self.v_all - self.v_none) / n, z, resid

    def _update(self, t: Tensor, v: Tensor, y: Tensor, z: Tensor, r: Tensor) -> None:
        st, n = self.state, self.n
        st["sum_v"].index_add_(0, t, v)
        st["count"].index_add_(0, t, torch.ones_like(v))
        st["sum_r2"].index_add_(0, t, r.pow(2))
        st["sum_y"] += y.sum(0)
        # slopes of the residual of the size mean on z, per band of sizes
        r0 = v - st["m"][t]
        st["zz"].index_add_(0, self.band[t], z.pow(2))
        st["zr"].index_add_(0, self.band[t], z * r0)
        total = float(st["count"].sum())
        st["b"] = st["sum_y"] / total
        st["g"] = torch.where(st["zz"] > 0, st["zr"] / st["zz"].clamp_min(1e-300), 0.0)
        # size means: count-weighted moving average over neighbouring sizes
        num, den = self._smooth(st["sum_v"]), self._smooth(st["count"])
        line = self.v_none + (self.v_all - self.v_none) * self.sizes / n
        st["m"] = torch.where(den > 0, num / den.clamp_min(1e-300), line)
        st["m"][0], st["m"][n] = self.v_none, self.v_all
        # Neyman allocation from the residual spread, mixed with uniform
        if total >= 4 * self.per_round:
            var = self._smooth(st["sum_r2"]) / den.clamp_min(1)
            pooled = float(st["sum_r2"].sum()) / total
            var = torch.where(den > 0, var, pooled)
            p = self.sizes / n
            a = (var / (p * (1 - p)).clamp_min(1e-300)).sqrt()
            a[0] = a[n] = 0.0
            if float(a.sum()) > 0:
                mix = self.uniform_mix
                st["w"] = (1 - mix) * a / a.sum() + mix * self.uniform

    def _smooth(self, x: Tensor) -> Tensor:
        h = max(2, self.n // 40)
        kernel = torch.ones(1, 1, 2 * h + 1, dtype=torch.float64)
        return torch.nn.functional.conv1d(x.view(1, 1, -1), kernel, padding=h).view(-1)
