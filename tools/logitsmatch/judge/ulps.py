"""How far two floats are apart in units in the last place, and whether they moved at all.

Logprobs come out of float32 (or bf16) tensors and are stored as float64 JSON numbers, so a
drift of one float32 ulp reads as 4.8e-7 at a logprob of -7.9. The ulps are counted in the
result's dtype when it is known (the provenance sidecar's ``platform_decisions.dtype``: bfloat16 ulps
for a bf16 run, each value rounded to the nearest bfloat16 first), else in float32 when every value of
both sides is a float32 exactly, else in float64; the width is named beside the count so "1 ulp" is
never ambiguous.
"""

from __future__ import annotations

import numpy as np

# width -> (numpy float type, signed integer of its bits); bfloat16 is float32's upper half, rounded.
_WIDTHS = {"bfloat16": (np.float32, np.int16), "float16": (np.float16, np.int16), "float32": (np.float32, np.int32),
           "float64": (np.float64, np.int64)}
WIDTHS = tuple(_WIDTHS)  # coarsest first


def moved(golden: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Which values differ bitwise (float64 bit patterns: -0.0 moved from 0.0, a NaN did not from the same NaN)."""
    return golden.view(np.uint64) != current.view(np.uint64)


def ulp_width(*arrays: np.ndarray, dtype: str | None = None) -> str:
    """``dtype`` when the result's dtype is known (one of WIDTHS); else "float32" when every finite value of
    every array is exactly a float32, else "float64"."""
    if dtype in WIDTHS:
        return dtype
    for values in arrays:
        finite = values[np.isfinite(values)]
        with np.errstate(over="ignore"):
            if not np.array_equal(finite.astype(np.float32).astype(np.float64), finite):
                return "float64"
    return "float32"


def coarsest(dtypes: list[str | None]) -> str | None:
    """The coarsest of the known dtypes (a bf16 run against a float32 one is counted in bf16 ulps), or None."""
    known = [dtype for dtype in dtypes if dtype in WIDTHS]
    return min(known, key=WIDTHS.index) if known else None


def _bits(values: np.ndarray, width: str) -> np.ndarray:
    """The signed bit pattern of each value at ``width`` (bfloat16: float32's upper 16 bits, rounded to nearest
    even), as int64."""
    if width == "bfloat16":
        with np.errstate(over="ignore", invalid="ignore"):
            upper = values.astype(np.float32).view(np.uint32).astype(np.uint64)
        rounded = ((upper + 0x7FFF + ((upper >> 16) & 1)) >> 16).astype(np.uint16)
        return rounded.view(np.int16).astype(np.int64)
    floating, signed = _WIDTHS[width]
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(floating).view(signed).astype(np.int64)


def _ordered(values: np.ndarray, width: str) -> np.ndarray:
    """The float's bit pattern as an integer that grows with the float (-0.0 and +0.0 both 0)."""
    bits = _bits(values, width)
    lowest = np.int64(np.iinfo(_WIDTHS[width][1]).min)
    return np.where(bits < 0, lowest - bits, bits)


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
