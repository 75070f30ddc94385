"""Numbers from untrusted values (JSON bodies, pasted input): the one coercion rule.

Bools are never numbers (`True` is an `int` in Python, never in a body); strings count when they
hold a number. Nothing here raises.
"""

from __future__ import annotations

import math

__all__ = ["as_int", "as_number"]


def as_int(value: object) -> int | None:
    """An int, or a string of ASCII digits (surrounding space allowed); anything else is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def as_number(value: object) -> float | None:
    """A finite, non-negative number from an int, a float or a numeric string; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return number
