"""The bench's report: the table printed at the end, the chart, and the JSON results file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunlab.bench.rig import VETH, WIREGUARD
from tunlab.bench.targets import describe_target

__all__ = ["format_table", "write_chart", "write_results"]


def _loaded_lines(loaded: list[dict[str, Any]]) -> list[str]:
    if not loaded:
        return []
    lines = ["", f"{'under load (iperf3 + ping)':<27}{'Mbit/s':>9}{'RTT p50':>9}{'p90':>7}"
                 f"{'p99':>7} ms{'lost':>6}"]
    for r in loaded:
        rtt = r["rtt"]
        lat = (f"{rtt['p50_ms']:9.3f}{rtt['p90_ms']:7.3f}{rtt['p99_ms']:7.3f}" if rtt.get("n")
               else f"{'-':>9}{'-':>7}{'-':>7}")
        lines.append(f"{r['name']:<27}{r['mbps']:>9,.0f}{lat}   {r.get('lost', 0):>6}")
    return lines


def _cpu_hour_lines(results: list[dict[str, Any]]) -> list[str]:
    rows = [r for r in results if r.get("cpu_s_per_hour_idle") is not None
            or r.get("cpu_s_per_hour_pinged") is not None]
    if not rows:
        return []
    lines = ["", f"{'CPU s per hour, both ends':<27}{'idle':>9}{'ping every 10 ms':>18}"]
    for r in rows:
        cells = [f"{r[k]:,.1f}" if r.get(k) is not None else "-"
                 for k in ("cpu_s_per_hour_idle", "cpu_s_per_hour_pinged")]
        lines.append(f"{r['name']:<27}{cells[0]:>9}{cells[1]:>18}")
    return lines


def format_table(report: dict[str, Any]) -> str:
    """The results as a plain-text table, the sweeps and the targets below it."""
    lines = [f"{'path':<27}{'Mbit/s':>9}{'runs':>22}{'CPU s/Gbit':>11}{'RTT p50':>9}"
             f"{'p90':>7}{'p99':>7} ms"]
    for r in report["results"]:
        cpu = f"{r['cpu_s_per_gbit']:.3f}" if r.get("cpu_s_per_gbit") is not None else "-"
        rtt = r["rtt"]
        runs = "/".join(f"{v:.0f}" for v in r["runs_mbps"])
        if rtt.get("n"):
            lat = f"{rtt['p50_ms']:9.3f}{rtt['p90_ms']:7.3f}{rtt['p99_ms']:7.3f}"
        else:
            lat = f"{'-':>9}{'-':>7}{'-':>7}"
        lines.append(f"{r['name']:<27}{r['mbps']:>9,.0f}{runs:>22}{cpu:>11}{lat}")
    for name, why in (report.get("unavailable") or {}).items():
        lines.append(f"{name:<27}{why}")
    lines += _loaded_lines(report.get("loaded") or [])
    lines += _cpu_hour_lines(report["results"])
    for title, key, unit in (("link MTU (veth = tun)", "mtu_sweep", "MTU"),
                             ("parallel streams (iperf3 -P)", "streams_sweep", "P")):
        sweep = report.get(key) or {}
        if not sweep:
            continue
        columns = sorted({c for row in sweep.values() for c in row}, key=int)
        lines.append("")
        lines.append(f"{title:<27}" + "".join(f"{unit + ' ' + c:>12}" for c in columns))
        for name, row in sweep.items():
            lines.append(f"{name:<27}" + "".join(
                f"{row[c]:>12,.0f}" if c in row else f"{'-':>12}" for c in columns))
    if report.get("ratios"):
        lines.append("")
        lines.append("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in report["ratios"].items()))
    participant = report.get("participant") or {}
    fate = participant.get("fate_verdict")
    if fate:
        lines.append("tunlab fate, wall clock: " + (
            f"{fate['verdict']['median_s']:.2f} s verdict, {fate['with_fixes']['median_s']:.2f} s"
            f" with {fate['with_fixes']['fixes_tried']} fixes tried"
            if fate.get("available") else fate.get("note", "n/a")))
    send = participant.get("widget_send")
    if send and send.get("available"):
        lines.append(f"packet builder Send to answer: {send['median_s']:.2f} s")
    books = participant.get("notebooks")
    if books and books.get("available"):
        lines.append(f"all {len(books['per_notebook_s'])} notebooks top to bottom: "
                     f"{books['total_s']:.0f} s")
    live = participant.get("measure_throughput")
    if live:
        lines.append(f"measure_throughput(lab, {live['seconds']:g}) in-process: "
                     f"{live['mbps']:,.0f} Mbit/s, mean packet {live['average_packet']:,.0f} B")
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    meta = report.get("meta") or {}
    if meta.get("device_queues"):
        lines.append(f"TUN devices' queues (every variant's): {meta['device_queues']}")
    if "loadavg_before" in meta:
        lines.append(f"load average (1 min): {meta['loadavg_before']:.2f} before, "
                     f"{meta.get('loadavg_after', float('nan')):.2f} after, "
                     f"on {meta.get('cpus')} CPUs")
    lines.append("")
    for target in report.get("targets", []):
        lines.append(describe_target(target))
    return "\n".join(lines)


def _rtt_bars(axis: Any, rows: list[dict[str, Any]], title: str) -> None:
    """p50 and p99 round trip per variant, horizontal bars on a log scale (ms)."""
    rows = [r for r in rows if r.get("rtt", {}).get("n")][::-1]
    positions = range(len(rows))
    for offset, key, color in ((-0.2, "p50_ms", "#4c78a8"), (0.2, "p99_ms", "#f58518")):
        axis.barh([y + offset for y in positions], [r["rtt"][key] for r in rows], 0.4,
                  color=color, label=key[:3])
    axis.set_yticks(list(positions))
    axis.set_yticklabels([r["name"] for r in rows], fontsize=8)
    if rows:
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        axis.set_xscale("log")
        values = [r["rtt"][k] for r in rows for k in ("p50_ms", "p99_ms") if r["rtt"][k] > 0]
        axis.set_xlim(min(values, default=0.01) / 3, max(values, default=1) * 1.5)
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.legend(fontsize=8)
    axis.set_xlabel("ms (ping, log scale)")
    axis.set_title(title, loc="left", fontsize=10)


def write_chart(report: dict[str, Any], path: Path) -> None:
    """Bar charts of the results, the MTU and the streams sweeps and the round trips (idle and
    under load), into a PNG (Agg, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 11))
    canvas = FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, 2)
    ax = fig.add_subplot(grid[0, :])
    names = [r["name"] for r in report["results"]][::-1]
    values = [r["mbps"] for r in report["results"]][::-1]
    colors = ["#e45756" if "OpenVPN" in n else "#999999" if n == VETH else
              "#54a24b" if n == WIREGUARD else "#4c78a8" for n in names]
    bars = ax.barh(names, values, color=colors)
    for bar, value in zip(bars, values, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:,.0f}",
                va="center", fontsize=9)
    ax.set_xlim(0, max(values, default=1) * 1.18)
    ax.set_xlabel("Mbit/s (iperf3, median)")
    meta = report["meta"]
    ax.set_title(f"Throughput a -> b, veth MTU 1500, {meta['seconds']:g} s x "
                 f"{meta['repeats']} (kernel {meta['kernel']}, {meta['cpus']} CPUs)",
                 loc="left", fontsize=11, fontweight="bold")
    for position, (key, label) in enumerate((("mtu_sweep", "link MTU"),
                                             ("streams_sweep", "parallel streams"))):
        sweep = report.get(key) or {}
        axis = fig.add_subplot(grid[1, position])
        columns = sorted({c for row in sweep.values() for c in row}, key=int)
        width = 0.8 / max(len(sweep), 1)
        for i, (name, row) in enumerate(sweep.items()):
            xs = [j + i * width for j in range(len(columns))]
            axis.bar(xs, [row.get(c, 0) for c in columns], width, label=name)
        axis.set_xticks([j + width * (len(sweep) - 1) / 2 for j in range(len(columns))])
        axis.set_xticklabels(columns)
        axis.set_xlabel(label)
        axis.set_ylabel("Mbit/s")
        axis.legend(fontsize=8)
        axis.set_title(f"Throughput by {label}", loc="left", fontsize=10)
    for position, (rows, title) in enumerate((
            ([r for r in report["results"] if r["name"] != VETH], "Round trip, idle"),
            (report.get("loaded") or [], "Round trip under load (one iperf3 stream)"))):
        _rtt_bars(fig.add_subplot(grid[2, position]), rows, title)
    for axis in fig.axes:
        for side in ("top", "right"):
            axis.spines[side].set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.print_png(str(path))


def write_results(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """Write ``bench.json`` and ``bench.png`` into ``directory``; return both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, png_path = directory / "bench.json", directory / "bench.png"
    json_path.write_text(json.dumps(report, indent=1, default=float) + "\n")
    write_chart(report, png_path)
    return json_path, png_path
