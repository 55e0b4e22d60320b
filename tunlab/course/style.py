"""The course's look: HTML building blocks and presenter mode's stylesheet."""

from __future__ import annotations

import html
from typing import Any

from .. import plots

CSS_BOX = ("border:1px solid #ddd;border-radius:4px;padding:6px 10px;margin-top:4px;"
            "line-height:1.45")


def pre(text: str) -> str:
    """``text`` as a preformatted block."""
    return (f'<pre style="background:#f6f8fa;padding:6px 10px;margin:2px 0;'
            f'white-space:pre-wrap">{html.escape(text)}</pre>')


def badge(text: str, color: str) -> str:
    """A coloured verdict label."""
    return (f'<span class="tunlab-verdict" style="background:{color};color:white;'
            f'border-radius:4px;padding:2px 8px;font-weight:bold">{html.escape(text)}</span>')


def invalid(text: str) -> str:
    """The line a panel shows for input it cannot use."""
    return (f'<div style="{CSS_BOX};color:#7a5b00"><b>invalid input:</b> '
            f"{html.escape(text)}</div>")


# -- what every lab panel has: an error line, reset lab, the kernel log, presenter mode --------

PRESENTER_CSS = """<style class="tunlab-presenter">
:root { --jp-widgets-font-size: 16px; --jp-content-font-size1: 16px; --jp-code-font-size: 16px;
        --jp-ui-font-size1: 16px; --jp-widgets-inline-height: 36px; }
.jupyter-widgets, .jupyter-widgets *, .jp-RenderedHTMLCommon, .jp-RenderedHTMLCommon *,
.jp-RenderedText pre { font-size: max(16px, 1em) !important; line-height: 1.4; }
.jupyter-widgets.widget-vbox { overflow-x: auto; }
</style>"""
"""Presenter mode's stylesheet: no widget or output text smaller than 16 px."""

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

