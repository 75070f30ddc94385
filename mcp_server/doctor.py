"""`jobrelay doctor` (being written)."""

from __future__ import annotations

import sys


def run_doctor() -> int:
    print("jobrelay doctor: not available yet in this version.", file=sys.stderr)
    return 3
