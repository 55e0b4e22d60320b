"""Lesson 07's fix panel: one checkbox per fix, a ping, and where the packet stopped."""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import ipywidgets as w

from tunlab.course import plots
from tunlab.course.panels.base import LabPanel, _image, _ipv4, inline_figure
from tunlab.course.style import badge, css, invalid, pre
from tunlab.lab.vpn import VpnScenario

__all__ = ["FixPanel", "StepView", "vpn_figure", "VPN_STEPS", "VpnPing"]

VPN_STEPS = [
    plots.Step("a: ping\nroute lookup", "kernel"),
    plots.Step("a: tun0 →\nvpn-client", "device"),
    plots.Step("TCP over\nveth0", "wire"),
    plots.Step("b: vpn-server\n→ tun0", "app"),
    plots.Step("b: route input\n(forwarding?)", "kernel"),
    plots.Step("b: netfilter\nforward", "kernel"),
    plots.Step("c: echo in,\nreply route?", "kernel"),
    plots.Step("a: reply\ndelivered", "app"),
]


@dataclass(frozen=True)
class VpnPing:
    """One ``ping 192.168.50.2`` from host a with some fixes applied: whether a reply came,
    where the packet stopped (``stage``, an index into :data:`VPN_STEPS`) and why, and the
    counters that moved on each host. :meth:`to_dict` is the recorded form (what
    :meth:`tunlab.lab.vpn.VpnScenario.ping` returns)."""

    ok: bool
    reason: str = ""
    stage: int | None = None
    output: str = ""
    source: str | None = None
    fixes: list[str] = field(default_factory=list)
    tunnel_read: int = 0
    policy_drops: int = 0
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    recorded: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], recorded: bool = False) -> VpnPing:
        """A ping as :meth:`to_dict` (or the scenario) gives it."""
        known = {f.name for f in fields(cls)} - {"recorded"}
        return cls(**{k: v for k, v in data.items() if k in known}, recorded=recorded)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["recorded"]
        return data

    def verdict_html(self) -> str:
        return badge("reply received") if self.ok else badge("no reply")

    def _repr_html_(self) -> str:
        moved = "; ".join(f"{h}: " + ", ".join(f"{k} +{v}" for k, v in d.items())
                          for h, d in self.counters.items() if d)
        recorded = " <i>(recorded example)</i>" if self.recorded else ""
        where = f" (from {html.escape(self.source)})" if self.source else ""
        return (f'<div {css("box")}>{self.verdict_html()}{where} '
                f"{html.escape(self.reason)}{recorded}{pre(self.output)}"
                f"<b>counters that moved:</b> {html.escape(moved or 'none')}</div>")

    def figure(self) -> Any:
        """The two-host path with where this ping stopped."""
        return vpn_figure(self)


def vpn_figure(result: VpnPing) -> Any:
    """The two-host path with where ``result``'s ping stopped."""
    return plots.packet_path(VPN_STEPS, drop_at=result.stage, reason=result.reason,
                             verdict="reply received" if result.ok else "",
                             groups=[("host a", 0, 1), ("host b", 3, 5), ("host c", 6, 6)],
                             title="ping 192.168.50.2 from host a", stop_word="stopped")


