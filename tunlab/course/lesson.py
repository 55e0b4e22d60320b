"""The lesson object: a lab built in private namespaces (or why there is none), commands shown
like a terminal, recorded output in read-only mode, rebuild on demand and reset."""

from __future__ import annotations

import html
import os
import shlex
import threading
from collections.abc import Callable
from typing import Any

from tunlab.course import evidence as recorded_evidence
from tunlab.course.cleanup import register_cleanup, unregister_cleanup
from tunlab.course.display import _display, _html
from tunlab.course.recording import (
    from_jsonable,
    load_recording,
    recording_enabled,
    save_recording,
    to_jsonable,
)
from tunlab.course.style import css
from tunlab.kernel.host import is_privileged

__all__ = ["CommandOutput", "current_lesson", "enable_figure_display", "kernel_log", "Lesson",
           "lesson_of", "LESSONS", "presenter", "PRESENTER_ENV", "start", "START_HINT",
           "START_HINT_SCRIPT"]

START_HINT = "sudo make lab"
START_HINT_SCRIPT = "sudo bash scripts/setup.sh lab"

LESSONS: dict[str, str] = {
    "00-welcome": "Welcome: what runs here and what needs root",
    "01-tun-devices": "TUN devices: read a ping from a raw file descriptor",
    "02-routing-tables": "Routing tables: main, local, and why your own address loops back",
    "03-encapsulation": "Encapsulation: tunlab frames on the wire",
    "04-seed-goal": "The seed's goal: ping through the tunnel, end to end",
    "05-martians-and-rp_filter": "Martians and rp_filter",
    "06-drop-reasons": "Drop reasons: tracefs, IP_NOPROTO, NETFILTER_DROP, ping -I",
    "07-working-vpn": "A working VPN between two hosts",
    "08-performance": "Performance: throughput, MTU, offloads, TCP over TCP",
    "09-write-your-own": "Write your own: a TUN reader, an echo reply, a tunnel loop",
}

_LESSONS: list[Any] = []  # every Lesson of this kernel, oldest first


def current_lesson() -> Lesson | None:
    """The lesson started last in this kernel (panels without a lesson use it), or None."""
    return _LESSONS[-1] if _LESSONS else None


def lesson_of(lab: Any) -> Lesson | None:
    """The lesson whose lab is ``lab`` (or was, before it was rebuilt), or None."""
    for lesson in reversed(_LESSONS):
        if lesson.lab is lab or lab in getattr(lesson, "_past_labs", ()):
            return lesson
    return None


class CommandOutput:
    """Output of a command, shown as a terminal would (``$ command`` then its output)."""

    def __init__(self, command: str, text: str, recorded: bool = False) -> None:
        self.command = command
        self.text = text
        self.recorded = recorded

    def __str__(self) -> str:
        return self.text

    def __contains__(self, item: str) -> bool:
        return item in self.text

    def _repr_html_(self) -> str:
        badge = (f' <span {css("recorded-badge")}>recorded example</span>'
                 if self.recorded else "")
        return (f'<pre {css("command")}><b>$ {html.escape(self.command)}</b>{badge}\n'
                f"{html.escape(self.text.rstrip())}</pre>")

    def __repr__(self) -> str:
        return f"$ {self.command}\n{self.text.rstrip()}"


