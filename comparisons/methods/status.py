r"""What budget a method had and whether it finished (:class:`MethodStatus`):
every table of a report marks a method that stopped on its budget before its
own criterion, or gave no result, and says why."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MethodStatus"]


@dataclass
class MethodStatus:
    r"""What budget a method had and whether it finished.

    Attributes:
        budget (str): The budget, in words (``"max_evaluations 6000"``, ``"all 397
            examples, 20 steps"``, ``"12.0 s"``).
        used (str): What it used (evaluations, chains, examples).
        complete (bool): False when it stopped on a budget before its own
            criterion (Shapley not converged or on fewer than
            :data:`~comparisons.methods.shapley.MIN_CHAINS` chains; a gradient
            method on part of its data).
        skipped (bool): It did not run (its cost did not fit); ``reason`` says
            why.
        reason (str): Why it is incomplete or skipped.
    """

    budget: str = ""
    used: str = ""
    complete: bool = True
    skipped: bool = False
    reason: str = ""

    def add_reason(self, reason: str) -> None:
        r"""Append ``reason`` to the reasons given so far."""
        self.reason = (self.reason + "; " if self.reason else "") + reason
