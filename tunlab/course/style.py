"""The course's look: its one stylesheet (``course.css``), the HTML building blocks that use
it, and presenter mode, which injects the stylesheet's presenter part into the page."""

from __future__ import annotations

import html
import re
from importlib.resources import files
from typing import Any

from tunlab.course import plots

__all__ = ["badge", "css", "invalid", "muted", "pre", "PRESENTER_CSS", "presenter_style", "RULES",
           "set_presenter", "STYLESHEET", "TONES"]

STYLESHEET = files(__package__).joinpath("course.css").read_text(encoding="utf-8")
"""The text of ``course.css``."""

_MARKER = "/* == presenter mode"
_BASE, _, _PRESENTER = STYLESHEET.partition(_MARKER)
_PRESENTER = _MARKER + _PRESENTER

RULES: dict[str, str] = {
    name: ";".join(" ".join(d.split()) for d in body.split(";") if d.strip())
    for name, body in re.findall(r"\.tunlab-([\w-]+)\s*\{([^}]*)\}", _BASE)}
"""Each ``.tunlab-NAME`` rule of the course's own HTML: NAME -> its declarations."""

PRESENTER_CSS = f'<style class="tunlab-presenter">\n{_PRESENTER.strip()}\n</style>'
"""Presenter mode's part of the stylesheet, as the page gets it: no text smaller than 16 px."""


def css(*names: str, extra: str = "") -> str:
    """``class`` and ``style`` attributes for an element of the course's own HTML: the
    classes ``tunlab-NAME`` and, inline, their rules from ``course.css`` (then ``extra``)."""
    missing = [n for n in names if n not in RULES]
    if missing:
        raise KeyError(f"course.css has no rule .tunlab-{missing[0]}")
    declarations = ";".join([RULES[n] for n in names if RULES[n]] + ([extra] if extra else []))
    classes = " ".join(f"tunlab-{n}" for n in names)
    return f'class="{classes}" style="{declarations}"'


TONES = {"dropped": "bad", "delivered": "good", "forwarded": "good", "not recorded": "neutral",
         "reply received": "good", "no reply": "bad"}
"""The colour (a ``course.css`` rule) of each verdict's label; others are ``info``."""


def pre(text: str) -> str:
    """``text`` as a preformatted block."""
    return f"<pre {css('pre')}>{html.escape(text)}</pre>"


def badge(text: str, tone: str | None = None) -> str:
    """A verdict label; ``tone`` (good, bad, neutral, info) defaults to the verdict's own."""
    return f"<span {css('verdict', tone or TONES.get(text, 'info'))}>{html.escape(text)}</span>"


def invalid(text: str) -> str:
    """The line a panel shows for input it cannot use."""
    return f"<div {css('invalid')}><b>invalid input:</b> {html.escape(text)}</div>"


def muted(markup: str, tag: str = "div") -> str:
    """``markup`` in grey: a hint what to do, a duration."""
    return f"<{tag} {css('muted')}>{markup}</{tag}>"


# -- presenter mode: one shared widget holds the stylesheet's presenter part -------------------

_STYLE: list[Any] = []  # the one ipywidgets.HTML every panel shows


def presenter_style() -> Any:
    """One shared widget holding the presenter stylesheet (empty when presenter mode is off);
    every panel shows it, so switching it changes every view at once."""
    if not _STYLE:
        import ipywidgets as w

        _STYLE.append(w.HTML(PRESENTER_CSS if plots.presenter_on() else "",
                             layout=w.Layout(margin="0", height="auto")))
    return _STYLE[0]


def set_presenter(on: bool = True) -> Any:
    """Presenter mode on/off: text of at least 16 px in widgets and outputs, figures large and
    high-DPI from the next drawing on. Returns the stylesheet widget (display it once)."""
    plots.set_presenter(on)
    style = presenter_style()
    style.value = PRESENTER_CSS if on else ""
    return style