class FixPanel(LabPanel, w.VBox):
    """Lesson 07: one checkbox per fix, a source field, a ping button, and where the packet
    stopped.

    ``scenario`` is a :class:`VpnScenario` (None without root: recorded results are shown,
    looked up by the set of fixes). When the lesson's lab was rebuilt (after
    ``lesson.finish()`` or *reset lab*), the panel builds the scenario again in the new lab
    with the ticked fixes. Headless: ``panel.boxes["route_a"].value = True;
    panel.source.value = "198.18.0.1"; panel.ping_button.click()``, then ``last_result``.
    """

    def __init__(self, lesson: Any, scenario: VpnScenario | None) -> None:
        self.scenario = scenario
        self._generation = getattr(lesson, "generation", 0)
        self._quiet = False
        self.last_result: VpnPing | None = None
        self.boxes = {name: w.Checkbox(value=False, description=text, indent=False,
                                       layout=w.Layout(width="560px"))
                      for name, text in VpnScenario.FIXES.items()}
        self.source = w.Text(value="", placeholder="default: 10.9.0.1 (tun0)",
                             description="ping -I", layout=w.Layout(width="300px"),
                             tooltip="source address for the ping, e.g. 198.18.0.1 (veth0)")
        self.ping_button = w.Button(description="ping 192.168.50.2 from a",
                                    button_style="primary", layout=w.Layout(width="240px"))
        self.result = w.HTML()
        self.path = _image()
        self._setup_panel(lesson)
        for name, box in self.boxes.items():
            box.observe(self.guarded(lambda change, name=name: self._toggle(name,
                                                                            change["new"])),
                        "value")
        self.source.observe(self.guarded(lambda _change: self._clear_result()), "value")
        self.ping_button.on_click(self.guarded(lambda _b: self.run()))
        super().__init__([w.HTML("<b>fixes</b> (tick to apply, untick to revert)"),
                          *self.boxes.values(),
                          w.HBox([self.source, self.ping_button]), self.result, self.path,
                          self.bar])

    def _live_scenario(self) -> VpnScenario | None:
        """The scenario in the lesson's current lab (rebuilt with the ticked fixes when the
        lab is new); None without a live lab."""
        if not getattr(self.lesson, "live", False) or getattr(self.lesson, "lab", None) is None:
            return self.scenario
        if hasattr(self.lesson, "ensure_lab"):
            self.lesson.ensure_lab()
        generation = getattr(self.lesson, "generation", 0)
        if self.scenario is None or generation != self._generation:
            self.scenario = VpnScenario.for_lesson(self.lesson)
            self._generation = generation
            if self.scenario is not None:
                self.scenario.set_fixes(set(self.fixes()))
        return self.scenario

    def _toggle(self, name: str, on: bool) -> None:
        if self._quiet:
            return
        self._clear_result()
        scenario = self._live_scenario()
        if scenario is not None:
            scenario.apply(name, on)

    def _clear_result(self) -> None:
        self.last_result = None
        self.forget(self.result, self.path)

    def lab_rebuilt(self) -> None:
        """Keep the ticks: the new scenario applies them (see :meth:`_live_scenario`)."""
        self._clear_result()

    def reset_view(self) -> None:
        """Fresh lab: untick every box (the new lab has none of the fixes)."""
        self._quiet = True
        try:
            for box in self.boxes.values():
                box.value = False
        finally:
            self._quiet = False
        self._clear_result()

    def fixes(self) -> list[str]:
        return sorted(n for n, box in self.boxes.items() if box.value)

    def _source(self, source: str | None) -> str | None:
        text = (source if source is not None else self.source.value).strip()
        if not text:
            return None
        if _ipv4(text) is None:
            raise ValueError(f"source {text!r} is not an IPv4 address (try 198.18.0.1)")
        return _ipv4(text)

    def run(self, source: str | None = None) -> VpnPing | None:
        """Ping once with the fixes ticked now (from ``source``, default the source field);
        show where it stopped."""
        self._clear_result()
        try:
            src = self._source(source)
        except ValueError as exc:
            self.result.value = invalid(str(exc))
            return None
        key = "vpn " + ",".join(self.fixes()) + (f" -I {src}" if src else "")

        def live() -> VpnPing:
            scenario = self._live_scenario()
            if scenario is None:
                raise RuntimeError("no scenario: the lesson's two-host lab is missing")
            return VpnPing.from_dict(scenario.ping(src))

        result = self.lesson.run(key, live)
        if result is None:
            self.result.value = ("(no recording for this combination: start the lab with "
                                 "`sudo make lab`)")
            return None
        if not isinstance(result, VpnPing):
            result = VpnPing.from_dict(result, recorded=True)
        self.last_result = result
        self.show(result, self.result, self.path)
        return result

    def step(self, fix: str | None = None, source: str | None = None) -> Any:
        """Tick ``fix`` (if given), ping once (from ``source`` when given), and return this
        state as a displayable summary (verdict line + path figure), so that a notebook keeps
        a record of every step."""
        if fix is not None:
            self.boxes[fix].value = True
        return StepView(self.run(source if source is not None else ""), fix)

    def verify_fix_set(self, fixes: set[str]) -> tuple[bool, str] | None:
        """For :func:`tunlab.course.check`: test the set against the kernels (live only)."""
        scenario = self._live_scenario()
        if scenario is None:
            return None
        ok, message = scenario.verify_fix_set(fixes)
        # put the checkboxes' state back in the scenario
        scenario.set_fixes(set(self.fixes()))
        return ok, message


@dataclass(frozen=True)
class StepView:
    """One step of lesson 07, shown as a verdict line and the path figure."""

    result: VpnPing | None
    fix: str | None = None

    def _repr_html_(self) -> str:
        if self.result is None:
            return "<p>(no recording for this step: start the lab with <code>sudo make lab"\
                   "</code>)</p>"
        r = self.result
        head = f"after <code>{html.escape(self.fix)}</code>: " if self.fix else ""
        if r.source:
            head += f"from <code>{html.escape(str(r.source))}</code>: "
        return (f"<div>{head}{r.verdict_html()} {html.escape(r.reason)}</div>"
                + inline_figure(r.figure()))

    def __repr__(self) -> str:
        if self.result is None:
            return "(not recorded)"
        return f"ok={self.result.ok} {self.result.reason}"
