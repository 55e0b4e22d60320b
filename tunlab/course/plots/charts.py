"""Charts of measurements: packet rates and throughput over time, drop reasons, throughput bars,
loss and latency curves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tunlab.course.plots.render import COLORS

__all__ = ["bars", "drop_reasons", "latency", "loss_curve", "rates", "throughput"]

"""Smallest text in presenter mode: 12 pt is 16 CSS px when shown at 96 px per inch."""


"""Presenter mode grows figures and their text by this factor (layout stays the same)."""


"""Presenter mode renders this many device pixels per CSS pixel (sharp on a projector/HiDPI)."""


"""PNG text chunk of a presenter-mode figure: its smallest font size in points (the browser
test turns it into CSS px with the PNG's dpi and the size the page shows the image at)."""


def rates(samples: Sequence[Mapping[str, float]], count_key: str = "packets",
          bytes_key: str = "bytes") -> tuple[list[float], list[float], list[float]]:
    """Per-interval rates from cumulative samples ``{"t", count_key, bytes_key}``.

    Returns ``(times, packets per second, Mbit/s)``, one value per interval (time = its end).
    """
    times: list[float] = []
    pps: list[float] = []
    mbps: list[float] = []
    for prev, cur in zip(samples, samples[1:], strict=False):
        dt = float(cur["t"]) - float(prev["t"])
        if dt <= 0:
            continue
        times.append(float(cur["t"]))
        pps.append((float(cur[count_key]) - float(prev[count_key])) / dt)
        mbps.append((float(cur[bytes_key]) - float(prev[bytes_key])) * 8 / dt / 1e6)
    return times, pps, mbps


def throughput(samples: Sequence[Mapping[str, float]], title: str = "Tunnel traffic",
               window: float | None = None, live: bool = True) -> Figure:
    """Packets per second and Mbit/s over time for a running tunnel.

    ``samples`` are cumulative counters taken at times ``t`` (seconds), e.g. from
    ``client.stats.snapshot()``: ``{"t": 1.5, "packets": 120, "bytes": 98000}``. ``window``
    shows only the last seconds (a scrolling live view); ``live`` titles the last rate
    ("now"), otherwise the peak.
    """
    times, pps, mbps = rates(samples)
    fig = Figure(figsize=(7.5, 3.6))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    ax1.plot(times, pps, color="#1f77b4", marker="o", markersize=3, linewidth=1.6)
    ax1.set_ylabel("packets/s")
    ax2.plot(times, mbps, color="#ff7f0e", marker="o", markersize=3, linewidth=1.6)
    ax2.set_ylabel("Mbit/s")
    ax2.set_xlabel("time (s)")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    if window and times:
        ax2.set_xlim(max(0.0, times[-1] - window), max(window, times[-1]))
    if not times:
        ax1.text(0.5, 0.5, "no samples yet", transform=ax1.transAxes, ha="center",
                 va="center", color="#888888")
    if live:
        last = f"  (now {pps[-1]:,.0f} packets/s, {mbps[-1]:,.1f} Mbit/s)" if times else ""
    else:
        last = f"  (peak {max(pps):,.0f} packets/s, {max(mbps):,.0f} Mbit/s)" if times else ""
    fig.suptitle(title + last, fontsize=11, x=0.02, ha="left", fontweight="bold")
    fig.tight_layout()
    return fig


def drop_reasons(counts: Mapping[str, int], title: str = "Kernel drop reasons") -> Figure:
    """Horizontal bars: how often each drop reason (or outcome) was seen."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    fig = Figure(figsize=(7.0, 0.45 * max(len(items), 1) + 1.3))
    ax = fig.add_subplot(1, 1, 1)
    if not items:
        ax.text(0.5, 0.5, "no drops recorded", ha="center", va="center",
                transform=ax.transAxes, color="#888888")
        ax.axis("off")
    else:
        labels = [k for k, _ in items][::-1]
        values = [v for _, v in items][::-1]
        colors = [COLORS["ok"] if label in ("delivered", "forwarded", "(not dropped)")
                  else COLORS["drop"] for label in labels]
        bars = ax.barh(labels, values, color=colors, alpha=0.85)
        for bar, value in zip(bars, values, strict=True):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value}",
                    va="center", fontsize=9)
        ax.set_xlabel("packets")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0, max(values) * 1.15 + 0.5)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    fig.tight_layout()
    return fig


def bars(results: Mapping[str, float], unit: str = "Mbit/s", title: str = "Throughput",
         note: str = "") -> Figure:
    """Horizontal bars comparing measurements (e.g. throughput per tunnel variant or MTU)."""
    items = list(results.items())
    fig = Figure(figsize=(7.0, 0.5 * max(len(items), 1) + 1.4))
    ax = fig.add_subplot(1, 1, 1)
    labels = [k for k, _ in items][::-1]
    values = [float(v) for _, v in items][::-1]
    drawn = ax.barh(labels, values, color="#4c78a8")
    top = max(values, default=0.0)
    for bar, value in zip(drawn, values, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:,.0f} {unit}",
                va="center", fontsize=9)
    ax.set_xlim(0, top * 1.3 + 1e-9)
    ax.set_xlabel(unit)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    if note:
        fig.text(0.01, 0.01, note, fontsize=7.5, color="#666666")
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    return fig


def loss_curve(series: Mapping[str, Sequence[tuple[float, float]]],
               title: str = "Throughput under packet loss") -> Figure:
    """Throughput (Mbit/s) against loss (%) for several paths, e.g. direct TCP vs TCP-in-TCP."""
    fig = Figure(figsize=(7.0, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    for (name, points), marker in zip(series.items(), "osd^v", strict=False):
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        ax.plot(xs, ys, marker=marker, label=name, linewidth=1.8)
    ax.set_xlabel("packet loss on the underlay (%)")
    ax.set_ylabel("Mbit/s")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    fig.tight_layout()
    return fig


def latency(series: Mapping[str, Sequence[float | None]],
            title: str = "Round-trip times under loss",
            xlabel: str = "echo sequence number (x at the top = no reply)",
            count_lost: bool = True) -> Figure:
    """RTT per echo (ms, log scale) for several paths; lost echoes as red crosses at the top.

    ``series`` maps a path name to one value per sequence number (None = no reply), or per
    whatever ``xlabel`` says (for example one median per round of pings, with
    ``count_lost=False``).
    """
    fig = Figure(figsize=(7.5, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    top = max((v for values in series.values() for v in values if v), default=1.0) * 2
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#d62728", "#8c564b", "#e377c2",
               "#7f7f7f")
    for index, (name, values) in enumerate(series.items()):
        color = palette[index % len(palette)]
        xs = [i + 1 for i, v in enumerate(values) if v is not None]
        ys = [v for v in values if v is not None]
        lost = [i + 1 for i, v in enumerate(values) if v is None]
        lost_note = f"{len(lost)} lost, " if count_lost else ""
        ax.plot(xs, ys, marker=".", linestyle="-", linewidth=0.8, color=color,
                label=f"{name}: {lost_note}max {max(ys, default=0):.3g} ms")
        if lost:
            ax.scatter(lost, [top] * len(lost), marker="x", color=color, s=40)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("RTT (ms)")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.2),
              ncol=2)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    fig.set_size_inches(7.5, 4.2)
    fig.tight_layout()
    return fig
