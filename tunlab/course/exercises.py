"""Exercises: the question, the check (:func:`check`, a :class:`CheckResult` that shows
itself) and hints revealed one click at a time (:func:`hint`)."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

from tunlab.course.checkers import CHECKERS, Checker, Judgement, digest_checker
from tunlab.course.style import css

__all__ = ["check", "CheckResult", "Exercise", "EXERCISES", "hint", "HintBox", "hints_shown",
           "next_hint", "Note", "question", "register_exercise"]


class Exercise:
    """A question whose answer is checked without showing it; hints come one by one on request.

    ``checker`` is a :class:`~tunlab.course.checkers.Checker`: it reads an answer the way a
    teacher would (equivalent spellings pass) and says why it is wrong without giving the
    answer, or why it is right; where the lab runs, it may ask the kernel. The older forms
    still work: a judge function ``answer -> (ok, message)`` with an optional ``verify``
    (``(answer, context) -> (ok, message)`` or None), or the digests of the accepted answers
    with ``explain``.
    """

    def __init__(self, question: str,
                 checker: Checker | Callable[[Any], Judgement] | Sequence[str],
                 hints: Sequence[str],
                 verify: Callable[[Any, Any], Judgement | None] | None = None,
                 explain: str = "") -> None:
        self.question = question
        if isinstance(checker, Checker):
            self.checker = checker
        elif callable(checker):
            self.checker = Checker(checker, verify=verify)
        else:
            self.checker = digest_checker(set(checker), explain, verify)
        self.hints = list(hints)

    def is_correct(self, answer: Any) -> bool:
        """True when the checker's judge accepts ``answer`` (without the kernel)."""
        return self.checker.accepts(answer)


EXERCISES: dict[str, Exercise] = {
    "00": Exercise(
        "A container holds only one of the lab's two capabilities. In its own network "
        "namespace it can add routes, addresses and TUN devices, but `ip netns add` fails "
        "with 'Operation not permitted'. Which capability does it hold, and which one is "
        "missing? Answer as a pair: (held, missing).",
        CHECKERS["00"],
        ["The doctor's table names the two capabilities.",
         "One of them is about network administration only.",
         "man 7 capabilities: creating a namespace (unshare, setns, mount) is under the "
         "catch-all capability."]),
    "01": Exercise(
        "A program opens mytun *without* IFF_NO_PI and writes a bare 60-byte IPv4 packet "
        "into it (it starts `45 00 00 3c`). Which number does the kernel read as the packet "
        "information's `proto` field? Answer with a number (decimal or 0x hex).",
        CHECKERS["01"],
        ["The kernel expects `struct tun_pi { u16 flags; be16 proto; }` before the packet.",
         "Nobody wrote one: the first four bytes of the packet take its place.",
         "proto is bytes 2-3, read big endian."]),
    "02": Exercise(
        "Through which device does the kernel send `ping 10.0.0.1` (mytun's own address), and "
        "which routing table holds the route it uses? Answer as a pair (device, table).",
        CHECKERS["02"],
        ["Run `ip route get 10.0.0.1` in the widget above.",
         "Addresses of this host are in a table that `ip route` does not show by default.",
         "`ip route show table local`."]),
    "03": Exercise(
        "The vpn-client reads a 1400-byte packet from mytun. Which 8 header bytes does it put "
        "in front of it? Answer in hex, e.g. \"00 11 22 33 44 55 66 77\".",
        CHECKERS["03"],
        ["The table under 'One frame' gives each field's place and size.",
         "The magic is ASCII: look up the letters' codes (or run "
         "`framing.encode_packet(packet)[:8]` on a small packet and compare).",
         "1400 = 0x578; the length is a 4-byte big-endian number."]),
    "04": Exercise(
        "Ping 10.0.0.1 (mytun's own address) instead of 10.0.0.2 with the panel above. How many "
        "packets does the vpn-client read from mytun for it?",
        CHECKERS["04"],
        ["Lesson 02: which device does the kernel pick for its own address?",
         "A packet routed to `lo` never enters mytun.",
         "The client only sees what the kernel routes into mytun."]),
    "05": Exercise(
        "With ip_forward=1 and strict rp_filter=1, find a source address for which the packet "
        "to 10.0.0.2, released on mytun2, is forwarded and not dropped.",
        CHECKERS["05"],
        ["Strict rp_filter asks: would I send a reply to this source out of the device the "
         "packet came in on?",
         "Which sources does the kernel route out of mytun2?",
         "Any host address in mytun2's subnet that is not mytun2's own address."]),
    "06": Exercise(
        "Send a UDP packet from 200.1.2.3 to port 9 of mytun2's own address 10.0.2.1, where "
        "nothing listens, with the packet builder. Which drop reason does the kernel report?",
        CHECKERS["06"],
        ["In the builder: protocol UDP, destination 10.0.2.1, port 9, then send.",
         "UDP has a handler, unlike protocol 253: the packet gets further this time.",
         "The handler looks for a socket bound to the port; dropreason-core.h names what "
         "happens when there is none."]),
    "07": Exercise(
        "Which fixes are needed, all together and nothing more, for `ping 192.168.50.2` from "
        "host a to work? Answer with a set of fix names from the panel.",
        CHECKERS["07"],
        ["Follow the packet: a's routing, b's forwarding, b's firewall, c's reply.",
         "Replies need a route back too.",
         "rp_filter is fine here: routes are symmetric."]),
    "08": Exercise(
        "tun0 has MTU 1400. What TCP MSS does a connection through the tunnel announce "
        "(IPv4, without TCP options)?",
        CHECKERS["08"],
        ["The section on the MSS above shows the rule for MTU 1500.",
         "Both headers in front of TCP's payload are 20 bytes here.",
         "The tunnel's own overhead is outside tun0: it does not count."]),
}


