"""A packet's path as a figure: the stations it passes (program, device, routing, netfilter,
delivery) and where the kernel dropped it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from tunlab.course.plots.render import COLORS
from tunlab.fate.report import FateReport

__all__ = ["drop_stage", "fate_path", "packet_path", "seed_path", "SEED_STEPS", "seed_steps",
           "Step"]


@dataclass(frozen=True)
class Step:
    """One station on a packet's way: a program, a kernel decision, a device, a wire."""

    label: str
    kind: str = "kernel"     # key of COLORS: app, kernel, device, wire, verdict


def _as_step(item: Step | str | tuple[str, str]) -> Step:
    if isinstance(item, Step):
        return item
    if isinstance(item, tuple):
        return Step(*item)
    return Step(item)


def packet_path(steps: Sequence[Step | str | tuple[str, str]], drop_at: int | None = None,
                reason: str = "", groups: Sequence[tuple[str, int, int]] = (),
                title: str = "", verdict: str = "", stop_word: str = "dropped") -> Figure:
    """A left-to-right diagram of the stations a packet passes.

    ``steps`` are :class:`Step` objects, ``(label, kind)`` tuples or labels. ``drop_at`` is the
    index of the station where the kernel dropped the packet: it gets a red cross and the
    ``reason`` underneath, and everything after it is greyed out. ``groups`` are
    ``(name, first, last)`` step ranges drawn as a box behind them (a namespace, a host).
    ``verdict`` (e.g. "delivered") is written after the last step when nothing was dropped.
    ``stop_word`` heads the reason ("dropped", or "stopped" when nothing was dropped as such).
    """
    items = [_as_step(s) for s in steps]
    n = len(items)
    width = max(6.0, 1.55 * n + 0.6)
    fig = Figure(figsize=(width, 2.9))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-0.2, n * 1.5 + 0.3)
    ax.set_ylim(-1.05, 1.45)
    ax.axis("off")
    box_w, box_h = 1.2, 0.9
    for name, first, last in groups:
        x0 = first * 1.5 - 0.1
        x1 = last * 1.5 + box_w + 0.1
        ax.add_patch(FancyBboxPatch((x0, -0.62), x1 - x0, 1.55,
                                    boxstyle="round,pad=0.02,rounding_size=0.08",
                                    facecolor="none", edgecolor="#7f7f7f", linestyle="--",
                                    linewidth=1))
        ax.text(x0 + 0.08, 0.98, name, ha="left", va="bottom", fontsize=8.5,
                color="#555555", style="italic")
    for i, step in enumerate(items):
        x = i * 1.5
        after_drop = drop_at is not None and i > drop_at
        face = COLORS.get(step.kind, COLORS["kernel"])
        edge = "#444444"
        text_color = "#111111"
        if after_drop:
            face, edge, text_color = "#f7f7f7", COLORS["muted"], "#999999"
        if drop_at == i:
            edge = COLORS["drop"]
        ax.add_patch(FancyBboxPatch((x, -box_h / 2), box_w, box_h,
                                    boxstyle="round,pad=0.02,rounding_size=0.12",
                                    facecolor=face, edgecolor=edge,
                                    linewidth=2.2 if drop_at == i else 1.1))
        ax.text(x + box_w / 2, 0, step.label, ha="center", va="center", fontsize=8.5,
                color=text_color, wrap=True)
        if i < n - 1:
            muted = drop_at is not None and i >= drop_at
            ax.add_patch(FancyArrowPatch((x + box_w + 0.02, 0), (x + 1.5 - 0.02, 0),
                                         arrowstyle="-|>", mutation_scale=12,
                                         color=COLORS["muted"] if muted else "#333333",
                                         linestyle=":" if muted else "-"))
    if drop_at is not None and 0 <= drop_at < n:
        x = drop_at * 1.5 + box_w / 2
        ax.plot([x - 0.22, x + 0.22], [0.62, 1.06], color=COLORS["drop"], linewidth=3.5)
        ax.plot([x - 0.22, x + 0.22], [1.06, 0.62], color=COLORS["drop"], linewidth=3.5)
        label = f"{stop_word}: {reason}" if reason else stop_word
        ax.text(x, -0.72, label, ha="center", va="top", fontsize=9.5, color=COLORS["drop"],
                fontweight="bold")
    elif verdict:
        x = (n - 1) * 1.5 + box_w / 2
        ax.text(x, -0.72, verdict, ha="center", va="top", fontsize=9.5, color=COLORS["ok"],
                fontweight="bold")
    if title:
        ax.text(0, 1.4, title, ha="left", va="top", fontsize=11, fontweight="bold")
    return fig


# Where in the receive path each drop reason happens (for marking the drop on a diagram).
def drop_stage(reasons: Sequence[str]) -> str:
    """``"route"``, ``"netfilter"`` or ``"deliver"``: where the first known reason strikes.

    From the one catalogue of drop reasons (:mod:`tunlab.fate.reasons`); NOT_SPECIFIED and
    unknown reasons say nothing about the place, and count as the route lookup.
    """
    from tunlab.fate.reasons import REASONS, Stage

    for reason in reasons:
        info = REASONS.get(reason)
        if info is None or reason == "NOT_SPECIFIED":
            continue
        if info.stage == Stage.FIREWALL:
            return "netfilter"
        if info.stage == Stage.LOCAL:
            return "deliver"
        return "route"
    return "route"


