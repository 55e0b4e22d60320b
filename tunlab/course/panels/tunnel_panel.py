"""Lesson 08's tunnel panel: start/stop the tunnel, push iperf3 through it, watch it live."""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as w

from tunlab.course import plots
from tunlab.course.cleanup import register_cleanup, unregister_cleanup
from tunlab.course.lesson import lesson_of
from tunlab.course.panels.base import LabPanel, _error_text, _image, show_figure
from tunlab.course.style import css
from tunlab.lab.measure import lab_iperf3, set_loss

__all__ = ["TunnelPanel"]


class TunnelPanel(LabPanel, w.VBox):
    """Start/stop a tunnel, push traffic through it, and watch packets/s and Mbit/s live.

    ``lab`` is a :class:`tunlab.lab.TwoHostLab` (lesson 08). A background thread samples the
    client's counters every ``interval`` seconds and renders :func:`tunlab.course.plots.throughput`
    into an ``ipywidgets.Image`` (it never prints; it stops with :meth:`stop` or after
    ``max_seconds``). Traffic: ``iperf3`` from host a to the far tunnel end. When the lab
    belongs to a lesson and is gone (``lesson.finish()``), *start tunnel* builds a new one.

    Headless: ``panel.start_button.click()``, ``panel.traffic(seconds=2)``, then ``samples``,
    ``results``; ``panel.stop_button.click()``.
    """

    def __init__(self, lab: Any, interval: float = 0.5, max_seconds: float = 300.0,
                 window: float = 20.0) -> None:
        self._lab = lab
        self.interval = interval
        self.max_seconds = max_seconds
        self.window = window
        self.samples: list[dict[str, float]] = []
        self.results: dict[str, float] = {}
        self.error: str | None = None
        self.frames_rendered = 0
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._t0 = 0.0
        self._traffic: threading.Thread | None = None
        self._state_lock = threading.RLock()
        self.start_button = w.Button(description="start tunnel", button_style="success",
                                     icon="play")
        self.stop_button = w.Button(description="stop tunnel", button_style="danger",
                                    icon="stop", disabled=True)
        self.seconds = w.IntSlider(value=3, min=1, max=10, description="iperf3 s",
                                   continuous_update=False)
        self.traffic_button = w.Button(description="iperf3 through tunnel", disabled=True,
                                       layout=w.Layout(width="200px"))
        self.loss = w.IntSlider(value=0, min=0, max=10, description="loss %",
                                continuous_update=False, disabled=lab is None)
        self.status = w.HTML(value="tunnel stopped")
        self.image = _image()
        self._setup_panel(lesson_of(lab) if lab is not None else None,
                          use_current=lab is None)
        self.loss.observe(self.guarded(lambda change: self.set_loss(change["new"])), "value")
        self.start_button.on_click(self.guarded(lambda _b: self.start()))
        self.stop_button.on_click(self.guarded(lambda _b: self.stop()))
        self.traffic_button.on_click(self.guarded(
            lambda _b: self.traffic(int(self.seconds.value), wait=False)))
        super().__init__([w.HBox([self.start_button, self.stop_button]),
                          w.HBox([self.seconds, self.traffic_button]),
                          w.HBox([self.loss, w.HTML("of a's packets on the underlay, lost on "
                                                    "the way to b (nftables)")]),
                          self.status, self.image, self.bar])
        show_figure(self.image, plots.throughput([], title="Tunnel traffic"))
        if lab is None:
            self.start_button.disabled = True
            self.status.value = ("read-only: no lab here (start it with <code>sudo make lab"
                                 "</code>); below, samples recorded from a real run")

    @property
    def lab(self) -> Any:
        """The lab the tunnel runs in: the lesson's current one when the panel has a lesson."""
        if self._lab is not None and self.lesson is not None and \
                getattr(self.lesson, "lab", None) is not None:
            return self.lesson.lab
        return self._lab

    def _lab_ready(self) -> bool:
        if self._lab is None:
            return False
        if self.lesson is not None and hasattr(self.lesson, "lab_ready") and \
                getattr(self.lesson, "lab", None) is not None:
            return bool(self.lesson.lab_ready)
        return bool(getattr(self._lab, "namespaces", [None]))

    def _ensure_lab(self) -> Any:
        if self.lesson is not None and hasattr(self.lesson, "ensure_lab") and \
                (self.lesson.lab is self._lab or self._lab in self.lesson._past_labs):
            return self.lesson.ensure_lab()
        return self._lab

    def set_loss(self, percent: float) -> None:
        """Lose ``percent`` % of what host a sends on the underlay, as it reaches b (see
        :func:`set_loss`)."""
        if self._lab is None or getattr(self, "_quiet_loss", False):
            return
        if not self._lab_ready():
            if percent:
                self._ensure_lab()
            else:
                return  # no lab, no loss rule to remove
        set_loss(self.lab.b, percent)  # a's packets, lost as they reach b

    def reset_view(self) -> None:
        """The lab was rebuilt: the tunnel is gone, so is its loss rule; start from zero."""
        with self._state_lock:
            self._stop_threads()
        self.samples = []
        self.results = {}
        self.error = None
        self._quiet_loss = True  # the old lab took its loss rule with it
        try:
            self.loss.value = 0
        finally:
            self._quiet_loss = False
        self._buttons(running=False)
        self.status.value = "tunnel stopped (new lab)"
        show_figure(self.image, plots.throughput([], title="Tunnel traffic"))

    def redraw(self) -> None:
        self.render()

    def run_demo(self, lesson: Any, seconds: int = 3) -> Any:
        """Start, push ``seconds`` of iperf3 through the tunnel, and return the throughput
        figure; without a live lab, show the samples recorded from a real run."""
        def live() -> dict[str, Any]:
            self.start()
            mbps = self.traffic(seconds)
            time.sleep(self.interval * 2)
            return {"samples": list(self.samples), "mbps": mbps}

        data = lesson.run("live_panel", live)
        if data is None:
            return None
        if not lesson.live:
            self.show_samples(data["samples"])
        return plots.throughput(data["samples"], live=False,
                                title=f"Tunnel traffic during {seconds} s of iperf3")

    def show_samples(self, samples: Sequence[Mapping[str, float]]) -> None:
        """Draw given (e.g. recorded) samples instead of live ones."""
        self.samples = [dict(s) for s in samples]
        self.render()

    @property
    def running(self) -> bool:
        return self._sampler is not None and self._sampler.is_alive()

    def _buttons(self, running: bool) -> None:
        self.start_button.disabled = running or self._lab is None
        self.stop_button.disabled = not running
        self.traffic_button.disabled = not running

    def start(self) -> None:
        """Start server + client (``lab.start_tunnel()``) and the sampling thread; in a new
        lab when the lesson's lab was removed."""
        with self._state_lock:
            if self.running and self._lab_ready() and \
                    getattr(self.lab, "client", None) is not None:
                return
            self._stop_threads()
            lab = self._ensure_lab()
            register_cleanup(self)
            if getattr(lab, "client", None) is None:
                lab.close_devices()  # a stopped tunnel's devices: let the new one attach
                lab.start_tunnel()
            self.samples = []
            self._stop.clear()
            self._t0 = time.monotonic()
            self._sampler = threading.Thread(target=self._sample_loop, name="tunlab-panel",
                                             daemon=True)
            self._sampler.start()
            self._buttons(running=True)
            self.status.value = ("tunnel running: client in a, server in b; "
                                 + self._ping_through(lab))

    @staticmethod
    def _ping_through(lab: Any) -> str:
        """One ping from a to b's tunnel address: the panel says whether the tunnel carried it."""
        result = lab.a.exec(["ping", "-c1", "-W2", "-n", "10.9.0.2"], check=False, timeout=6)
        if result.returncode == 0:
            return "ping 10.9.0.2 through it: answered"
        return f"ping 10.9.0.2 through it: <b>no reply</b> (ping exit code {result.returncode})"

    def _sample(self) -> dict[str, float] | None:
        client = getattr(self.lab, "client", None)
        if client is None:
            return None
        snap = client.stats.snapshot()
        return {"t": time.monotonic() - self._t0, "packets": snap["read_packets"],
                "bytes": snap["read_bytes"]}

    def _thread_failed(self, exc: BaseException) -> None:
        self.error = _error_text(exc)
        self.status.value = f'<span {css("failed")}>{html.escape(self.error)}</span>'
        self.fail(exc)

    def _sample_loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                sample = self._sample()
                if sample is not None:
                    self.samples.append(sample)
                    self.render()
            except Exception as exc:  # noqa: BLE001 - report in the panel, never print
                self._thread_failed(exc)
                return
            self._stop.wait(self.interval)

    def render(self) -> None:
        """Draw the current samples into the image (called by the sampler thread)."""
        fig = plots.throughput(self.samples[-200:], title="Tunnel traffic (client → server)",
                               window=self.window)
        show_figure(self.image, fig)
        self.frames_rendered += 1

    def traffic(self, seconds: int = 3, wait: bool = True) -> float | None:
        """iperf3 from a to b through the tunnel for ``seconds``; returns Mbit/s when waited."""
        if self._traffic is not None and self._traffic.is_alive():
            return None
        if getattr(self.lab, "client", None) is None:
            self.status.value = "start the tunnel first"
            return None
        label = f"iperf3 {seconds}s #{len(self.results) + 1}"
        lab = self.lab

        def body() -> None:
            try:
                mbps = lab_iperf3(lab, "10.9.0.2", seconds)
                self.results[label] = mbps
                self.status.value = f"{label}: {mbps:,.0f} Mbit/s through the tunnel"
            except Exception as exc:  # noqa: BLE001 - report in the panel, never print
                self._thread_failed(exc)

        self.status.value = f"{label}: running…"
        self._traffic = threading.Thread(target=body, name="tunlab-iperf3", daemon=True)
        self._traffic.start()
        if wait:
            self._traffic.join(seconds + 15)
            return self.results.get(label)
        return None

    def _stop_threads(self) -> None:
        self._stop.set()
        if self._traffic is not None:
            self._traffic.join(20)
        if self._sampler is not None:
            self._sampler.join(5)
        self._sampler = None

    def stop(self) -> None:
        """Stop sampling and the tunnel (the lab stays); remove the loss rule."""
        with self._state_lock:
            self._stop_threads()
            if self.loss.value:
                self.loss.value = 0
            lab = self.lab
            if lab is not None and hasattr(lab, "stop_tunnel"):
                lab.stop_tunnel()
                lab.close_devices()  # so that start can attach to tun0 again
            self._buttons(running=False)
            self.status.value = "tunnel stopped"

    def close(self) -> None:
        """Stop everything this panel started. The widgets stay usable: *start tunnel*
        starts again (in a new lab when the lesson's lab was removed)."""
        if self._lab is not None:
            self.stop()
        unregister_cleanup(self)


