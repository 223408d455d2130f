r"""Number and word formatting shared by every renderer: one number of decimals
for a value and its spread, plurals, and ``k`` ranges."""

from __future__ import annotations

import math
from typing import Any, Iterable, List, Optional

__all__ = ["num", "spread", "plural", "ranges", "finite"]


def num(x: Optional[float], nd: int = 3) -> str:
    r"""``x`` with ``nd`` decimals; ``—`` for None or nan."""
    if x is None or (isinstance(x, float) and x != x):
        return "—"
    return f"{x:.{nd}f}"


def spread(value: Optional[float], lo: float, hi: float, nd: int = 3) -> str:
    r"""``value [lo, hi]``, all three with the same decimals (so that the value
    never seems to lie outside its own range).

    Examples::

        >>> spread(0.6875, 0.6875, 0.7625)
        '0.688 [0.688, 0.763]'
    """
    return f"{num(value, nd)} [{num(lo, nd)}, {num(hi, nd)}]"


def plural(n: float, word: str, many: Optional[str] = None) -> str:
    r"""``"1 thread"``, ``"2 threads"`` (``many``: an irregular plural).

    Examples::

        >>> plural(1, "thread"), plural(3, "class", "classes")
        ('1 thread', '3 classes')
    """
    shown = f"{n}" if isinstance(n, int) else f"{n:g}"
    return f"{shown} {word if n == 1 else (many or word + 's')}"


def ranges(ks: Iterable[int]) -> str:
    r"""``[1, 2, 3, 5, 7, 8]`` -> ``"1-3, 5, 7-8"``."""
    out: List[str] = []
    start: Optional[int] = None
    prev: Optional[int] = None
    for k in sorted(ks):
        if start is None:
            start = prev = k
        elif prev is not None and k == prev + 1:
            prev = k
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = k
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(out)


def finite(x: Any) -> Any:
    r"""JSON has no NaN: ``nan`` and infinities become None (recursively)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x
