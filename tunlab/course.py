"""What the notebooks need besides the lab itself: a lesson object that builds the lab or explains
why it cannot, recorded example output for machines without root, clean-up when the kernel
stops, and exercise checkers with hidden hints.

A notebook starts with::

    from tunlab import course
    lesson = course.start("05-martians-and-rp_filter", lab="seed")

With root, ``lesson.lab`` is a fresh lab in private namespaces and ``lesson.sh(...)`` runs real
commands in it. Without root (a hosted Jupyter, a participant who forgot ``sudo``), the lesson
says what is missing and how to start the lab, and the same calls show output recorded from a
real run (``tunlab/data/recorded/<lesson>.json``) instead of failing.

Recordings are made by running the notebooks as root with ``TUNLAB_RECORD=1`` (see
:func:`record_fate_cases` and ``python -m tunlab.course record``).
"""

from __future__ import annotations

import atexit
import datetime as _dt
import hashlib
import html
import ipaddress
import json
import os
import platform
import shlex
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from . import recorded_evidence, resources
from .privileges import is_privileged

DATA_DIR = resources.data_path()
RECORDED_DIR = DATA_DIR / "recorded"
FATE_CASES = RECORDED_DIR / "fate_cases.json"
RECORD_ENV = "TUNLAB_RECORD"
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


# -- clean-up when the kernel stops ------------------------------------------------------------

_owned: list[Any] = []
_owned_lock = threading.Lock()
_hooks_installed = False


def _close_all() -> None:
    with _owned_lock:
        owned = list(reversed(_owned))
        _owned.clear()
    for thing in owned:
        try:
            thing.close()
        except Exception:  # noqa: BLE001 - the others must still be closed
            pass


def register_cleanup(thing: Any) -> Any:
    """Close ``thing`` (anything with ``close()``) when the notebook's kernel stops.

    Covers a normal exit (atexit), a shutdown or restart from Jupyter (the kernel's
    ``do_shutdown``) and SIGTERM. After SIGKILL, the next lab removes the leftovers
    (:func:`tunlab.lab.cleanup_leftovers`). Returns ``thing``.
    """
    with _owned_lock:
        _owned.append(thing)
    _install_hooks()
    return thing


def unregister_cleanup(thing: Any) -> None:
    """Forget ``thing`` (it was closed by its owner)."""
    with _owned_lock:
        if thing in _owned:
            _owned.remove(thing)


def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_close_all)
    kernel = _ipython_kernel()
    if kernel is not None:
        original = kernel.do_shutdown

        def do_shutdown(restart: bool) -> Any:
            _close_all()
            return original(restart)

        kernel.do_shutdown = do_shutdown
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(signum: int, frame: Any) -> None:
            _close_all()
            if callable(previous):
                previous(signum, frame)
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, on_term)


def _ipython_kernel() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return getattr(shell, "kernel", None) if shell is not None else None


