"""The one way jobrelay words a span of time for people and agents.

- under 2 minutes: `45 s`
- under an hour: `12 min 5 s` (or `12 min`)
- an hour or more: whole minutes, rounded up so a wait is never understated: `1 h 50 min`, `4 h`
  (never `110 min 21 s` or `3 h 60 min`)
"""

from __future__ import annotations

import math


def format_duration(seconds: float) -> str:
    """`seconds` (rounded up to a whole second, at least 0) as `N s`, `M min S s` or `H h M min`."""
    total = max(0, math.ceil(seconds - 1e-9)) if math.isfinite(seconds) else 0
    if total < 120:
        return f"{total} s"
    if total < 3600:
        minutes, rest = divmod(total, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(math.ceil(total / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
