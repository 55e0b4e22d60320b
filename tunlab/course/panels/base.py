"""What every lesson panel shares: the lab bar (reset lab, kernel log, presenter mode, error
line), guarded handlers, and figures that hide when their result is no longer current.

Every lesson panel is a :class:`LabPanel`: its handlers are guarded (an exception, also one
in a background thread, shows in the panel's error line and in ``panel.errors``), and its
:class:`LabBar` has *reset lab*, *kernel log* and *presenter mode*. A panel never answers
from a lab that is gone: it asks the lesson (``lesson.run``/``lesson.ensure_lab``), which
rebuilds the lab after ``lesson.finish()``. Handlers finish within a few seconds; background
threads never ``print()``; everything a panel starts stops with its ``close()``.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any, Protocol

import ipywidgets as w

from tunlab.course import plots
from tunlab.course.panels.kernel_log import KernelLogView
from tunlab.course.style import css, presenter_style, set_presenter

__all__ = ["clear_figure", "inline_figure", "LabBar", "LabPanel", "Result", "show_figure"]


def _image(fig: Any | None = None, width: str = "100%") -> w.Image:
    image = w.Image(format="png", layout=w.Layout(width=width, max_width="900px"))
    image._tunlab_width = width
    if fig is not None:
        show_figure(image, fig)
    else:
        image.layout.display = "none"
    return image


def show_figure(image: w.Image, fig: Any, dpi: int = 80) -> None:
    """Draw ``fig`` into ``image``; in presenter mode large, sharp and at its natural size."""
    rendered = plots.render(fig, dpi)
    image.value = rendered.png
    if plots.presenter_on():
        image.layout.width = f"{rendered.css_width}px"
        image.layout.max_width = "none"
    else:
        image.layout.width = getattr(image, "_tunlab_width", "100%")
        image.layout.max_width = "900px"
    image.layout.display = None


def inline_figure(fig: Any, dpi: int = 72) -> str:
    """``fig`` as an ``<img>`` inside HTML (for results shown as a cell's value)."""
    import base64

    rendered = plots.render(fig, dpi=dpi)
    png = base64.b64encode(rendered.png).decode()
    size = (f"width:{rendered.css_width}px" if plots.presenter_on() else
            "max-width:900px;width:100%")
    return f'<img src="data:image/png;base64,{png}" style="{size}">'


def clear_figure(image: w.Image | None) -> None:
    """Hide ``image`` so that it never shows a result that is no longer the current one."""
    if image is None:
        return
    image.value = b""
    image.layout.display = "none"



def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    fix = getattr(exc, "fix", "")
    return f"{text} ({fix})" if fix and fix not in text else text


class LabBar(w.VBox):
    """The footer of every lab panel: *reset lab*, *kernel log*, *presenter mode*, and the
    panel's error line (any exception in a handler or a background thread lands there)."""

    def __init__(self, panel: LabPanel) -> None:
        self.panel = panel
        small = w.Layout(width="auto")
        self.reset_button = w.Button(description="reset lab", icon="undo", layout=small,
                                     tooltip="remove the lab's namespaces, build fresh ones "
                                             "and clear this panel (no kernel restart)")
        self.log_button = w.Button(description="kernel log", icon="list", layout=small,
                                   tooltip="show the kernel's martian lines")
        self.presenter_button = w.Button(description="presenter mode", icon="desktop",
                                         layout=small, tooltip="text of 16 px and large, "
                                         "sharp figures, for a projector")
        self.status = w.HTML()
        self.error = w.HTML()
        self.error.add_class("tunlab-error")
        self.log_view: KernelLogView | None = None
        self.log_box = w.VBox()
        self.reset_button.on_click(panel.guarded(lambda _b: panel.reset_lab()))
        self.log_button.on_click(panel.guarded(lambda _b: self.toggle_log()))
        self.presenter_button.on_click(panel.guarded(lambda _b: self.toggle_presenter()))
        super().__init__([self.error, w.HBox([self.reset_button, self.log_button,
                                              self.presenter_button, self.status]),
                          self.log_box, presenter_style()])
        self.add_class("tunlab-lab-bar")

    def show_error(self, text: str) -> None:
        self.error.value = (f'<div {css("error-line")}><b>error:</b> {html.escape(text)} '
                            "<i>(press <b>reset lab</b> to start from a fresh lab)</i></div>")

    def clear_error(self) -> None:
        self.error.value = ""

    def toggle_log(self) -> None:
        """Show (and read) or hide the kernel log view."""
        if self.log_view is None or not self.log_box.children:
            self.log_view = self.log_view or KernelLogView()
            self.log_view.refresh()
            self.log_box.children = (self.log_view,)
        else:
            self.log_box.children = ()

    def toggle_presenter(self) -> None:
        on = not plots.presenter_on()
        set_presenter(on)
        self.panel.redraw()
        # This panel redrew just now; other panels and cells redraw on their next result.
        self.status.value = ("presenter mode on: this panel redrawn large, other figures on "
                             "their next result" if on else "presenter mode off")


class Result(Protocol):
    """What an experiment gives its panel: a typed result that renders itself."""

    def _repr_html_(self) -> str:
        """The result as HTML (what the panel's output shows)."""

    def figure(self) -> Any:
        """The result's figure (a matplotlib Figure), or None."""


class LabPanel:
    """Mixin for the lessons' panels: the :class:`LabBar`, guarded handlers that show their
    errors in the panel, and a reset that clears what the panel showed.

    A panel is controls, one experiment call and an output: the experiment returns a typed
    :class:`Result`, and :meth:`show` puts its HTML into the panel's output (an
    ``ipywidgets.HTML``, which, unlike ``ipywidgets.Output``, also works headless) and its
    figure into the panel's image. Subclasses call :meth:`_setup_panel` in ``__init__``, put
    ``self.bar`` last in their children and override :meth:`reset_view`.
    """

    lesson: Any
    bar: LabBar
    errors: list[str]
    last_exception: BaseException | None

    def _setup_panel(self, lesson: Any, use_current: bool = True) -> None:
        if lesson is None and use_current:
            from tunlab.course.lesson import current_lesson

            lesson = current_lesson()
        self.lesson = lesson
        self.errors = []
        self.last_exception = None
        self._drawn: tuple[Result, w.Image | None] | None = None
        self.bar = LabBar(self)
        if lesson is not None and hasattr(lesson, "on_rebuild"):
            lesson.on_rebuild(self._lab_rebuilt)

    def guarded(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` as a widget handler: its exceptions are shown in the panel, never lost."""
        def handler(*args: Any) -> Any:
            self.bar.clear_error()
            try:
                return fn(*args)
            except Exception as exc:  # noqa: BLE001 - the panel shows it; the kernel goes on
                self.fail(exc)
                return None
        return handler

    def fail(self, exc: BaseException | str) -> None:
        """Show an error in the panel's error line and remember it (``errors``)."""
        text = exc if isinstance(exc, str) else _error_text(exc)
        if not isinstance(exc, str):
            self.last_exception = exc
        self.errors.append(text)
        self.bar.show_error(text)

    def reset_lab(self) -> None:
        """What *reset lab* does: a fresh lab for the lesson, and a clean panel."""
        if self.lesson is not None and hasattr(self.lesson, "reset"):
            self.lesson.reset()  # calls reset_view of every panel of the lesson
            lab = getattr(self.lesson, "lab", None)
            names = ", ".join(ns.name for ns in getattr(lab, "namespaces", []))
            self.bar.status.value = (f"fresh lab: <code>{html.escape(names)}</code>" if names
                                     else "panel reset (no lab here)")
        else:
            self.reset_view()
            self.bar.status.value = "panel reset"
        self.bar.clear_error()

    def _lab_rebuilt(self, reset: bool) -> None:
        if reset:
            self.reset_view()
        else:
            self.lab_rebuilt()

    def reset_view(self) -> None:
        """Start afresh: forget and hide the results shown (*reset lab* was pressed)."""

    def lab_rebuilt(self) -> None:
        """The lab was rebuilt on demand (after ``lesson.finish()``): results of the old lab
        are gone; settings the participant chose may stay. Default: :meth:`reset_view`."""
        self.reset_view()

    def show(self, result: Result, output: w.HTML, image: w.Image | None = None) -> None:
        """Show ``result`` in ``output`` and its figure in ``image``."""
        output.value = result._repr_html_()
        self.draw(result, image)

    def draw(self, result: Result, image: w.Image | None) -> None:
        """Draw ``result``'s figure into ``image`` (and again when presenter mode changes)."""
        self._drawn = (result, image)
        self.redraw()

    def forget(self, output: w.HTML | None = None, image: w.Image | None = None) -> None:
        """Show no result: empty ``output``, hide ``image`` (the result is no longer current)."""
        self._drawn = None
        if output is not None:
            output.value = ""
        clear_figure(image)

    def redraw(self) -> None:
        """Draw the current result's figure again (presenter mode changed)."""
        if self._drawn is None:
            return
        result, image = self._drawn
        figure = result.figure() if image is not None else None
        if figure is None:
            clear_figure(image)
        else:
            show_figure(image, figure)


def _ipv4(value: str) -> str | None:
    """``value`` as a dotted IPv4 address, or None when it is not one."""
    import ipaddress

    try:
        return str(ipaddress.IPv4Address(value.strip()))
    except ValueError:
        return None


def _ip(value: str) -> str | None:
    """``value`` as an IPv4 or IPv6 address, or None when it is neither."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