def register_exercise(key: str, exercise: Exercise) -> None:
    """Add an exercise defined in another module (:mod:`tunlab.course.handson` adds 09a-09c)."""
    EXERCISES[key] = exercise


def check(exercise: str, answer: Any, lesson: Any = None) -> CheckResult:
    """Check ``answer`` to ``exercise`` ("00" ... "08"): a :class:`CheckResult`, true when
    right, that shows itself as a verdict line with the reason.

    Equivalent answers pass (``(4, "0x0800")``, ``"CAP_NET_ADMIN"`` or ``"net_admin"``); a
    wrong one is told why without the answer. Where the lab runs, some answers are checked by
    the kernel itself: 02 asks the lesson's lab for `ip route get`, 04 pings through the panel
    given as ``lesson``, 05 asks whether the kernel really forwards a packet from the source
    you give, 07 applies your fixes in the panel's scenario (and each one less).
    """
    ex = EXERCISES[exercise]
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        _LAST_CHECK[exercise] = False
        return CheckResult(exercise, False, "No answer yet: set `answer = ...` above.")
    ok, message = ex.checker(answer, lesson)
    _LAST_CHECK[exercise] = bool(ok)
    return CheckResult(exercise, bool(ok), message)


class CheckResult:
    """The verdict of :func:`check`: true when right; shows itself as a coloured line."""

    def __init__(self, exercise: str, ok: bool, message: str = "") -> None:
        self.exercise = exercise
        self.ok = ok
        self.message = message

    def __bool__(self) -> bool:
        return self.ok

    def _repr_html_(self) -> str:
        box, mark = ("check-right", "right") if self.ok else ("check-wrong", "wrong")
        text = "✔ Correct." if self.ok else "✘ Not yet:"
        more = "" if self.ok else " Try again, or ask the hint box for a hint."
        return (f'<div {css("check", box)}><b {css(mark)}>{text}</b> '
                f"{html.escape(self.message)}{more}</div>")

    def __repr__(self) -> str:
        return f"{'Correct.' if self.ok else 'Not yet:'} {self.message}".strip()


class Note:
    """A piece of HTML that shows itself in a notebook (questions, hints)."""

    def __init__(self, markup: str, text: str) -> None:
        self.markup = markup
        self.text = text

    def _repr_html_(self) -> str:
        return self.markup

    def __repr__(self) -> str:
        return self.text


_LAST_CHECK: dict[str, bool] = {}
_HINTS_GIVEN: dict[str, int] = {}


def hints_shown(exercise: str) -> list[str]:
    """The hints of ``exercise`` revealed so far in this kernel (by :func:`next_hint`)."""
    ex = EXERCISES[exercise]
    return ex.hints[:_HINTS_GIVEN.get(exercise, 0)]


def next_hint(exercise: str) -> Note:
    """Reveal one more hint for ``exercise`` and return all revealed so far, as a list."""
    ex = EXERCISES[exercise]
    n = min(_HINTS_GIVEN.get(exercise, 0) + 1, len(ex.hints))
    _HINTS_GIVEN[exercise] = n
    return _hint_note(exercise)


def _hint_note(exercise: str) -> Note:
    shown = hints_shown(exercise)
    total = len(EXERCISES[exercise].hints)
    items = "".join(f"<li>{html.escape(h)}</li>" for h in shown)
    markup = (f'<div class="tunlab-hint"><b>Hint {len(shown)} of {total}</b><ol>{items}</ol>'
              "</div>") if shown else ""
    return Note(markup, "\n".join(f"Hint {i}: {h}" for i, h in enumerate(shown, 1)))


class HintBox:
    """What a lesson's hint cell shows: a *show a hint* button that reveals one more hint per
    click, and the hints revealed so far. Running the cell (or Run All) reveals nothing."""

    def __init__(self, exercise: str) -> None:
        import ipywidgets as w

        self.exercise = exercise
        self.button = w.Button(icon="lightbulb-o", layout=w.Layout(width="auto"))
        self.shown = w.HTML()
        self.widget = w.VBox([self.button, self.shown], _dom_classes=["tunlab-hints"])
        self.button.on_click(lambda _button: self.reveal())
        self._update()

    def reveal(self) -> None:
        """One more hint (what a click does)."""
        next_hint(self.exercise)
        self._update()

    def _update(self) -> None:
        n, total = len(hints_shown(self.exercise)), len(EXERCISES[self.exercise].hints)
        self.shown.value = _hint_note(self.exercise).markup
        self.button.description = (f"show hint {n + 1} of {total}" if n < total
                                   else "all hints shown")
        self.button.disabled = n >= total

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return _hint_note(self.exercise).text or f"(run course.next_hint({self.exercise!r}))"


def hint(exercise: str) -> Any:
    """The hint cell: a :class:`HintBox` whose button reveals one hint per click. Running
    the cell reveals nothing, so Run All gives no hint away; the hints already revealed in
    this kernel stay shown. Without ipywidgets: the hints revealed so far, as a note."""
    EXERCISES[exercise]  # an unknown exercise fails here, not in a click handler
    try:
        return HintBox(exercise)
    except ImportError:
        return _hint_note(exercise)


def question(exercise: str) -> Note:
    """The exercise's question, as a box."""
    text = EXERCISES[exercise].question
    return Note(f'<div {css("question")}><b>Exercise {exercise}.</b> {html.escape(text)}</div>',
                f"Exercise {exercise}. {text}")

