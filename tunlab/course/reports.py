"""Fate reports as HTML: one report, a table of them, and sweeps over sources/rp_filter modes."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as w

from tunlab.course.style import badge, css, muted, pre
from tunlab.fate.report import FateReport

__all__ = ["count_outcomes", "fate_box", "fate_html", "fate_table", "FateFn", "rp_sweep", "sweep"]

FateFn = Callable[..., FateReport]

_BORING = ("IpInReceives", "IpOutRequests", "IpOutTransmits")


def _boring_counter(name: str) -> bool:
    """Counters every packet moves (octets, receives): left out of the summary."""
    return (name.startswith("IpExt") or "Octets" in name or name.endswith("_bytes")
            or name in _BORING)


def fate_html(report: FateReport, elapsed: float | None = None) -> str:
    """A fate report as HTML: verdict, reasons, martians, replies, counters, why."""
    parts = [badge(str(report.verdict))]
    if report.drop_reasons:
        parts.append(" drop reason: " + ", ".join(
            f'<code class="tunlab-reason">{html.escape(r)}</code>' for r in report.drop_reasons))
    elif report.recorded_drop_reasons:  # no tracefs here: a root run's, labelled
        parts.append(" drop reason <i>(recorded on a root run, not traced here)</i>: " + ", ".join(
            f"<code>{html.escape(r)}</code>" for r in report.recorded_drop_reasons))
    if report.recorded:
        parts.append(f' <span {css("warning")}>(recorded example, no root here)</span>')
    if elapsed is not None:
        parts.append(" " + muted(f"({elapsed:.1f} s)", "span"))
    rows = ["<div>" + "".join(parts) + "</div>"]
    if report.martian_log:
        rows.append("<div><b>kernel log:</b>" + pre("\n".join(report.martian_log)) + "</div>")
    elif report.recorded_martian_log:
        rows.append("<div><b>kernel log</b> <i>(recorded on a root run, not readable here)</i>:"
                    + pre("\n".join(report.recorded_martian_log)) + "</div>")
    elif "martian line" in report.missing_evidence:
        rows.append("<div><b>kernel log:</b> no line this time: the kernel rate-limits martian "
                    "messages (10 per 5 s, machine-wide) and suppressed it</div>")
    if report.replies:
        lines = []
        for r in report.replies:
            extra = ""
            if r.icmp_type is not None:
                extra = f" icmp type {r.icmp_type} code {r.icmp_code}"
            lines.append(f"{r.dev}: {r.src} -> {r.dst} {r.proto}{extra}")
        rows.append("<div><b>replies the kernel sent:</b>" + pre("\n".join(lines)) + "</div>")
    counters = {k: v for k, v in report.counters.items() if v and not _boring_counter(k)}
    if counters:
        rows.append("<div><b>counters that moved:</b> " + ", ".join(
            f"<code>{html.escape(k)}</code> +{v}" for k, v in sorted(counters.items()))
            + "</div>")
    if report.firewall is not None:
        rows.append(f"<div><b>firewall:</b> {html.escape(report.firewall.describe())}</div>")
    if report.explanation:
        rows.append(f'<div {css("why")}><b>why:</b> {html.escape(report.explanation)}</div>')
    return f'<div {css("fate", "box")}>' + "".join(rows) + "</div>"


def fate_box(report: FateReport | None) -> w.HTML:
    """One fate report as a widget (see :func:`fate_html`)."""
    if report is None:
        return w.HTML("(no recording: start the lab with <code>sudo make lab</code>)")
    return w.HTML(fate_html(report))


def fate_table(results: Sequence[tuple[str, FateReport]]) -> w.HTML:
    """``[(label, report), ...]`` as one table: verdict, drop reasons, martian log line."""
    rows = []
    for label, report in results:
        verdict = str(report.verdict)
        reasons = ", ".join(report.drop_reasons) or "—"
        martian = "<br>".join(html.escape(m) for m in report.martian_log) or "—"
        if report.recorded_drop_reasons and reasons == "—":  # labelled: not traced here
            reasons = ", ".join(report.recorded_drop_reasons) + " (recorded)"
        if report.recorded_martian_log and martian == "—":
            martian = "<br>".join(html.escape(m) for m in report.recorded_martian_log) + \
                " <i>(recorded)</i>"
        rows.append(f"<tr><td><code>{html.escape(str(label))}</code></td>"
                    f"<td>{badge(verdict)}</td>"
                    f"<td><code>{html.escape(reasons)}</code></td><td>{martian}</td></tr>")
    return w.HTML('<table class="tunlab-fate-table"><tr><th>case</th><th>verdict</th>'
                  "<th>drop reasons</th><th>kernel log</th></tr>" + "".join(rows) + "</table>")


def rp_sweep(fate_fn: FateFn, sources: Sequence[str], modes: Sequence[int] = (0, 1, 2),
             dst: str = "10.0.0.2") -> list[tuple[str, FateReport]]:
    """The released packet from each source, under each rp_filter mode (forwarding and
    martian logging on): ``[("SRC rp_filter=N", report), ...]``."""
    results = []
    for src in sources:
        for mode in modes:
            settings = {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": mode,
                        "net.ipv4.conf.all.accept_local": 0,
                        "net.ipv4.conf.all.log_martians": 1}
            results.append((f"{src} rp_filter={mode}", fate_fn(src, dst, sysctls=settings)))
    return results


def sweep(fate_fn: FateFn, sources: Sequence[str], dst: str = "10.0.0.2",
          **kwargs: Any) -> list[tuple[str, FateReport]]:
    """Run the same packet from several source addresses; ``[(src, report), ...]``."""
    return [(src, fate_fn(src, dst, **kwargs)) for src in sources]


def count_outcomes(results: Sequence[tuple[str, FateReport]]) -> dict[str, int]:
    """Drop reasons (or the verdict when nothing was dropped) counted over fate reports."""
    counts: dict[str, int] = {}
    for _label, report in results:
        for reason in report.drop_reasons or [str(report.verdict)]:
            counts[reason] = counts.get(reason, 0) + 1
    return counts

