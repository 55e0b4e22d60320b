"""Hold a lesson's sentences to the kernel's answer: claims about a result, checked when it runs.

A lesson states what the kernel did ("dropped with IP_RPFILTER, and a martian line"). Right
after the cell that asks the kernel, a small cell says the same as data::

    claims.expect(seed, verdict="dropped", reasons=["IP_LOCAL_SOURCE"],
                  martian="martian source 10.0.2.33 from 10.0.0.1, on dev mytun")

When the result agrees, the cell shows one quiet line ("the text above matches the kernel's
answer"); when it does not, it raises :class:`ClaimMismatch`, so executing the notebook (as
the test suite does, live as root and from the recordings without root) fails the moment the
prose and the kernel disagree.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunlab.course.evidence import MARTIANS_KEY as RECORDED_MARTIANS
from tunlab.course.evidence import REASONS_KEY as RECORDED_REASONS

Result = Mapping[str, Any]
RECORDED_LABEL = " (recorded on a root run: not traceable here)"


class ClaimMismatch(AssertionError):
    """The lesson's text says one thing, the kernel's answer another."""


@dataclass
class Checked:
    """What was checked, shown as one line under the result."""

    facts: list[str] = field(default_factory=list)
    recorded: bool = False

    def _repr_html_(self) -> str:
        source = "the recorded answer" if self.recorded else "the kernel's answer"
        return (f'<div class="tunlab-claims" style="color:#2a7a2a;font-size:0.9em">&#10003; '
                f"the text above matches {source}: {html.escape('; '.join(self.facts))}</div>")

    def __repr__(self) -> str:
        return f"checked against the kernel: {'; '.join(self.facts)}"


def as_data(result: Any) -> dict[str, Any]:
    """A result as plain data, live or recorded: a live object's ``to_dict()``, a recording's
    dict as it is."""
    if hasattr(result, "to_dict"):
        return result.to_dict()
    return dict(result)



def _reply_tuple(reply: Mapping[str, Any]) -> tuple:
    return (reply.get("dev"), reply.get("proto"), reply.get("icmp_type"), reply.get("icmp_code"))


def expect(result: Any, *, verdict: str | None = None, reasons: Sequence[str] | None = None,
           martian: bool | str | None = None, replies: Iterable[tuple] | None = None,
           no_replies: bool = False, counters: Mapping[str, int | str] | None = None,
           says: Iterable[str] = (), equal: Mapping[str, Any] | None = None,
           holds: Mapping[str, bool] | None = None, label: str = "") -> Checked:
    """Check ``result`` (a fate report or its dict) against what the lesson's text claims.

    ``reasons``: the exact drop reasons. ``martian``: True (some martian line), False (none),
    or a line that must be logged. ``replies``: ``(dev, proto, icmp_type, icmp_code)`` tuples
    that must be among the replies (``None`` fields match anything). ``counters``: name ->
    exact delta, or ``">0"``. ``says``: phrases the explanation must contain. ``equal``:
    other fields of the result and their values. ``holds``: statements (as the text makes
    them) and whether they are true of the result.
    """
    report = as_data(result)
    where = f"{label}: " if label else ""
    problems: list[str] = []
    facts: list[str] = []
    if verdict is not None:
        facts.append(verdict)
        if report.get("verdict") != verdict:
            problems.append(f"the text says {verdict}, the kernel said {report.get('verdict')}")
    missing = report.get("missing_evidence") or {}
    if reasons is not None:
        traced = list(report.get("drop_reasons") or [])
        if not traced and "tracefs" in missing:
            # No tracefs here (the no-sudo kernel): a root run of the same packet speaks for
            # the reasons, labelled as such; the verdict and counters are still checked live.
            traced = list(report.get(RECORDED_REASONS) or [])
            facts.append(", ".join(reasons) + RECORDED_LABEL if reasons
                         else "no drop reason traced (no tracefs here)")
            if traced != list(reasons):
                problems.append(f"the text names {list(reasons)}; tracefs is not available "
                                f"here and a recorded root run traced {traced}")
        else:
            facts.append(", ".join(reasons) or "no drop reason")
            if traced != list(reasons):
                problems.append(f"the text names {list(reasons)}, the kernel traced {traced}")
    lines = list(report.get("martian_log") or [])
    if martian is not None and not lines and "kernel log" in missing:
        lines = list(report.get(RECORDED_MARTIANS) or [])
        martian_label = RECORDED_LABEL
    else:
        martian_label = ""
    suppressed = "martian line" in (report.get("missing_evidence") or {})
    if martian and not lines and suppressed:
        # The kernel rate-limits martian lines machine-wide; the report says it saw none for
        # that reason (tests/test_fate_corpus.py proves the line appears once the limit allows).
        facts.append("a martian line (suppressed by the kernel's rate limit "
                     + ("in the recorded root run)" if martian_label else "this time)"))
        martian = None
    logger = "a recorded root run logged" if martian_label else "the kernel logged"
    if martian is True and not lines:
        problems.append(f"the text promises a martian line, {logger} none")
    elif martian is False and lines:
        problems.append(f"the text says no martian line, {logger} {lines}")
    elif isinstance(martian, str) and martian not in lines:
        problems.append(f"the text quotes {martian!r}, {logger} {lines}")
    if martian:
        facts.append("a martian line" + martian_label)
    seen = [_reply_tuple(r) for r in report.get("replies") or []]
    for wanted in replies or ():
        if not any(all(w is None or w == s for w, s in zip(wanted, got, strict=False))
                   for got in seen):
            problems.append(f"the text describes the reply {wanted}, the kernel sent {seen}")
        facts.append(f"reply {wanted[1]} {wanted[2]}/{wanted[3]} out of {wanted[0]}")
    if no_replies:
        facts.append("no reply")
        if seen:
            problems.append(f"the text says no reply left, the kernel sent {seen}")
    for name, delta in (counters or {}).items():
        value = (report.get("counters") or {}).get(name, 0)
        ok = value > 0 if delta == ">0" else value == delta
        facts.append(f"{name} {'+' if delta == '>0' else '+' + str(delta)}")
        if not ok:
            problems.append(f"the text counts {name} {delta}, the kernel's delta is {value}")
    for phrase in says:
        facts.append(f"the explanation says {phrase!r}")
        if phrase not in str(report.get("explanation", "")):
            problems.append(f"the explanation lacks {phrase!r}")
    for key, value in (equal or {}).items():
        facts.append(f"{key} = {value!r}")
        if report.get(key) != value:
            problems.append(f"the text says {key} is {value!r}, the run gave {report.get(key)!r}")
    for statement, true in (holds or {}).items():
        facts.append(statement)
        if not true:
            problems.append(f"the text says {statement}, which is not so in this run")
    if problems:
        raise ClaimMismatch(where + "; ".join(problems))
    return Checked(facts=[where + f for f in facts] if where else facts,
                   recorded=bool(report.get("recorded")))


def expect_each(results: Sequence[tuple[str, Any]], claims: Mapping[str, Mapping[str, Any]]
                ) -> Checked:
    """:func:`expect` for labelled results (a sweep): ``{label: {claim: value}}``."""
    by_label = dict(results)
    missing = [label for label in claims if label not in by_label]
    if missing:
        raise ClaimMismatch(f"the text speaks of {missing}, which the run did not produce")
    checked = Checked()
    for label, wanted in claims.items():
        one = expect(by_label[label], label=label, **wanted)
        checked.facts += one.facts
        checked.recorded = checked.recorded or one.recorded
    return checked
