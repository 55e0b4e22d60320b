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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunlab.course.evidence import MARTIANS_KEY as RECORDED_MARTIANS
from tunlab.course.evidence import REASONS_KEY as RECORDED_REASONS

__all__ = ["Checked", "ClaimMismatch", "CLAIMS", "expect", "expect_each", "field_of", "Finding",
           "RECORDED_LABEL", "Result"]

Result = Any  # a typed result (FateReport...) or a recording's mapping
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


def as_data(result: Any) -> Any:
    """A result row as plain data, live or recorded: a live object's ``to_dict()``, a
    recording's mapping as it is (recordings keep results without a type of their own as
    mappings), for claims that compute over several fields."""
    return result.to_dict() if hasattr(result, "to_dict") else result


def field_of(result: Any, name: str) -> Any:
    """Field ``name`` of a result: an attribute of a typed result (a
    :class:`~tunlab.fate.report.FateReport`, a dataclass), a key of a mapping (a recording of
    a result that has no type of its own); None when it has none."""
    if isinstance(result, Mapping):
        return result.get(name)
    return getattr(result, name, None)



def _reply_tuple(reply: Any) -> tuple[Any, ...]:
    return tuple(field_of(reply, name) for name in ("dev", "proto", "icmp_type", "icmp_code"))


@dataclass
class Finding:
    """What one kind of claim found: the facts it states, and where the run disagreed."""

    facts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _verdict(report: Result, verdict: str) -> Finding:
    found = Finding([verdict])
    said = field_of(report, "verdict")
    if said != verdict:
        found.problems.append(f"the text says {verdict}, the kernel said {said}")
    return found


def _reasons(report: Result, reasons: Sequence[str]) -> Finding:
    traced = list(field_of(report, "drop_reasons") or [])
    if not traced and "tracefs" in (field_of(report, "missing_evidence") or {}):
        # No tracefs here (the no-sudo kernel): a root run of the same packet speaks for the
        # reasons, labelled as such; the verdict and counters are still checked live.
        traced = list(field_of(report, RECORDED_REASONS) or [])
        found = Finding([", ".join(reasons) + RECORDED_LABEL if reasons
                         else "no drop reason traced (no tracefs here)"])
        if traced != list(reasons):
            found.problems.append(f"the text names {list(reasons)}; tracefs is not available "
                                  f"here and a recorded root run traced {traced}")
        return found
    found = Finding([", ".join(reasons) or "no drop reason"])
    if traced != list(reasons):
        found.problems.append(f"the text names {list(reasons)}, the kernel traced {traced}")
    return found


def _martian(report: Result, martian: bool | str) -> Finding:
    missing = field_of(report, "missing_evidence") or {}
    lines = list(field_of(report, "martian_log") or [])
    recorded = not lines and "kernel log" in missing
    if recorded:
        lines = list(field_of(report, RECORDED_MARTIANS) or [])
    label = RECORDED_LABEL if recorded else ""
    if martian and not lines and "martian line" in missing:
        # The kernel rate-limits martian lines machine-wide; the report says it saw none for
        # that reason (tests/test_fate_corpus.py proves the line appears once the limit allows).
        return Finding(["a martian line (suppressed by the kernel's rate limit "
                        + ("in the recorded root run)" if recorded else "this time)")])
    logger = "a recorded root run logged" if recorded else "the kernel logged"
    found = Finding(["a martian line" + label] if martian else [])
    if martian is True and not lines:
        found.problems.append(f"the text promises a martian line, {logger} none")
    elif martian is False and lines:
        found.problems.append(f"the text says no martian line, {logger} {lines}")
    elif isinstance(martian, str) and martian not in lines:
        found.problems.append(f"the text quotes {martian!r}, {logger} {lines}")
    return found


def _replies(report: Result, replies: Iterable[tuple[Any, ...]]) -> Finding:
    seen = [_reply_tuple(r) for r in field_of(report, "replies") or []]
    found = Finding()
    for wanted in replies:
        if not any(all(w is None or w == s for w, s in zip(wanted, got, strict=False))
                   for got in seen):
            found.problems.append(f"the text describes the reply {wanted}, the kernel sent {seen}")
        found.facts.append(f"reply {wanted[1]} {wanted[2]}/{wanted[3]} out of {wanted[0]}")
    return found