def fate_path(fate: FateReport | None, src: str = "", dst: str = "",
              dev: str = "mytun2", title: str = "") -> Figure:
    """What the kernel did with one packet written into ``dev`` (a :mod:`tunlab.fate` report).

    Stations: the crafted packet, the device it was written to, input routing (where
    rp_filter and the martian checks live), netfilter, and local delivery or forwarding.
    """
    verdict = str(fate.verdict) if fate else ""
    reasons = list(fate.drop_reasons) if fate else []
    via = fate.forwarded_via if fate else None
    last = {"forwarded": f"forwarded\nout of {via}" if via else "forwarded",
            "delivered": "delivered to\na protocol"}.get(
                verdict, "forwarded out /\ndelivered to\na protocol")
    steps = [Step(f"packet\n{src} →\n{dst}" if src or dst else "packet", "app"),
             Step(f"{dev}\n(write)", "device"),
             Step("ip_rcv →\nroute input\nrp_filter, martians", "kernel"),
             Step("netfilter\nforward / input", "kernel"),
             Step(last, "kernel")]
    # The kernel's answers leave through the lab's devices, most often wan0, the uplink that
    # carries the default route (the way back to a source like 200.1.2.3).
    reply_devices = sorted({r.dev for r in fate.replies}) if fate else []
    answered = (f" (the kernel's answer left through {', '.join(reply_devices)})"
                if reply_devices else "")
    drop_at = None
    reason = ""
    if verdict == "dropped":
        drop_at = {"route": 2, "netfilter": 3, "deliver": 4}[drop_stage(reasons)]
        reason = ", ".join(reasons) if reasons else "(no reason traced)"
    return packet_path(steps, drop_at=drop_at, reason=reason, verdict=verdict,
                       groups=[("lab namespace", 1, len(steps) - 1)],
                       title=title or "What the kernel did with the packet" + answered)


SEED_STEPS: list[Step] = [
    Step("ping\n10.0.0.2", "app"),
    Step("routing\n10.0.0.0/24\ndev mytun", "kernel"),
    Step("mytun", "device"),
    Step("vpn-client\nencapsulate", "app"),
    Step("TCP\n127.0.0.1", "wire"),
    Step("vpn-server\ndecapsulate", "app"),
    Step("mytun2\n(released)", "device"),
    Step("kernel\nip_rcv →\nroute input", "kernel"),
    Step("forward /\ndeliver", "kernel"),
]


def seed_steps(target: str = "10.0.0.2", reverse: bool = False) -> list[Step]:
    """The seed's path for a ping to ``target``; ``reverse`` for the way back (a ping routed
    into mytun2: vpn-server reads it, vpn-client releases it into mytun)."""
    if not reverse:
        return [Step(f"ping\n{target}", "app"), *SEED_STEPS[1:]]
    return [Step(f"ping\n{target}", "app"),
            Step("routing\n10.0.2.0/24\ndev mytun2", "kernel"),
            Step("mytun2", "device"),
            Step("vpn-server\nencapsulate", "app"),
            Step("TCP\n127.0.0.1", "wire"),
            Step("vpn-client\ndecapsulate", "app"),
            Step("mytun\n(released)", "device"),
            Step("kernel\nip_rcv →\nroute input", "kernel"),
            Step("forward /\ndeliver", "kernel")]


def seed_path(fate: FateReport | None = None, title: str = "",
              stopped_at: int | None = None, stop_reason: str = "",
              stop_word: str = "stopped", target: str = "10.0.0.2",
              reverse: bool = False) -> Figure:
    """The seed's example goal as a path; with a fate report, the kernel's verdict on it.

    ``fate`` is a :class:`~tunlab.fate.report.FateReport`. A drop is marked at the kernel's
    input routing step, or at the last step for a netfilter or delivery drop.
    ``stopped_at``/``stop_reason`` mark an earlier stop (e.g. the ping never reached mytun
    because it went to ``lo``). ``reverse`` draws the way from mytun2 through the vpn-server
    and the vpn-client into mytun (see :func:`seed_steps`).
    """
    drop_at, reason, verdict, word = stopped_at, stop_reason, "", stop_word
    if fate and drop_at is None:
        word = "dropped"
        verdict = str(fate.verdict)
        reasons = list(fate.drop_reasons)
        if verdict == "dropped":
            reason = ", ".join(reasons) if reasons else "(no reason traced)"
            drop_at = 7 if drop_stage(reasons) == "route" else 8
    return packet_path(seed_steps(target, reverse), drop_at=drop_at, reason=reason,
                       verdict=verdict, groups=[("one namespace (the seed's host)", 0, 8)],
                       title=title or "The seed's example goal", stop_word=word)
