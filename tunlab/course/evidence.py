"""Drop reasons and kernel log lines from a recorded root run, beside a live run that lacked them.

Where tracefs and the kernel log are the host's (the no-sudo kernel, a container), the live
verdict rests on counters and captures. What a root run of the very same packet traced is then
added in its own fields (``recorded_drop_reasons``, ``recorded_martian_log``) and named as
recorded in the explanation; it never enters the live ``drop_reasons`` or ``martian_log``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from tunlab.fate.report import FateReport

__all__ = ["beside", "lacks_traced_evidence", "MARTIANS_KEY", "REASONS_KEY",
           "with_recorded_evidence"]

REASONS_KEY = "recorded_drop_reasons"
MARTIANS_KEY = "recorded_martian_log"


def lacks_traced_evidence(report: FateReport) -> bool:
    """True when the run could read neither drop reasons nor the kernel log, or one of them."""
    return "tracefs" in report.missing_evidence or "kernel log" in report.missing_evidence


def with_recorded_evidence(live: FateReport, sysctls: Mapping[str, Any] | None,
                           lookup: Callable[[dict[str, Any]], FateReport | None]) -> FateReport:
    """``live`` with a recorded root run's drop reasons and martian lines for the evidence the
    live run lacked.

    ``lookup(sysctls)`` returns the recorded report of this packet under those settings (or
    None). It is asked with ``sysctls`` as given, then completed with the values the live lab
    had (``live.settings``): a recording that set them explicitly ran the same experiment.
    Only a recording whose verdict is the live verdict counts; one that disagrees says nothing
    about this run and is left out.
    """
    if live.recorded_drop_reasons or live.recorded_martian_log:
        return live  # already beside a recording
    given = {k: str(v) for k, v in (sysctls or {}).items()}
    completed = {**{k: str(v) for k, v in live.settings.items()}, **given}
    for settings in [given] + ([completed] if completed != given else []):
        recorded = lookup(settings)
        if recorded and recorded.verdict == live.verdict:
            return _add(live, recorded)
    return live


def _add(live: FateReport, recorded: FateReport) -> FateReport:
    missing = live.missing_evidence
    changes: dict[str, Any] = {}
    notes = []
    reasons = [str(r) for r in recorded.drop_reasons]
    if "tracefs" in missing and not live.drop_reasons and reasons:
        changes["recorded_drop_reasons"] = reasons
        notes.append(f"traced the drop reason {', '.join(reasons)}")
    lines = [str(line) for line in recorded.martian_log]
    if "kernel log" in missing and not live.martian_log and lines:
        changes["recorded_martian_log"] = lines
        notes.append("logged " + ", ".join(f"'{line}'" for line in lines))
    elif "kernel log" in missing and "martian line" in recorded.missing_evidence:
        # the recording itself met the kernel's rate limit on martian lines: say so, as a
        # live run would (see tunlab.course.claims)
        changes["missing_evidence"] = {**missing, "martian line": "a recorded root run logged "
                                       "none: " + recorded.missing_evidence["martian line"]}
    if notes:
        changes["explanation"] = (
            f"{live.explanation} Recorded, not seen here: a root run of this same packet "
            f"{' and '.join(notes)}.").strip()
    return replace(live, **changes)


def beside(value: Any, recording: Any) -> Any:
    """A lesson step's live ``value`` with its recording's traced evidence, where it lacked it.

    ``value`` is a fate report, or a list of ``(label, report)`` pairs (a sweep), matched to
    ``recording`` (the same step's value from a root run) report by report, by label.
    Anything else, and anything with its own traced evidence, comes back unchanged.
    """
    if isinstance(value, FateReport):
        if isinstance(recording, FateReport) and lacks_traced_evidence(value):
            return with_recorded_evidence(value, None, lambda _settings: recording)
        return value
    if isinstance(value, list) and isinstance(recording, list):
        recorded = {str(item[0]): item[1] for item in recording
                    if isinstance(item, list | tuple) and len(item) == 2}
        out = [(item[0], new) if isinstance(item, tuple | list) and len(item) == 2 and
               (new := beside(item[1], recorded.get(str(item[0])))) is not item[1] else item
               for item in value]
        # unchanged (a run with its own tracing): the very same object, as if never passed here
        return value if all(a is b for a, b in zip(out, value, strict=True)) else out
    return value