def _display(obj: Any) -> None:
    """Show ``obj`` in a notebook; print it elsewhere (tests, plain Python)."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        print(obj)
        return
    if get_ipython() is None:
        print(getattr(obj, "data", obj))
    else:
        display(obj)


def _html(markup: str) -> Any:
    try:
        from IPython.display import HTML
    except ImportError:
        return markup
    return HTML(markup)


# -- JSON that can hold bytes ------------------------------------------------------------------

def to_jsonable(value: Any) -> Any:
    """``value`` with bytes as ``{"__bytes__": hex}`` and objects as their ``to_dict()``."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"__bytes__": bytes(value).hex()}
    if hasattr(value, "to_dict"):
        return to_jsonable(value.to_dict())
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def from_jsonable(value: Any) -> Any:
    """The inverse of :func:`to_jsonable` (bytes come back; objects stay dicts)."""
    if isinstance(value, dict):
        if set(value) == {"__bytes__"}:
            return bytes.fromhex(value["__bytes__"])
        return {k: from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    return value


def load_recording(name: str) -> dict[str, Any]:
    """The recorded outputs of lesson ``name`` (empty when none were recorded)."""
    path = RECORDED_DIR / f"{name}.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def recording_enabled() -> bool:
    """True when lessons should save what they ran (``TUNLAB_RECORD=1``)."""
    return os.environ.get(RECORD_ENV) == "1"


# -- the lesson --------------------------------------------------------------------------------

class Output:
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
        badge = (' <span style="background:#fff3cd;color:#7a5b00;border-radius:3px;'
                 'padding:0 4px;font-size:85%">recorded example</span>') if self.recorded else ""
        return (f'<pre style="background:#f6f8fa;border-left:3px solid #4c78a8;padding:6px 10px;'
                f'margin:2px 0"><b>$ {html.escape(self.command)}</b>{badge}\n'
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
        from . import lab as labmod

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
            return (f'<div style="border-left:4px solid #2ca02c;padding:4px 10px;'
                    f'background:#eef8ee"><b>{title}</b>: lab ready in private network '
                    f'namespace(s) <code>{html.escape(names)}</code>. Your own network is not '
                    f'touched; everything is removed at the end of the notebook or when the '
                    f'kernel stops.</div>')
        if self.live:
            return (f'<div style="border-left:4px solid #2ca02c;padding:4px 10px;'
                    f'background:#eef8ee"><b>{title}</b>: running with the privileges the lab '
                    f'needs.</div>')
        why = "; ".join(self.missing) if self.missing else html.escape(self.error)
        return (f'<div style="border-left:4px solid #e0a800;padding:6px 10px;background:#fff8e1">'
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
           timeout: float = 15) -> Output | None:
        """Run a command in the lab namespace (``ns``: a namespace or a host name like ``"b"``;
        default the lesson's) and show it like a terminal.

        Without the lab, the recorded output of ``key`` is shown instead. With ``show=False``
        nothing is shown and the :class:`Output` is returned.
        """
        command = shlex.join(argv)

        def execute() -> dict[str, str]:
            target = self.host(ns) if isinstance(ns, str) else ns
            if target is None:
                target = self.ns
            if target is None:
                from .netns import _run

                result = _run(list(argv), check=False, timeout=timeout)
            else:
                result = target.exec(list(argv), check=False, timeout=timeout)
            return {"command": command, "text": result.stdout + result.stderr}

        value = self.run(key, execute)
        if value is None:
            out = Output(command, "(no recorded output for this step: start the lab with "
                         f"`{START_HINT}` to see it live)", recorded=True)
        else:
            out = Output(value["command"], value["text"], recorded=not self.live)
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
            from .netns import list_lab_namespaces

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

    In a notebook it also makes matplotlib Figures (as :mod:`tunlab.plots` returns them)
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
    from . import widgets

    style = widgets.set_presenter(on)
    import ipywidgets as w

    note = w.HTML("<i>presenter mode on: text of 16 px or more, large high-DPI figures "
                  "(from the next result on; <code>course.presenter(False)</code> switches "
                  "it off)</i>" if on else "<i>presenter mode off</i>")
    return w.VBox([style, note])


def kernel_log(pattern: str = "martian", limit: int = 20) -> Any:
    """A view of the kernel log's martian lines (global, not per namespace), with a refresh
    button: what an instructor shows after a packet was dropped as a martian."""
    from . import widgets

    return widgets.kernel_log(pattern, limit)


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

    from .plots import presenter_on, render

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


def _bench_json(path: str | os.PathLike[str] | None) -> Any:
    target = Path(path) if path else resources.bench_results() / "bench.json"
    try:
        return json.loads(target.read_text())
    except (OSError, ValueError):
        return None


def load_bench(path: str | os.PathLike[str] | None = None) -> dict[str, float]:
    """Throughput results of ``make bench`` (``bench/results/bench.json``) as
    ``{label: Mbit/s}``; empty when there are none.

    Accepts a list of results or a dict holding one under ``"results"``; each result needs a
    name (``name``/``label``/``variant``) and a rate (``mbps``/``mbit_s``/``throughput_mbps``
    or ``bits_per_second``).
    """
    data = _bench_json(path)
    if data is None:
        return {}
    items = data.get("results", data) if isinstance(data, dict) else data
    if isinstance(items, dict):
        items = [dict(v, name=k) if isinstance(v, dict) else {"name": k, "mbps": v}
                 for k, v in items.items()]
    results: dict[str, float] = {}
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        name = item.get("name") or item.get("label") or item.get("variant")
        rate = next((item[k] for k in ("mbps", "mbit_s", "throughput_mbps") if k in item), None)
        if rate is None and "bits_per_second" in item:
            rate = float(item["bits_per_second"]) / 1e6
        if name is not None and isinstance(rate, int | float):
            results[str(name)] = float(rate)
    return results


def load_bench_rtt_rounds(path: str | os.PathLike[str] | None = None,
                          ) -> dict[str, list[float | None]]:
    """The median round trip (ms) of each interleaved ping round of ``make bench``, per path:
    ``{name: [round 1, round 2, ...]}``; empty when the file or the rounds are missing."""
    data = _bench_json(path)
    items = data.get("results", []) if isinstance(data, dict) else []
    rounds: dict[str, list[float | None]] = {}
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("rtt"), dict):
            continue
        values = item["rtt"].get("rounds_p50_ms")
        if item.get("name") and isinstance(values, list) and values:
            rounds[str(item["name"])] = [float(v) if isinstance(v, int | float) else None
                                         for v in values]
    return rounds

def save_recording(name: str, values: dict[str, Any]) -> Path:
    """Merge ``values`` into ``tunlab/data/recorded/<name>.json`` with the kernel version."""
    RECORDED_DIR.mkdir(parents=True, exist_ok=True)
    path = RECORDED_DIR / f"{name}.json"
    current = load_recording(name)
    current.update(values)
    current["_meta"] = {"kernel": platform.release(),
                        "recorded": _dt.date.today().isoformat()}
    path.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    return path


# -- recorded kernel verdicts for the packet builder -------------------------------------------

def fate_key(src: str, dst: str, proto: str | int = "icmp", dport: int | None = None,
             ttl: int = 64, dev: str = "mytun2", sysctls: dict[str, Any] | None = None,
             nft_ruleset: str | None = None) -> str:
    """A canonical string for one :func:`tunlab.fate.packet_fate` call (recording lookup key)."""
    settings = {k: str(v) for k, v in sorted((sysctls or {}).items())}
    return json.dumps({"src": src, "dst": dst, "proto": str(proto),
                       "dport": dport if str(proto) in ("udp", "tcp", "17", "6") else None,
                       "ttl": int(ttl), "dev": dev, "sysctls": settings,
                       "nft": _digest(nft_ruleset.strip())[:12] if nft_ruleset and
                       nft_ruleset.strip() else None}, sort_keys=True)


def recorded_fate(src: str, dst: str, proto: str | int = "icmp", dport: int | None = None,
                  ttl: int = 64, dev: str = "mytun2", sysctls: dict[str, Any] | None = None,
                  nft_ruleset: str | None = None, **extra: Any) -> dict[str, Any]:
    """A recorded fate report for these inputs, same shape as ``FateReport.to_dict()``.

    Used when the kernel cannot run the experiment (no root). Unrecorded inputs give
    ``verdict="not recorded"`` and an explanation of how to run it live.
    """
    cases = json.loads(FATE_CASES.read_text()) if FATE_CASES.exists() else {}
    extra = {k: v for k, v in extra.items() if k != "verify_fixes" and v}
    key = fate_key(src, dst, proto, dport, ttl, dev, sysctls, nft_ruleset) if not extra else ""
    if key in cases:
        report = dict(cases[key])
        report["recorded"] = True
        return report
    return {"verdict": "not recorded", "drop_reasons": [], "martian_log": [], "replies": [],
            "counters": {}, "recorded": True,
            "explanation": "This combination was not recorded. Start the lab as root "
                           f"(`{START_HINT}`) and the kernel itself will answer."}


def live_fate(src: str, dst: str, proto: str | int = "icmp", dport: int | None = None,
              ttl: int = 64, dev: str = "mytun2", sysctls: dict[str, Any] | None = None,
              nft_ruleset: str | None = None, **extra: Any) -> dict[str, Any]:
    """Ask the kernel: :func:`tunlab.fate.packet_fate` in a fresh namespace, as a dict.

    ``extra``: the other options of packet_fate (``routes``, ``nft_rules``, ``mtus``,
    ``listen``, ``size``, ``df``, ``verify_fixes``).
    """
    from .fate import packet_fate

    report = packet_fate(src, dst, proto=proto, dport=dport, ttl=ttl, dev=dev,
                         sysctls=sysctls, nft_ruleset=nft_ruleset, **extra).to_dict()
    if recorded_evidence.lacks_traced_evidence(report):  # the no-sudo kernel: a root run's
        report = recorded_evidence.with_recorded_evidence(
            report, sysctls, lambda settings: recorded_fate(
                src, dst, proto, dport, ttl, dev, settings, nft_ruleset, **extra))
    return report


def fate(src: str, dst: str, **kwargs: Any) -> dict[str, Any]:
    """The kernel's verdict when the lab can run, else the recorded one (see recorded_fate)."""
    if is_privileged():
        return live_fate(src, dst, **kwargs)
    return recorded_fate(src, dst, **kwargs)


FORWARD_DROP_RULESET = """table inet hostfw {
    chain forward {
        type filter hook forward priority filter; policy drop;
    }
}"""
"""A host firewall that drops everything forwarded (as Docker's FORWARD policy DROP does)."""

FORWARD_ACCEPT_TUNNEL_RULESET = """table inet hostfw {
    chain forward {
        type filter hook forward priority filter; policy drop;
        iifname "mytun2" oifname "mytun" accept
        ct state established,related accept
    }
}"""
"""The same firewall with the fix: what arrives from the tunnel (mytun2) may go on to mytun."""

SEED_SYSCTLS = ("net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter",
                "net.ipv4.conf.all.accept_local", "net.ipv4.conf.all.log_martians")

# The cases the notebooks and the packet builder's defaults use; recorded for read-only mode.
FATE_CASE_INPUTS: list[dict[str, Any]] = [
    *({"src": src, "dst": "10.0.0.2",
       "sysctls": {"net.ipv4.ip_forward": fwd, "net.ipv4.conf.all.rp_filter": rp,
                   "net.ipv4.conf.all.accept_local": al, "net.ipv4.conf.all.log_martians": lm},
       "nft_ruleset": nft}
      for src in ("10.0.0.1", "200.1.2.3", "10.0.2.33", "10.0.2.1", "127.0.0.1")
      for fwd in (0, 1) for rp in (0, 1, 2) for al in (0, 1) for lm in (1,)
      for nft in (None, FORWARD_DROP_RULESET)
      if not (nft and fwd == 0)),
    {"src": "200.1.2.3", "dst": "10.0.0.2", "nft_ruleset": FORWARD_ACCEPT_TUNNEL_RULESET,
     "sysctls": {"net.ipv4.ip_forward": 1}},
    {"src": "200.1.2.3", "dst": "10.0.0.2", "nft_ruleset": FORWARD_DROP_RULESET,
     "sysctls": {"net.ipv4.ip_forward": 1}},
    {"src": "10.0.0.1", "dst": "10.0.2.33", "dev": "mytun",
     "sysctls": {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.log_martians": 1}},
    {"src": "200.1.2.3", "dst": "10.0.2.1", "proto": 253, "sysctls": {}},
    {"src": "200.1.2.3", "dst": "10.0.2.1", "proto": "icmp", "sysctls": {}},
    {"src": "200.1.2.3", "dst": "10.0.2.1", "proto": "udp", "dport": 9, "sysctls": {}},
    {"src": "10.0.0.1", "dst": "10.0.0.2", "sysctls": {}},
    # what participants type into the builder most: the seed's own martian (on mytun), a zero
    # source, and IPv6
    *({"src": src, "dst": dst, "dev": dev, "sysctls": {
        "net.ipv4.ip_forward": fwd, "net.ipv4.conf.all.rp_filter": rp,
        "net.ipv4.conf.all.accept_local": al, "net.ipv4.conf.all.log_martians": 1}}
      for src, dst, dev in (("10.0.0.1", "10.0.2.33", "mytun"), ("0.0.0.0", "10.0.2.1", "mytun2"),
                            ("0.0.0.0", "10.0.0.2", "mytun2"))
      for fwd in (0, 1) for rp in (0, 1, 2) for al in (0, 1)),
    *({"src": src, "dst": dst, "sysctls": {"net.ipv6.conf.all.forwarding": fwd}}
      for src, dst in (("2001:db8::5", "fd00::2"), ("2001:db8::5", "fd00:2::1"),
                       ("fd00::1", "fd00::2"))
      for fwd in (0, 1)),
    # lesson 06's builder as preset (protocol 253) and as exercise 06 asks (UDP to port 9)
    *({"src": "200.1.2.3", "dst": "10.0.2.1", "proto": proto, "dport": dport, "sysctls": {
        "net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 0,
        "net.ipv4.conf.all.accept_local": 0, "net.ipv4.conf.all.log_martians": 1}}
      for proto, dport in ((253, None), ("udp", 9))),
]


def record_fate_cases(cases: Iterable[dict[str, Any]] | None = None,
                      progress: Callable[[str], None] | None = None) -> Path:
    """Run every case through the real kernel and store the reports (needs root)."""
    RECORDED_DIR.mkdir(parents=True, exist_ok=True)
    stored = json.loads(FATE_CASES.read_text()) if FATE_CASES.exists() else {}
    for case in cases if cases is not None else FATE_CASE_INPUTS:
        args = dict(case)
        src, dst = args.pop("src"), args.pop("dst")
        report = live_fate(src, dst, **args)
        stored[fate_key(src, dst, **args)] = to_jsonable(report)
        if progress:
            progress(f"{src} -> {dst} {args}: {report.get('verdict')} "
                     f"{report.get('drop_reasons')}")
    FATE_CASES.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
    return FATE_CASES


# -- exercises ---------------------------------------------------------------------------------
#
# Each exercise has a pure judge: it normalises the answer (so equivalent spellings pass), says
# why a wrong answer is wrong without naming the right one, and explains a right one. Where the
# lab runs, some are also checked by the kernel itself (``verify``). Accepted answers are stored
# as SHA-256 digests of their normal form, so reading this file does not spoil them.

Judgement = tuple[bool, str]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


ANSWERS = {
    "00": "82bc4445374d9410e2b5abbed681ad9fc8044355d645ad8205c9005bc4157602",
    "01": "39fa9ec190eee7b6f4dff1100d6343e10918d044c75eac8f9e9a2596173f80c9",
    "02": "19018fa00e3019b22e05bd6930778cc8674bd1548c525e9ee7da2ecffe0993a5",
    "03": "c8b73024940ca7fb540ec5114a04f02d14a22d68ee3dd589f1a29395e7043a8d",
    "04": "5feceb66ffc86f38d952786c6d696c79c2dbc239dd4e91b46729d73a27fb57e9",
    "06": "778091c9296f10adae7668a513ef0e5ba19da030687e506af461434261e66afa",
    "07": "35c39c51869e417ec83995513f1ef32c097f09b55d3afdcc92c2644e9f9b2717",
    "08": "d034a904e224b629947dac2110cf9900b655e6934aa735d5144f92a3399785fc",
}
"""SHA-256 of each exercise's answer in its normal form: checkable, but not readable."""


def _matches(exercise: str, normal: str) -> bool:
    return _digest(normal) == ANSWERS[exercise]


class _Wrong(Exception):
    """An answer that cannot even be read as the kind of value asked for."""


def _words(value: Any) -> list[Any]:
    """``value`` as a list of parts: a tuple/list/set as is, a string split on commas,
    semicolons and white space (``"lo local"``, ``"route_a, forward_b"``)."""
    if isinstance(value, tuple | list | set | frozenset):
        return list(value)
    if isinstance(value, str):
        return [p for p in value.replace(",", " ").replace(";", " ").split() if p]
    return [value]


def _pair(value: Any, example: str) -> tuple[Any, Any]:
    parts = _words(value)
    if isinstance(value, set | frozenset) or len(parts) != 2:
        raise _Wrong(f"answer with a pair in this order: {example}")
    return parts[0], parts[1]


def _number(value: Any, what: str = "a number") -> int:
    """An int from ``60``, ``"60"``, ``"0x3c"``, ``"60 bytes"`` (never from a bool)."""
    if isinstance(value, bool):
        raise _Wrong(f"answer with {what}")
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    for unit in ("bytes", "byte", "packets", "packet"):
        text = text.removesuffix(unit).strip()
    if text in ("zero", "none", "no"):
        return 0
    try:
        return int(text, 0)
    except ValueError:
        raise _Wrong(f"answer with {what}; {value!r} is not one") from None


def _name(value: Any) -> str:
    """An identifier in upper case with underscores: ``" skb_drop_reason_no-socket"`` ->
    ``"SKB_DROP_REASON_NO_SOCKET"``."""
    return "_".join(str(value).strip().upper().replace("-", " ").replace("_", " ").split())


# -- 00: capabilities

CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
                "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
                "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
                "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
                "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
                "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
                "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE")
"""Linux capabilities by number (linux/capability.h), without the CAP_ prefix."""
_LAB_CAPABILITIES = {"NET_ADMIN", "SYS_ADMIN"}


def _capability(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(CAPABILITIES):
        return CAPABILITIES[value]
    name = _name(value).removeprefix("CAP_")
    if name.isdigit() and int(name) < len(CAPABILITIES):
        return CAPABILITIES[int(name)]
    if name not in CAPABILITIES:
        raise _Wrong(f"{value!r} is not a Linux capability (man 7 capabilities lists them)")
    return name


def _judge_capabilities(answer: Any) -> Judgement:
    held, missing = (_capability(v) for v in _pair(answer, '("CAP_...", "CAP_...")'))
    if _matches("00", f"{held}|{missing}"):
        return True, ("CAP_NET_ADMIN configures the network inside a namespace "
                      "(devices, addresses, routes, firewall, TUN devices), while creating a "
                      "namespace (unshare, and the bind mount `ip netns add` makes) needs "
                      "CAP_SYS_ADMIN. The lab needs both, so it runs as root.")
    if held == missing:
        return False, "the capability it holds and the one it lacks cannot be the same"
    others = [f"CAP_{c}" for c in (held, missing) if c not in _LAB_CAPABILITIES]
    if others:
        return False, (f"{', '.join(others)} is not one of the two capabilities the lab "
                       "needs (see the doctor's table above)")
    return False, ("both are the lab's capabilities, but the other way round: which name "
                   "speaks of network administration, which of everything else?")


# -- 01: packet information

def _judge_pi_proto(answer: Any) -> Judgement:
    if isinstance(answer, bytes | bytearray):
        value = int.from_bytes(answer, "big")
    elif isinstance(answer, str) and _name(answer) in ("ETH_P_IP", "ETH_P_IPV6"):
        value = 0x0800 if _name(answer) == "ETH_P_IP" else 0x86DD
    else:
        text = str(answer).replace(" ", "") if isinstance(answer, str) else answer
        if isinstance(text, str) and len(text) == 4 and not text.isdigit() \
                and not text.lower().startswith("0x"):
            text = "0x" + text  # "003c": two bytes in hex
        value = _number(text, "a number (decimal or 0x hex)")
    if _matches("01", str(value)):
        return True, ("0x003c = 60, the packet's total length. Without IFF_NO_PI the "
                      "kernel takes bytes 0-1 of what you write as `flags` and bytes 2-3 as "
                      "`proto`; no protocol has that number, so the packet silently vanishes.")
    if value == 0x0800:
        return False, ("0x0800 is what a packet info *should* say for IPv4, but nobody wrote "
                       "one: the kernel reads it from the first bytes of the bare packet")
    if value == 0x86DD:
        return False, "0x86dd is IPv6's EtherType; the packet written is IPv4 and has no header"
    if value == 4:
        return False, "4 is the size of the packet info; the question asks for its proto field"
    if value == 0x4500:
        return False, ("0x4500 are bytes 0-1 of the packet: the kernel reads them as `flags`; "
                       "`proto` is the next field")
    return False, ("the kernel reads `struct tun_pi { u16 flags; be16 proto; }` from the first "
                   "four bytes of what you write: which bytes of the IPv4 header are those?")


# -- 02: route get

_TABLE_IDS = {"255": "LOCAL", "254": "MAIN", "253": "DEFAULT"}


def _route_pair(answer: Any) -> tuple[str, str]:
    if isinstance(answer, str):  # "dev lo table local", as `ip route get` spells it
        answer = [w for w in _words(answer) if w.lower() not in ("dev", "table")]
    device, table = _pair(answer, '("device", "table")')
    device = _name(device).removeprefix("DEV_").lower()
    table = _name(table).removeprefix("TABLE_")
    return device, _TABLE_IDS.get(table, table).lower()


def _route_hint(device: str, table: str, device_ok: bool, table_ok: bool) -> str:
    parts = []
    if not device_ok:
        parts.append(f"the kernel does not send it through {device}" +
                     (": mytun is the way to the *other* addresses of 10.0.0.0/24, not to "
                      "mytun's own" if device == "mytun" else ""))
    if not table_ok:
        parts.append(f"the route it uses is not in table {table}" +
                     (": `ip route` shows table main, but the host's own addresses live in a "
                      "table it does not show by default" if table == "main" else ""))
    return "; ".join(parts) or "not the kernel's choice"


def _judge_route(answer: Any) -> Judgement:
    device, table = _route_pair(answer)
    if _matches("02", f"{device}|{table}"):
        return True, ("`ip route get 10.0.0.1` says `local 10.0.0.1 dev lo table "
                      "local`: the host's own addresses are in table local, which the kernel "
                      "consults first, and are delivered through lo, so mytun never sees them.")
    # which part is right: pair it with each plausible other part
    device_ok = any(_matches("02", f"{device}|{t}") for t in ("local", "main", "default"))
    table_ok = any(_matches("02", f"{d}|{table}") for d in ("lo", "mytun", "mytun2"))
    return False, _route_hint(device, table, device_ok, table_ok)


def _verify_route_get(answer: Any, lesson: Any) -> Judgement | None:
    """Exercise 02: compare with the kernel's own `ip route get 10.0.0.1`."""
    if lesson is None or not getattr(lesson, "live", False) or lesson.ns is None:
        return None
    device, table = _route_pair(answer)
    if hasattr(lesson, "ensure_lab"):
        lesson.ensure_lab()  # checked again after lesson.finish(): ask a fresh lab
    out = lesson.ns.ip("route", "get", "10.0.0.1")
    local = lesson.ns.ip("route", "show", "table", "local")
    kernel_device = out.split(" dev ")[1].split()[0] if " dev " in out else "?"
    kernel_table = "local" if "local 10.0.0.1 " in local else "main"
    device_ok, table_ok = device == kernel_device, table == kernel_table
    if device_ok and table_ok:
        return True, (f"Right, the kernel agrees: `{out.strip()}`. The host's own addresses "
                      "are in table local, which the kernel consults first, and are delivered "
                      "through lo, so mytun never sees them.")
    return False, _route_hint(device, table, device_ok, table_ok)


# -- 03: frame header

def _header_bytes(answer: Any) -> bytes:
    if isinstance(answer, bytes | bytearray):
        return bytes(answer)
    if isinstance(answer, list | tuple) and all(isinstance(b, int) for b in answer):
        try:
            return bytes(answer)
        except ValueError:
            raise _Wrong("each byte is a number from 0 to 255") from None
    text = str(answer).strip().lower()
    for junk in ("0x", "\\x", " ", ":", "-", ","):
        text = text.replace(junk, "")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise _Wrong('answer with the bytes in hex, e.g. "00 11 22 33 44 55 66 77"') from None


def _judge_header(answer: Any) -> Judgement:
    from .proto import framing

    header = _header_bytes(answer)
    if _matches("03", header.hex()):
        return True, ("54 4c is the magic `TL`, 01 the version, 02 the type DATA, and "
                      "00 00 05 78 the payload length 1400, big endian: the packet costs 1408 "
                      "bytes on the TCP stream, before TCP's and IP's own headers.")
    if len(header) != framing.HEADER_SIZE:
        return False, f"the header has {framing.HEADER_SIZE} bytes; you gave {len(header)}"
    magic, version, kind, length = framing.HEADER.unpack(header)
    if magic != framing.MAGIC:
        return False, "bytes 0-1 are the magic: the two ASCII letters every frame starts with"
    if version != framing.VERSION:
        return False, "byte 2 is the protocol version, and tunlab speaks only one"
    if kind == framing.FrameType.GSO_DATA:
        return False, ("type GSO_DATA carries a virtio-net header before the packet (the fast "
                       "path); the vpn-client of this lesson sends plain packets")
    if kind != framing.FrameType.DATA:
        return False, "byte 3, the type, must say that the frame carries a packet"
    if length == 1400 + framing.HEADER_SIZE:
        return False, "the length field counts the payload only, not the header"
    if header[4:] == (1400).to_bytes(4, "little"):
        return False, "bytes 4-7 are big endian: the most significant byte comes first"
    return False, ("bytes 4-7 are the payload's length, the 1400-byte packet, as a 32-bit "
                   "big-endian number")


# -- 04: echo count

def _judge_echo_count(answer: Any) -> Judgement:
    count = _number(answer, "a number of packets")
    if _matches("04", str(count)):
        return True, ("None: 10.0.0.1 is the host's own address: the kernel routes the "
                      "ping through lo (lesson 02) and answers it itself, so the vpn-client "
                      "reads nothing from mytun.")
    return False, ("the vpn-client only sees what the kernel routes into mytun: which device "
                   "does the kernel pick for one of its own addresses (lesson 02)?")


def _verify_echo_count(answer: Any, panel: Any) -> Judgement | None:
    """Exercise 04: ping 10.0.0.1 through the live seed lab and count what the client read."""
    if panel is None or not hasattr(panel, "run") or getattr(panel, "server", None) is None:
        return None
    if not getattr(panel.lesson, "live", False):
        return None
    count = _number(answer, "a number of packets")
    result = panel.run("10.0.0.1")
    if result is None:
        return None
    seen = int(result["echo_read"])
    if count == seen:
        return True, (f"The vpn-client read {seen} echo request(s) for 10.0.0.1: the kernel "
                      "answered the ping itself via lo.")
    return False, ("the panel just pinged 10.0.0.1 and the vpn-client's count differs: look at "
                   "what it read from mytun, and ask which device the kernel picks for its "
                   "own address (lesson 02)")


# -- 05: a source that strict rp_filter lets through

def _judge_source_offline(answer: Any) -> Judgement:
    try:
        address = ipaddress.IPv4Address(str(answer).strip())
    except ValueError:
        return False, f"{answer!r} is not an IPv4 address"
    net = ipaddress.IPv4Network("10.0.2.0/24")
    if address == ipaddress.IPv4Address("10.0.2.1"):
        return False, ("that is mytun2's own address: a packet arriving from outside with one "
                       "of the host's own addresses as source is a martian (IP_LOCAL_SOURCE)")
    if address in (net.network_address, net.broadcast_address):
        return False, f"{address} is not a host address of its subnet: the kernel drops it"
    if address in ipaddress.IPv4Network("10.0.0.0/24"):
        return False, (f"the kernel routes {address} out of mytun (or delivers it locally), "
                       "not out of mytun2 where the packet came in: rp_filter or the martian "
                       "check drops it")
    if address in net:
        return True, (f"The kernel would route a reply to {address} out of mytun2, the device "
                      "the packet came in on, so strict rp_filter lets it through and it is "
                      "forwarded to 10.0.0.2.")
    return False, (f"strict rp_filter asks where a reply to {address} would go: not out of "
                   "mytun2, where the packet came in, so the kernel drops it")


def _verify_forwarded_source(answer: Any, lesson: Any) -> Judgement | None:
    """Exercise 05: ask the kernel whether a packet from ``answer`` to 10.0.0.2 is forwarded."""
    try:
        ipaddress.IPv4Address(str(answer).strip())
    except ValueError:
        return False, f"{answer!r} is not an IPv4 address"
    answer = str(answer).strip()
    settings = {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 1,
                "net.ipv4.conf.all.accept_local": 0, "net.ipv4.conf.all.log_martians": 1}
    if not is_privileged():
        return None
    report = live_fate(answer, "10.0.0.2", sysctls=settings)
    verdict, reasons = report.get("verdict"), report.get("drop_reasons") or []
    if verdict == "forwarded":
        return True, (f"The kernel forwarded {answer} -> 10.0.0.2 out of mytun: the reverse "
                      "path to that source is mytun2, the device it arrived on, so strict "
                      "rp_filter is satisfied.")
    return False, (f"The kernel said: {verdict} {', '.join(reasons)}. "
                   f"{report.get('explanation', '')}")


# -- 06: drop reason of a UDP packet to a closed port

_COURSE_REASONS = {
    "IP_NOPROTO": "IP_NOPROTO is protocol 253's reason (above): UDP has a handler, so this "
                  "packet gets one step further",
    "IP_INADDRERRORS": "IP_INADDRERRORS is for a packet that is not for this host and not "
                       "forwarded; 10.0.2.1 is this host's own address",
    "IP_RPFILTER": "IP_RPFILTER needs rp_filter on, and the builder's packet leaves it at 0",
    "NETFILTER_DROP": "there is no firewall in this packet's way",
    "IP_LOCAL_SOURCE": "200.1.2.3 is not one of this host's addresses: no local-source martian",
}


def _judge_drop_reason(answer: Any) -> Judgement:
    if not isinstance(answer, str):
        return False, 'answer with the drop reason\'s name, e.g. "IP_NOPROTO"'
    name = _name(answer).removeprefix("SKB_DROP_REASON_")
    if _matches("06", name):
        return True, ("NO_SOCKET. UDP is delivered to its handler, which finds no socket "
                      "bound to port 9, frees the packet with NO_SOCKET (counter UdpNoPorts) "
                      "and answers ICMP port unreachable (type 3, code 3).")
    if name in _COURSE_REASONS:
        return False, _COURSE_REASONS[name]
    return False, (f"the kernel does not report {name} for this packet: send it with the "
                   "builder (protocol UDP, port 9) and read the reason in its result")


# -- 07: the set of fixes

_FIX_ORDER = ("route_a", "forward_b", "firewall_b", "route_c")
_FIX_STOPS = {
    "route_a": "a has no route to 192.168.50.2 (ENETUNREACH, IpOutNoRoutes)",
    "forward_b": "IP_INADDRERRORS on b: forwarding is off",
    "firewall_b": "NETFILTER_DROP on b: forward policy drop",
    "route_c": "c has no route back to 10.9.0.1: the reply is never sent",
}
"""Where the packet stops when this fix (and every later one) is missing: the lesson's steps."""


def _fix_names(answer: Any) -> set[str]:
    if isinstance(answer, dict):
        answer = [k for k, v in answer.items() if v]
    return {_name(a).lower() for a in _words(answer)}


def _judge_fixes(answer: Any) -> Judgement:
    from .vpn_lab import VpnScenario

    fixes = _fix_names(answer)
    unknown = fixes - set(VpnScenario.FIXES)
    if unknown:
        return False, (f"unknown fix names: {', '.join(sorted(unknown))}; the panel's are "
                       f"{', '.join(VpnScenario.FIXES)}")
    if _matches("07", "|".join(sorted(fixes))):
        return True, ("The ping works with these fixes and fails without any one: a "
                      "needs a route into the tunnel, b must forward and its firewall let the "
                      "packets through, and c needs a route back. rp_filter is satisfied because "
                      "the routes are symmetric.")
    missing = [f for f in _FIX_ORDER if f not in fixes]
    if missing:
        return False, (f"with exactly these fixes the ping still fails: the packet stops where "
                       f"the lesson's step says: {_FIX_STOPS[missing[0]]}")
    extra = sorted(fixes - set(_FIX_ORDER))
    return False, f"the ping also works without {', '.join(extra)}: it is not needed"


def _verify_fix_set(answer: Any, panel: Any) -> Judgement | None:
    """Exercise 07: apply exactly these fixes in the live scenario, and each one less."""
    if panel is None or not hasattr(panel, "verify_fix_set"):
        return None
    return panel.verify_fix_set(_fix_names(answer))


# -- 08: MSS

def _judge_mss(answer: Any) -> Judgement:
    mss = _number(answer, "a number of bytes")
    if _matches("08", str(mss)):
        return True, ("1400 - 20 (IPv4 header) - 20 (TCP header) = 1360 bytes of TCP "
                      "payload per segment. The tunnel's own headers (tunlab's 8, the outer "
                      "TCP and IP) are added on the underlay, outside tun0.")
    if mss == 1400:
        return False, "1400 is the MTU: the whole IP packet; the MSS counts TCP's payload only"
    if mss == 1380:
        return False, "only one header taken off: both the IP and the TCP header come off"
    if mss == 1460:
        return False, "that is the MSS for MTU 1500; this tun0 has a smaller MTU"
    if mss < 1360:
        return False, ("too small: the tunnel's own overhead is added outside tun0 (on the "
                       "underlay), not inside the packets the kernel hands to it")
    return False, "the MSS is the MTU minus the headers in front of TCP's payload"


def _plain_normal(value: Any) -> str:
    """A plain normal form: parts joined by ``|`` (sets sorted), text stripped, lower case,
    without spaces, numbers in decimal."""
    if isinstance(value, tuple | list):
        return "|".join(_plain_normal(v) for v in value)
    if isinstance(value, set | frozenset):
        return "|".join(sorted(_plain_normal(v) for v in value))
    text = str(value).strip().lower().replace(" ", "")
    try:
        return str(int(text, 0))
    except ValueError:
        return text


def _digest_judge(answers: set[str], explain: str) -> Callable[[Any], Judgement]:
    def judge(answer: Any) -> Judgement:
        if _digest(_plain_normal(answer)) in answers:
            return True, explain
        return False, "not this one: read the question again, or ask for a hint"
    return judge


class Exercise:
    """A question whose answer is checked without showing it; hints come one by one on request.

    ``judge`` reads an answer the way a teacher would (equivalent spellings pass) and returns
    ``(ok, message)``: why it is wrong without giving the answer, or why it is right.
    ``verify``, when given, checks the answer against the live kernel and returns
    ``(ok, message)``, or None to fall back to ``judge``.
    """

    def __init__(self, question: str, judge: Callable[[Any], Judgement] | Sequence[str],
                 hints: Sequence[str],
                 verify: Callable[[Any, Any], Judgement | None] | None = None,
                 explain: str = "") -> None:
        self.question = question
        # The older form: digests of accepted answers (see _plain_normal) and an explanation.
        self.judge = judge if callable(judge) else _digest_judge(set(judge), explain)
        self.hints = list(hints)
        self.verify = verify

    def is_correct(self, answer: Any) -> bool:
        """True when ``judge`` accepts ``answer`` (without the kernel)."""
        try:
            return self.judge(answer)[0]
        except _Wrong:
            return False


EXERCISES: dict[str, Exercise] = {
    "00": Exercise(
        "A container holds only one of the lab's two capabilities. In its own network "
        "namespace it can add routes, addresses and TUN devices, but `ip netns add` fails "
        "with 'Operation not permitted'. Which capability does it hold, and which one is "
        "missing? Answer as a pair: (held, missing).",
        _judge_capabilities,
        ["The doctor's table names the two capabilities.",
         "One of them is about network administration only.",
         "man 7 capabilities: creating a namespace (unshare, setns, mount) is under the "
         "catch-all capability."]),
    "01": Exercise(
        "A program opens mytun *without* IFF_NO_PI and writes a bare 60-byte IPv4 packet "
        "into it (it starts `45 00 00 3c`). Which number does the kernel read as the packet "
        "information's `proto` field? Answer with a number (decimal or 0x hex).",
        _judge_pi_proto,
        ["The kernel expects `struct tun_pi { u16 flags; be16 proto; }` before the packet.",
         "Nobody wrote one: the first four bytes of the packet take its place.",
         "proto is bytes 2-3, read big endian."]),
    "02": Exercise(
        "Through which device does the kernel send `ping 10.0.0.1` (mytun's own address), and "
        "which routing table holds the route it uses? Answer as a pair (device, table).",
        _judge_route,
        ["Run `ip route get 10.0.0.1` in the widget above.",
         "Addresses of this host are in a table that `ip route` does not show by default.",
         "`ip route show table local`."],
        verify=_verify_route_get),
    "03": Exercise(
        "The vpn-client reads a 1400-byte packet from mytun. Which 8 header bytes does it put "
        "in front of it? Answer in hex, e.g. \"00 11 22 33 44 55 66 77\".",
        _judge_header,
        ["The table under 'One frame' gives each field's place and size.",
         "The magic is ASCII: look up the letters' codes (or run "
         "`framing.encode_packet(packet)[:8]` on a small packet and compare).",
         "1400 = 0x578; the length is a 4-byte big-endian number."]),
    "04": Exercise(
        "Ping 10.0.0.1 (mytun's own address) instead of 10.0.0.2 with the panel above. How many "
        "packets does the vpn-client read from mytun for it?",
        _judge_echo_count,
        ["Lesson 02: which device does the kernel pick for its own address?",
         "A packet routed to `lo` never enters mytun.",
         "The client only sees what the kernel routes into mytun."],
        verify=_verify_echo_count),
    "05": Exercise(
        "With ip_forward=1 and strict rp_filter=1, find a source address for which the packet "
        "to 10.0.0.2, released on mytun2, is forwarded and not dropped.",
        _judge_source_offline,
        ["Strict rp_filter asks: would I send a reply to this source out of the device the "
         "packet came in on?",
         "Which sources does the kernel route out of mytun2?",
         "Any host address in mytun2's subnet that is not mytun2's own address."],
        verify=_verify_forwarded_source),
    "06": Exercise(
        "Send a UDP packet from 200.1.2.3 to port 9 of mytun2's own address 10.0.2.1, where "
        "nothing listens, with the packet builder. Which drop reason does the kernel report?",
        _judge_drop_reason,
        ["In the builder: protocol UDP, destination 10.0.2.1, port 9, then send.",
         "UDP has a handler, unlike protocol 253: the packet gets further this time.",
         "The handler looks for a socket bound to the port; dropreason-core.h names what "
         "happens when there is none."]),
    "07": Exercise(
        "Which fixes are needed, all together and nothing more, for `ping 192.168.50.2` from "
        "host a to work? Answer with a set of fix names from the panel.",
        _judge_fixes,
        ["Follow the packet: a's routing, b's forwarding, b's firewall, c's reply.",
         "Replies need a route back too.",
         "rp_filter is fine here: routes are symmetric."],
        verify=_verify_fix_set),
    "08": Exercise(
        "tun0 has MTU 1400. What TCP MSS does a connection through the tunnel announce "
        "(IPv4, without TCP options)?",
        _judge_mss,
        ["The section on the MSS above shows the rule for MTU 1500.",
         "Both headers in front of TCP's payload are 20 bytes here.",
         "The tunnel's own overhead is outside tun0: it does not count."]),
}


def register_exercise(key: str, exercise: Exercise) -> None:
    """Add an exercise defined in another module (:mod:`tunlab.handson` adds 09a-09c)."""
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
    try:
        result = ex.verify(answer, lesson) if ex.verify is not None else None
        ok, message = result if result is not None else ex.judge(answer)
    except _Wrong as wrong:
        ok, message = False, str(wrong)
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
        color, mark = ("#2ca02c", "✔ Correct.") if self.ok else ("#d62728", "✘ Not yet:")
        more = "" if self.ok else " Try again, or ask the hint box for a hint."
        return (f'<div class="tunlab-check" style="border-left:4px solid {color};'
                f'padding:4px 10px"><b style="color:{color}">{mark}</b> '
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
    return Note(f'<div style="border-left:4px solid #4c78a8;padding:4px 10px;'
                f'background:#f3f7fc"><b>Exercise {exercise}.</b> {html.escape(text)}</div>',
                f"Exercise {exercise}. {text}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tunlab.course record``: record fate cases for read-only mode (root)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] != ["record"]:
        print("usage: python -m tunlab.course record", file=sys.stderr)
        return 2
    if not is_privileged():
        print("recording needs root: sudo .venv/bin/python -m tunlab.course record",
              file=sys.stderr)
        return 2
    path = record_fate_cases(progress=print)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
