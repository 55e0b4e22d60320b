"""Record what the lessons showed, for participants whose lab cannot run (read-only mode).

    sudo .venv/bin/python notebooks/record.py            # every lesson, then the fate cases
    sudo .venv/bin/python notebooks/record.py 05 06      # only these lessons

Each lesson is executed top to bottom with TUNLAB_RECORD=1, so that every ``lesson.run`` and
``lesson.sh`` saves its value into tunlab/data/recorded/NN-name.json; the packet builder's
cases go to fate_cases.json (``python -m tunlab.course record``). The claims cells run during
recording too, so a recording that contradicts a lesson's text is never written silently.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

LESSONS = Path(__file__).resolve().parent


def record(path: Path) -> None:
    """Execute one lesson with recording on (needs root)."""
    nb = nbformat.read(path, as_version=4)
    os.environ["TUNLAB_RECORD"] = "1"
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(LESSONS)}}).execute()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", help="lesson numbers (default: all)")
    parser.add_argument("--no-fate-cases", action="store_true",
                        help="skip re-recording the packet builder's cases")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("recording runs the real lab: sudo .venv/bin/python notebooks/record.py",
              file=sys.stderr)
        return 2
    paths = sorted(LESSONS.glob("[0-9][0-9]-*.ipynb"))
    if args.lessons:
        paths = [p for p in paths if p.name[:2] in args.lessons]
    for path in paths:
        print(f"recording {path.name}", flush=True)
        record(path)
    if not args.no_fate_cases:
        subprocess.run([sys.executable, "-m", "tunlab.course", "record"], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
