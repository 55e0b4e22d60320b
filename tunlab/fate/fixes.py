"""Try each proposed fix in a fresh lab, so that tunlab only ever shows fixes that work.

A fix is a list of typed changes (:mod:`tunlab.fate.changes`); verifying it is running the same
packet again in a fresh lab with those changes made. When a fix removes one drop only to meet
the next (turning on forwarding for a packet whose source is the host's own address), the next
drop's fixes are tried on top of it, up to a bounded number of runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from tunlab.fate.explain import diagnose
from tunlab.fate.report import FateReport, Fix, Verdict
from tunlab.fate.request import FateRequest

__all__ = ["MAX_RUNS", "MAX_SECONDS", "PARALLEL", "Runner", "verify"]

MAX_RUNS = 5          # fresh labs one verification may build
MAX_SECONDS = 4.0     # ... and the time it may take, whatever the machine's load
PARALLEL = 3          # first-level candidates tried at once

Runner = Callable[[FateRequest], FateReport]


def verify(request: FateRequest, candidates: list[Fix], run: Runner,
           max_runs: int = MAX_RUNS, max_seconds: float = MAX_SECONDS) -> list[Fix]:
    """Run ``request`` with each candidate applied; fill in what the kernel did then.

    Returns the candidates (each ``verified`` with ``verdict_after``), plus combined fixes
    found one step further, working ones first. Bounded by ``max_runs`` and ``max_seconds``.
    """
    deadline = time.monotonic() + max_seconds
    first = candidates[:max_runs]
    applied = [request.apply(fix.changes) for fix in first]
    # The candidates are tried side by side, each in its own namespace: what a verification
    # keeps (verdict and drop reasons) comes from that lab's own devices, counters and
    # thread-filtered trace, so the runs cannot see each other's packets.
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        afters = list(pool.map(run, applied))
    runs = len(first)
    results: list[Fix] = []
    follow_ups: list[tuple[Fix, FateRequest, FateReport]] = []
    for fix, req, after in zip(first, applied, afters, strict=True):
        _record(fix, after)
        results.append(fix)
        if not fix.works and after.verdict == Verdict.DROPPED:
            follow_ups.append((fix, req, after))
    if not any(f.works for f in results):
        for one, changed, still in follow_ups:
            for second in diagnose(still, changed).candidates:
                if runs >= max_runs or time.monotonic() > deadline:
                    break
                if second.changes == one.changes:
                    continue
                combined = Fix(summary=f"{one.summary}, and {second.summary}",
                               changes=(*one.changes, *second.changes))
                _record(combined, run(request.apply(combined.changes)))
                runs += 1
                results.append(combined)
                if combined.works:
                    break
    return sorted(results, key=lambda f: not f.works)


def _record(fix: Fix, after: FateReport) -> None:
    fix.verdict_after = after.verdict
    fix.reasons_after = list(after.drop_reasons)
    fix.verified = True
