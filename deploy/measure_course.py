"""Measure one participant's kernel running the whole course: CPU seconds and peak memory.

Runs every lesson (``NN-*.ipynb`` in DIR) top to bottom with nbclient, each in a fresh kernel
of KERNEL, as a participant does one notebook after the other, and samples the kernel's whole
process tree (the kernel, ``unshare`` around it, and everything it starts: ip, nft, tcpdump,
iperf3, tunnels) with psutil:

* ``cpu_s``: user + system seconds of the tree, including children that already ended (the
  ``children_*`` times of their living ancestors);
* ``peak_tree_rss_mb``: the highest sum of RSS over the tree seen by a 4 Hz sampler (shared
  pages counted once per process: an upper bound);
* ``kernel_hwm_mb``: the kernel process's own peak RSS (VmHWM), exact.

Usage (as the participant, e.g. via ``runuser -u USER --``, for the no-sudo kernel)::

    python deploy/measure_course.py --kernel tunlab-nosudo --out nosudo.json DIR
    python deploy/measure_course.py --kernel python3 --out root.json DIR      # as root

The numbers behind docs/instructor-guide.md come from this script (raw: deploy/measured-course.json).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat
import psutil
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

SAMPLE_SECONDS = 0.25
MB = 1024 * 1024


@dataclass
class LessonCost:
    """What one lesson cost its kernel."""

    lesson: str
    ok: bool
    error: str
    wall_s: float
    loadavg: tuple[float, float, float]
    cpu_s: float
    peak_tree_rss_mb: float
    kernel_hwm_mb: float


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _hwm_kb(procs: list[psutil.Process]) -> int:
    """The largest VmHWM among the tree's python processes (the kernel itself)."""
    best = 0
    for proc in procs:
        try:
            if "python" not in proc.name():
                continue
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]))
        except (psutil.Error, OSError):
            continue
    return best


class Sampler(threading.Thread):
    """Samples the tree's RSS sum and the kernel's VmHWM until stopped."""

    def __init__(self, root: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.peak_rss = 0
        self.hwm_kb = 0
        self.cpu = 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            procs = _tree(self.root)
            rss = 0
            for proc in procs:
                try:
                    rss += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_rss = max(self.peak_rss, rss)
            self.hwm_kb = max(self.hwm_kb, _hwm_kb(procs))
            self.cpu = max(self.cpu, _cpu(procs))
            self._halt.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def run_lesson(path: Path, kernel: str, timeout: float) -> LessonCost:
    """Run one notebook in a fresh ``kernel``; return what its kernel tree cost."""
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name=kernel, transport="ipc")
    km.ip = os.path.join(tempfile.mkdtemp(prefix="tunlab-measure-"), "kernel")
    client = NotebookClient(nb, km=km, timeout=timeout, allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    started = time.monotonic()
    error = ""
    sampler: Sampler | None = None
    try:
        with client.setup_kernel():
            pid = km.provisioner.process.pid  # type: ignore[union-attr]
            sampler = Sampler(psutil.Process(pid))
            sampler.start()
            try:
                client.execute()
            except Exception as exc:  # noqa: BLE001 - record the failure, measure on
                error = f"{type(exc).__name__}: {str(exc)[:300]}"
            sampler.cpu = max(sampler.cpu, _cpu(_tree(sampler.root)))
            sampler.stop()
    finally:
        # nbclient leaves a kernel it did not create running; the no-sudo kernel's parent
        # is unshare, so it would not notice that this script is gone either
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    if errors and not error:
        error = f"{len(errors)} cell error(s): {errors[0].get('ename')}: " \
                f"{str(errors[0].get('evalue'))[:200]}"
    return LessonCost(path.stem, not error, error, round(time.monotonic() - started, 1),
                      os.getloadavg(), round(sampler.cpu, 1), round(sampler.peak_rss / MB, 1),
                      round(sampler.hwm_kb / 1024, 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a copy of the course (tunlab notebooks)")
    parser.add_argument("--kernel", default="tunlab-nosudo")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=300, help="per cell, seconds")
    parser.add_argument("--only", nargs="*", default=None, help="lesson numbers, e.g. 01 05")
    args = parser.parse_args()
    lessons = sorted(args.directory.glob("[0-9][0-9]-*.ipynb"))
    if args.only:
        lessons = [p for p in lessons if p.name[:2] in args.only]
    costs = []
    for path in lessons:
        cost = run_lesson(path, args.kernel, args.timeout)
        costs.append(cost)
        print(json.dumps(asdict(cost)), flush=True)
        args.out.write_text(json.dumps({"kernel": args.kernel, "nproc": os.cpu_count(),
                                        "lessons": [asdict(c) for c in costs]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
