"""`jobrelay demo` (being written)."""

from __future__ import annotations

import sys


def run_demo() -> int:
    print("jobrelay demo: not available yet in this version.", file=sys.stderr)
    return 3
