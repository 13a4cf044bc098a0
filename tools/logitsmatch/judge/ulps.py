"""How far two floats are apart in units in the last place, and whether they moved at all.

Logprobs come out of float32 (or bf16) tensors and are stored as float64 JSON numbers, so a
drift of one float32 ulp reads as 4.8e-7 at a logprob of -7.9. The ulp distance is counted in
float32 when every value of both sides is a float32 exactly, else in float64, and the width is
named beside the count so "1 ulp" is never ambiguous.
"""

from __future__ import annotations

import numpy as np

_WIDTHS = {"float32": (np.float32, np.int32, np.int64), "float64": (np.float64, np.int64, np.int64)}


def moved(golden: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Which values differ bitwise (float64 bit patterns: -0.0 moved from 0.0, a NaN did not from the same NaN)."""
    return golden.view(np.uint64) != current.view(np.uint64)


def ulp_width(*arrays: np.ndarray) -> str:
    """"float32" when every finite value of every array is exactly a float32, else "float64"."""
    for values in arrays:
        finite = values[np.isfinite(values)]
        with np.errstate(over="ignore"):
            if not np.array_equal(finite.astype(np.float32).astype(np.float64), finite):
                return "float64"
    return "float32"


def _ordered(values: np.ndarray, width: str) -> np.ndarray:
    """The float's bit pattern as an integer that grows with the float (-0.0 and +0.0 both 0)."""
    floating, signed, wide = _WIDTHS[width]
    bits = values.astype(floating).view(signed).astype(np.int64)
    lowest = np.int64(np.iinfo(signed).min)
    return np.where(bits < 0, lowest - bits, bits).astype(wide)


def ulp_distance(golden: np.ndarray, current: np.ndarray, width: str) -> np.ndarray:
    """|ulps| between each pair as uint64 at ``width`` (0 where either side is not finite)."""
    a, b = _ordered(golden, width), _ordered(current, width)
    same_sign = (a >= 0) == (b >= 0)
    with np.errstate(over="ignore"):
        near = np.abs(a - b).astype(np.uint64)
    far = np.abs(a).astype(np.uint64) + np.abs(b).astype(np.uint64)
    distance = np.where(same_sign, near, far)
    distance[~(np.isfinite(golden) & np.isfinite(current))] = 0
    return distance
