"""``python -m tunlab.course record``: record the packet builder's cases for read-only mode."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tunlab.course.fates import record_fate_cases
from tunlab.kernel.host import is_privileged


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tunlab.course record``: record fate cases for read-only mode (root)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] != ["record"]:
        print("usage: python -m tunlab.course record", file=sys.stderr)
        return 2
    if not is_privileged():
        print("recording needs root: sudo .venv/bin/python -m tunlab.course record",
              file=sys.stderr)
        return 2
    path = record_fate_cases(progress=print)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