def _no_replies(report: Result, no_replies: bool) -> Finding:
    seen = [_reply_tuple(r) for r in field_of(report, "replies") or []]
    found = Finding(["no reply"])
    if no_replies and seen:
        found.problems.append(f"the text says no reply left, the kernel sent {seen}")
    return found


def _counters(report: Result, counters: Mapping[str, int | str]) -> Finding:
    found = Finding()
    for name, delta in counters.items():
        value = (field_of(report, "counters") or {}).get(name, 0)
        ok = value > 0 if delta == ">0" else value == delta
        found.facts.append(f"{name} {'+' if delta == '>0' else '+' + str(delta)}")
        if not ok:
            found.problems.append(f"the text counts {name} {delta}, the kernel's delta is {value}")
    return found


def _says(report: Result, says: Iterable[str]) -> Finding:
    found = Finding()
    for phrase in says:
        found.facts.append(f"the explanation says {phrase!r}")
        if phrase not in str(field_of(report, "explanation") or ""):
            found.problems.append(f"the explanation lacks {phrase!r}")
    return found


def _equal(report: Result, equal: Mapping[str, Any]) -> Finding:
    found = Finding()
    for key, value in equal.items():
        found.facts.append(f"{key} = {value!r}")
        if field_of(report, key) != value:
            found.problems.append(f"the text says {key} is {value!r}, the run gave "
                                  f"{field_of(report, key)!r}")
    return found


def _holds(report: Result, holds: Mapping[str, bool]) -> Finding:
    found = Finding(list(holds))
    found.problems += [f"the text says {statement}, which is not so in this run"
                       for statement, true in holds.items() if not true]
    return found


CLAIMS: dict[str, Callable[[Result, Any], Finding]] = {
    "verdict": _verdict, "reasons": _reasons, "martian": _martian, "replies": _replies,
    "no_replies": _no_replies, "counters": _counters, "says": _says, "equal": _equal,
    "holds": _holds,
}
"""Each kind of claim :func:`expect` takes, and the function that checks it, in the order the
facts are shown."""


def expect(result: Any, *, verdict: str | None = None, reasons: Sequence[str] | None = None,
           martian: bool | str | None = None, replies: Iterable[tuple[Any, ...]] | None = None,
           no_replies: bool = False, counters: Mapping[str, int | str] | None = None,
           says: Iterable[str] = (), equal: Mapping[str, Any] | None = None,
           holds: Mapping[str, bool] | None = None, label: str = "") -> Checked:
    """Check ``result`` (a fate report or its dict) against what the lesson's text claims.

    ``reasons``: the exact drop reasons. ``martian``: True (some martian line), False (none),
    or a line that must be logged. ``replies``: ``(dev, proto, icmp_type, icmp_code)`` tuples
    that must be among the replies (``None`` fields match anything). ``counters``: name ->
    exact delta, or ``">0"``. ``says``: phrases the explanation must contain. ``equal``:
    other fields of the result and their values. ``holds``: statements (as the text makes
    them) and whether they are true of the result. Raises :class:`ClaimMismatch` naming every
    claim the run contradicts.
    """
    report = result
    claimed = {"verdict": verdict, "reasons": reasons, "martian": martian,
               "replies": replies, "no_replies": no_replies or None, "counters": counters,
               "says": says or None, "equal": equal, "holds": holds}
    facts: list[str] = []
    problems: list[str] = []
    for kind, check in CLAIMS.items():
        if claimed[kind] is not None:
            found = check(report, claimed[kind])
            facts += found.facts
            problems += found.problems
    where = f"{label}: " if label else ""
    if problems:
        raise ClaimMismatch(where + "; ".join(problems))
    return Checked(facts=[where + f for f in facts], recorded=bool(field_of(report, "recorded")))


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
