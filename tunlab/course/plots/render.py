"""Figures to PNG, and presenter mode: the colours every figure shares, the rendering that makes
text large and sharp on a projector, and the smallest text a figure carries (measured).

Every plotting function returns a :class:`matplotlib.figure.Figure` built without pyplot, so
figures can be made in any thread (the live tunnel panel renders from a background thread) and
never pile up in pyplot's global state. In a notebook, a Figure as the last expression of a
cell is shown; :func:`to_png` turns one into PNG bytes for an ``ipywidgets.Image``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from matplotlib.figure import Figure

__all__ = ["COLORS", "CSS_DPI", "figure_text", "HIDPI", "png_size", "PRESENTER_MIN_POINTS",
           "presenter_on", "PRESENTER_SCALE", "render", "Rendered", "set_presenter",
           "SMALLEST_TEXT_KEY", "smallest_text_points", "to_png"]

# One colour per kind of thing, used consistently across the lessons.
COLORS = {
    "app": "#dbe9f6",       # programs: ping, the vpn-client/-server
    "kernel": "#e8e1f3",    # the kernel's decisions: routing, netfilter, delivery
    "device": "#fde7c8",    # network devices: mytun, mytun2, lo, veth0
    "wire": "#e3f1e0",      # the TCP connection / cable between tunnel ends
    "verdict": "#f3f3f3",
    "drop": "#d62728",
    "ok": "#2ca02c",
    "muted": "#bbbbbb",
}


PRESENTER_MIN_POINTS = 12.0


PRESENTER_SCALE = 1.45


HIDPI = 2


CSS_DPI = 96


class _Mode:
    presenter = False


def set_presenter(on: bool = True) -> None:
    """Presenter mode on or off for every figure rendered from now on (see :func:`render`)."""
    _Mode.presenter = bool(on)


def presenter_on() -> bool:
    """True while presenter mode is on."""
    return _Mode.presenter


def _enlarge(fig: Figure) -> None:
    """Grow ``fig`` and every text in it for presenter mode (once per figure)."""
    from matplotlib.text import Text

    if getattr(fig, "_tunlab_presenter", False):
        return
    fig._tunlab_presenter = True  # type: ignore[attr-defined]
    width, height = fig.get_size_inches()
    fig.set_size_inches(width * PRESENTER_SCALE, height * PRESENTER_SCALE)
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for label in axis.get_ticklabels(which="both"):
                label.set_fontsize(max(float(label.get_fontsize()) * PRESENTER_SCALE,
                                       PRESENTER_MIN_POINTS))
    for text in fig.findobj(Text):
        text.set_fontsize(max(float(text.get_fontsize()) * PRESENTER_SCALE,
                              PRESENTER_MIN_POINTS))


@dataclass(frozen=True)
class Rendered:
    """A figure as PNG bytes and the width (CSS px) to show it at."""

    png: bytes
    css_width: int


def render(fig: Figure, dpi: int = 100) -> Rendered:
    """Render ``fig`` for the screen: at ``dpi`` normally; in presenter mode enlarged (text
    at least 16 CSS px), at :data:`HIDPI` times 96 dpi, to be shown at half its pixel width."""
    if _Mode.presenter:
        _enlarge(fig)
        fig.draw_without_rendering()  # tick labels get their text
        smallest = smallest_text_points(fig)
        metadata = {SMALLEST_TEXT_KEY: f"{smallest:.2f}"} if smallest else None
        png = _png(fig, CSS_DPI * HIDPI, metadata)
        return Rendered(png, png_size(png)[0] // HIDPI)
    png = _png(fig, dpi)
    return Rendered(png, png_size(png)[0])


SMALLEST_TEXT_KEY = "tunlab:smallest-text-pt"


def smallest_text_points(fig: Figure) -> float | None:
    """The smallest font size (points) of the visible, non-empty texts of ``fig``."""
    from matplotlib.text import Text

    sizes = [t.get_fontsize() for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip()]
    return float(min(sizes)) if sizes else None


def _png(fig: Figure, dpi: int, metadata: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata=metadata)
    return buf.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels, read from a PNG's header."""
    if len(png) < 24 or not png.startswith(b"\x89PNG"):
        return 0, 0
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render ``fig`` to PNG bytes (for ``ipywidgets.Image(value=...)``); presenter mode
    renders large and high-DPI (see :func:`render`)."""
    return render(fig, dpi).png


def figure_text(fig: Figure) -> list[str]:
    """Every text in ``fig`` (titles, labels, annotations, tick labels): for tests and search."""
    texts: list[str] = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))
                        if hasattr(t, "get_text")]
    return [t for t in texts if t]
