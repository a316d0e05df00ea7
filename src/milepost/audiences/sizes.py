"""Sizes from a sample: a share of sampled users scaled to the base it represents, with a 95% Wilson
score interval (finite-population corrected), "too small" below a number of hits, exact when the
sample is everyone (SPEC §5)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

Z = 1.959964  # 95%
TOO_SMALL_HITS = 10  # below this many sampled members the relative error passes ~60%: show "~"


@dataclass(frozen=True)
class Ratio:
    hits: int
    of: int  # sampled users it is a share of


def wilson(hits: int, n: int, fpc: float = 1.0) -> tuple[float, float]:
    """95% Wilson score interval for a proportion, the variance shrunk by the finite-population factor."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    z2 = Z * Z * fpc
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = math.sqrt(z2) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def size_of(ratio: Ratio, base: int, base_sampled: int, exact: bool) -> dict[str, Any]:
    """A `size` object: `base` users are represented by `base_sampled` sampled ones."""
    out: dict[str, Any] = {"sample_size": ratio.of, "sample_hits": ratio.hits}
    if exact:
        value = ratio.hits if base_sampled == base else round(base * ratio.hits / max(ratio.of, 1))
        return {"kind": "estimate", "value": value, "low": value, "high": value, "exact": True, **out}
    fpc = max(0.0, (base - base_sampled) / (base - 1)) if base > 1 else 0.0
    lo, hi = wilson(ratio.hits, ratio.of, fpc)
    if ratio.hits < TOO_SMALL_HITS:
        return {"kind": "too_small", "upper_bound": math.ceil(hi * base), "exact": False, **out}
    value = round(base * ratio.hits / ratio.of)
    return {
        "kind": "estimate",
        "value": value,
        "low": math.floor(lo * base),
        "high": math.ceil(hi * base),
        "exact": False,
        **out,
    }