class Lesson:
    """One notebook's lab (or the explanation why there is none) and its recorded outputs.

    ``lab`` is ``"seed"`` (:class:`tunlab.lab.SeedLab`: mytun + mytun2 in one namespace),
    ``"two-host"`` (:class:`tunlab.lab.TwoHostLab`) or ``None`` (no lab needed).
    """

    def __init__(self, name: str, lab: str | None = "seed", quiet: bool = False,
                 **lab_kwargs: Any) -> None:
        self.name = name
        self.kind = lab
        self.lab: Any = None
        self.live = False
        self.missing: list[str] = []
        self.error = ""
        self.hosts: dict[str, Any] = {}
        self.generation = 0
        """How many times the lab was built: panels compare it to know their lab is new."""
        self._lab_kwargs = dict(lab_kwargs)
        self._attached: list[Any] = []
        self._past_labs: list[Any] = []
        self._resetting = False
        self._rebuild_hooks: list[Callable[[bool], None]] = []
        self._lock = threading.RLock()
        self._recording: dict[str, Any] = {}
        self._recorded = load_recording(name)
        self._closed = False
        if not is_privileged():
            self.missing = _missing_privileges()
        elif lab is not None:
            try:
                self.lab = self._build(lab, **dict(lab_kwargs))
                self.generation = 1
                self.live = True
            except Exception as exc:  # noqa: BLE001 - explain, and fall back to recordings
                self.error = str(exc)
        else:
            self.live = True
        register_cleanup(self)
        _LESSONS.append(self)
        if not quiet:
            _display(_html(self.banner_html()))

    @staticmethod
    def _build(kind: str, **kwargs: Any) -> Any:
        from tunlab import lab as labmod

        if kind == "seed":
            return labmod.SeedLab(kwargs.pop("label", "nb"), **kwargs)
        if kind == "two-host":
            return labmod.TwoHostLab(**kwargs)
        raise ValueError(f"unknown lab kind {kind!r}: use 'seed', 'two-host' or None")

    # -- what the lesson shows ---------------------------------------------------------------------
    @property
    def ns(self) -> Any:
        """The lab's (first) namespace, or None without a lab."""
        if self.lab is None:
            return None
        return getattr(self.lab, "ns", None) or self.lab.namespaces[0]

    def host(self, name: str) -> Any:
        """A namespace by host name: ``"a"``/``"b"`` of a two-host lab, or one added to
        :attr:`hosts` (lesson 07 adds ``"c"``); None without a lab."""
        if name in self.hosts:
            return self.hosts[name]
        return getattr(self.lab, name, None) if self.lab is not None else None

    # -- the lab's life cycle: built, removed by finish(), rebuilt on demand ----------------------
    @property
    def lab_ready(self) -> bool:
        """True when the lab exists and all its namespaces are still there."""
        if self.lab is None or self._closed:
            return False
        namespaces = list(getattr(self.lab, "namespaces", []))
        return bool(namespaces) and all(
            not getattr(ns, "_deleted", False) and os.path.exists(getattr(ns, "path", ""))
            for ns in namespaces)

    def ensure_lab(self) -> Any:
        """The lab, rebuilt first when :meth:`finish`, :meth:`close` or anything else removed
        it (a widget clicked after Run All lands here). None in read-only mode or for a lesson
        without a lab. Panels that depend on the lab are told through :meth:`on_rebuild`."""
        if not self.live or self.kind is None:
            return self.lab
        with self._lock:
            if self.lab_ready:
                return self.lab
            self._teardown()
            if self.lab is not None:
                self._past_labs.append(self.lab)
            self.lab = None
            self.lab = self._build(self.kind, **dict(self._lab_kwargs))
            self.generation += 1
            self._closed = False
            self.error = ""
            register_cleanup(self)
            resetting, self._resetting = self._resetting, False
        for hook in list(self._rebuild_hooks):
            hook(resetting)
        return self.lab

    def reset(self) -> Any:
        """Remove the lab and build a fresh one (what a panel's *reset lab* button does):
        tunnels stop, namespaces go, new ones come, panels forget their results."""
        if not self.live or self.kind is None:
            for hook in list(self._rebuild_hooks):
                hook(True)
            return self.lab
        with self._lock:
            self._teardown()
            self._closed = True
            self._resetting = True
        return self.ensure_lab()

    def attach(self, thing: Any) -> Any:
        """Stop ``thing`` (anything with ``close()``, e.g. a tunnel) before the lab goes."""
        with self._lock:
            if thing not in self._attached:
                self._attached.append(thing)
        return thing

    def attached(self, kind: type) -> list[Any]:
        """The attached objects of type ``kind`` (oldest first)."""
        return [t for t in self._attached if isinstance(t, kind)]

    def on_rebuild(self, hook: Callable[[bool], None]) -> None:
        """Call ``hook(reset)`` after the lab was rebuilt: ``reset`` is True for
        :meth:`reset` (panels start afresh), False for a rebuild on demand (panels keep their
        settings and forget results of the old lab)."""
        if hook not in self._rebuild_hooks:
            self._rebuild_hooks.append(hook)

    def _teardown(self) -> None:
        for thing in reversed(list(self._attached)):
            try:
                thing.close()
            except Exception:  # noqa: BLE001 - the lab must still go
                pass
        self.hosts.clear()
        if self.lab is not None:
            self.lab.close()

    def banner_html(self) -> str:
        """A short box: lab ready (with its namespace), or what is missing and how to start."""
        title = html.escape(LESSONS.get(self.name, self.name))
        if self.live and self.lab is not None:
            names = ", ".join(ns.name for ns in self.lab.namespaces)
            return (f'<div {css("banner-ready")}><b>{title}</b>: lab ready in private network '
                    f'namespace(s) <code>{html.escape(names)}</code>. Your own network is not '
                    f'touched; everything is removed at the end of the notebook or when the '
                    f'kernel stops.</div>')
        if self.live:
            return (f'<div {css("banner-ready")}><b>{title}</b>: running with the privileges '
                    f'the lab needs.</div>')
        why = "; ".join(self.missing) if self.missing else html.escape(self.error)
        return (f'<div {css("banner-read-only")}>'
                f'<b>{title}: read-only mode.</b> The lab cannot start here: {why}.<br>'
                f'To run it for real, start JupyterLab as root from the repository: '
                f'<code>{START_HINT}</code> (or <code>{START_HINT_SCRIPT}</code>).<br>'
                f'Below you see <b>recorded output from a real run</b> (kernel '
                f'{html.escape(str(self._recorded.get("_meta", {}).get("kernel", "?")))}), '
                f'marked <i>recorded example</i>.</div>')

    def run(self, key: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` when the lab is live (saved under ``key`` when recording), else the
        value recorded under ``key`` (None when there is none)."""
        if self.live:
            self.ensure_lab()
            value = fn()
            if recording_enabled():
                self._recording[key] = to_jsonable(value)
            if key in self._recorded:  # no tracefs here (no-sudo kernel): a root run's, labelled
                value = recorded_evidence.beside(value, from_jsonable(self._recorded[key]))
            return value
        if key in self._recorded:
            return from_jsonable(self._recorded[key])
        return None

    def sh(self, key: str, *argv: str, ns: Any = None, show: bool = True,
           timeout: float = 15) -> CommandOutput | None:
        """Run a command in the lab namespace (``ns``: a namespace or a host name like ``"b"``;
        default the lesson's) and show it like a terminal.

        Without the lab, the recorded output of ``key`` is shown instead. With ``show=False``
        nothing is shown and the :class:`CommandOutput` is returned.
        """
        command = shlex.join(argv)

        def execute() -> dict[str, str]:
            target = self.host(ns) if isinstance(ns, str) else ns
            if target is None:
                target = self.ns
            if target is None:
                from tunlab.kernel.netns import _run

                result = _run(list(argv), check=False, timeout=timeout)
            else:
                result = target.exec(list(argv), check=False, timeout=timeout)
            return {"command": command, "text": result.stdout + result.stderr}

        value = self.run(key, execute)
        if value is None:
            out = CommandOutput(command, "(no recorded output for this step: start the lab with "
                         f"`{START_HINT}` to see it live)", recorded=True)
        else:
            out = CommandOutput(value["command"], value["text"], recorded=not self.live)
        if show:
            _display(out)
            return None
        return out

    def close(self) -> None:
        """Remove the lab (namespaces, devices, threads) and save recordings. Idempotent.

        A later :meth:`run`, :meth:`sh` or :meth:`ensure_lab` builds a new lab."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._teardown()
        if self._recording:
            save_recording(self.name, self._recording)
        unregister_cleanup(self)

    def finish(self) -> None:
        """The notebook's last cell: close the lab and say what was removed."""
        names = [ns.name for ns in self.lab.namespaces] if self.lab_ready else []
        self.close()
        if names:
            from tunlab.kernel.netns import list_lab_namespaces

            gone = [n for n in names if n not in list_lab_namespaces()]
            _display(_html(f"<p>Lab removed: {len(gone)} of {len(names)} namespace(s) gone "
                           f"({', '.join(html.escape(n) for n in gone)}).</p>"))
        else:
            _display(_html("<p>Nothing to remove: no lab was running.</p>"))

    def __enter__(self) -> Lesson:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


PRESENTER_ENV = "TUNLAB_PRESENTER"


def start(name: str, lab: str | None = "seed", **lab_kwargs: Any) -> Lesson:
    """Begin a lesson: build its lab (or explain why not) and show a one-line status.

    In a notebook it also makes matplotlib Figures (as :mod:`tunlab.course.plots` returns them)
    display as images when they are a cell's value. With ``TUNLAB_PRESENTER=1`` in the
    environment, presenter mode is switched on (see :func:`presenter`).
    """
    enable_figure_display()
    lesson = Lesson(name, lab=lab, **lab_kwargs)
    if os.environ.get(PRESENTER_ENV) == "1":
        _display(presenter(True))
    return lesson


def presenter(on: bool = True) -> Any:
    """Presenter mode for a projector, one switch for the whole kernel: widget and output
    text at least 16 px at 100 % zoom, figures drawn larger and at twice the resolution
    (sharp on HiDPI screens). ``course.presenter(False)`` switches it off.

    Returns a small widget (the stylesheet and a line saying what changed): leave it as the
    cell's value. Every panel also has a *presenter mode* button doing the same.
    """
    from tunlab.course.style import set_presenter

    style = set_presenter(on)
    import ipywidgets as w

    note = w.HTML("<i>presenter mode on: text of 16 px or more, large high-DPI figures "
                  "(from the next result on; <code>course.presenter(False)</code> switches "
                  "it off)</i>" if on else "<i>presenter mode off</i>")
    return w.VBox([style, note])


def kernel_log(pattern: str = "martian", limit: int = 20) -> Any:
    """A view of the kernel log's martian lines (global, not per namespace), with a refresh
    button: what an instructor shows after a packet was dropped as a martian."""
    from tunlab.course.panels.kernel_log import kernel_log as view

    return view(pattern, limit)


def enable_figure_display() -> None:
    """Register a PNG formatter for matplotlib Figures in the running IPython (no pyplot).

    In presenter mode the PNG is high-DPI and carries its display width."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    from matplotlib.figure import Figure

    from tunlab.course.plots import presenter_on, render

    def figure_png(fig: Figure) -> Any:
        rendered = render(fig)
        if presenter_on():
            return rendered.png, {"width": rendered.css_width}
        return rendered.png

    shell.display_formatter.formatters["image/png"].for_type(Figure, figure_png)


def _missing_privileges() -> list[str]:
    missing = []
    if os.environ.get("TUNLAB_PRETEND_UNPRIVILEGED") == "1":
        missing.append("TUNLAB_PRETEND_UNPRIVILEGED=1 is set (a root kernel acting as a user)")
    elif os.geteuid() != 0:
        missing.append(f"this kernel runs as uid {os.geteuid()}, not root")
    missing.append("creating network namespaces and TUN devices needs CAP_NET_ADMIN and "
                   "CAP_SYS_ADMIN")
    return missing


