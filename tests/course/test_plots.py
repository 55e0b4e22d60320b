"""tunlab.course.plots: every figure renders to PNG and carries the labels a learner needs
to read it."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from tunlab.course import plots
from tunlab.fate.report import FateReport, Verdict
from tunlab.proto import framing

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def echo_packet(payload: int = 56) -> bytes:
    from scapy.layers.inet import ICMP, IP

    return bytes(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(id=7, seq=1) / (b"x" * payload))


def texts(fig: Figure) -> str:
    return "\n".join(plots.figure_text(fig))


def renders(fig: Figure) -> bytes:
    png = plots.to_png(fig, dpi=50)
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    return png


def test_packet_path_marks_the_drop_and_greys_what_follows():
    fig = plots.packet_path(["ping", ("mytun", "device"), plots.Step("kernel", "kernel"), "out"],
                            drop_at=2, reason="IP_RPFILTER", groups=[("namespace x", 1, 3)],
                            title="a path")
    renders(fig)
    text = texts(fig)
    for label in ("ping", "mytun", "kernel", "out", "dropped: IP_RPFILTER", "namespace x",
                  "a path"):
        assert label in text
    # the red cross: two thick red lines
    red = [line for line in fig.axes[0].lines if line.get_color() == plots.COLORS["drop"]]
    assert len(red) == 2


def test_packet_path_without_a_drop_shows_the_verdict():
    fig = plots.packet_path(["a", "b"], verdict="forwarded")
    renders(fig)
    assert "forwarded" in texts(fig)
    assert not [line for line in fig.axes[0].lines if line.get_color() == plots.COLORS["drop"]]


def _dropped(reasons: list[str]) -> FateReport:
    return FateReport(verdict=Verdict.DROPPED, drop_reasons=reasons, martian_log=[], replies=[],
                      counters={})


@pytest.mark.parametrize("reasons, stage_label", [
    (["IP_RPFILTER"], "route input"),
    (["NETFILTER_DROP"], "netfilter"),
    (["IP_NOPROTO"], "delivered to"),
])
def test_fate_path_puts_each_reason_at_its_stage(reasons, stage_label):
    fig = plots.fate_path(_dropped(reasons), "200.1.2.3",
                          "10.0.0.2", "mytun2")
    renders(fig)
    text = texts(fig)
    assert f"dropped: {reasons[0]}" in text and "200.1.2.3" in text and "mytun2" in text
    stage = {"route": 2, "netfilter": 3, "deliver": 4}[plots.drop_stage(reasons)]
    assert stage_label in plots.figure_text(fig)[1 + 1 + stage] or stage_label in text


def test_drop_stage_mapping():
    assert plots.drop_stage(["IP_LOCAL_SOURCE"]) == "route"
    assert plots.drop_stage(["NETFILTER_DROP"]) == "netfilter"
    assert plots.drop_stage(["IP_NOPROTO"]) == "deliver"
    assert plots.drop_stage([]) == "route"


def test_seed_path_names_every_station_of_the_seed():
    fig = plots.seed_path(_dropped(["IP_LOCAL_SOURCE"]))
    renders(fig)
    text = texts(fig)
    for station in ("mytun", "vpn-client", "TCP", "vpn-server", "mytun2",
                    "dropped: IP_LOCAL_SOURCE"):
        assert station in text
    stopped = plots.seed_path(stopped_at=2, stop_reason="nothing entered mytun")
    assert "stopped: nothing entered mytun" in texts(stopped)


def test_frame_layout_shows_header_fields_and_values():
    frame = framing.encode_packet(echo_packet())
    fig = plots.frame_layout(frame)
    renders(fig)
    text = texts(fig)
    for label in ("magic\nTL", "version\n1", "type\nDATA", "length\n84", "source\n10.0.0.1",
                  "destination\n10.0.0.2", "proto\nICMP", "type\necho-req", "payload\n56 bytes",
                  "tunlab frame header", "IPv4 header", "92 bytes"):
        assert label in text, label


def test_layout_fields_cover_every_byte_exactly_once():
    frame = framing.encode_packet(echo_packet(100))
    fields = plots.layout_fields(frame, framed=True)
    covered = sorted((f.offset, f.offset + f.size) for f in fields)
    assert covered[0][0] == 0 and covered[-1][1] == len(frame)
    for (_, end), (start, _) in zip(covered, covered[1:], strict=False):
        assert end == start


def test_read_layout_with_pi_header():
    packet = echo_packet()
    fig = plots.read_layout(b"\x00\x00\x08\x00" + packet, pi=True)
    renders(fig)
    text = texts(fig)
    assert "proto\n0x0800" in text and "TUN packet info (no IFF_NO_PI)" in text
    assert "88 bytes" in text


def test_udp_and_tcp_headers_are_dissected():
    from scapy.layers.inet import IP, TCP, UDP

    udp = bytes(IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=1234, dport=53) / b"q")
    tcp = bytes(IP(src="1.1.1.1", dst="2.2.2.2") / TCP(sport=1234, dport=80, flags="S"))
    assert "dst port\n53" in texts(plots.byte_layout(plots.layout_fields(udp)))
    assert "dst port\n80" in texts(plots.byte_layout(plots.layout_fields(tcp)))


def test_rates_from_cumulative_samples():
    samples = [{"t": 0, "packets": 0, "bytes": 0}, {"t": 0.5, "packets": 50, "bytes": 62500},
               {"t": 1.0, "packets": 150, "bytes": 125000}]
    times, pps, mbps = plots.rates(samples)
    assert times == [0.5, 1.0]
    assert pps == [100.0, 200.0]
    assert mbps == pytest.approx([1.0, 1.0])


def test_throughput_plot_live_and_empty():
    samples = [{"t": i * 0.5, "packets": i * 100, "bytes": i * 125000} for i in range(6)]
    fig = plots.throughput(samples, title="Tunnel traffic", window=20)
    renders(fig)
    text = texts(fig)
    assert "packets/s" in text and "Mbit/s" in text and "now 200 packets/s" in text
    assert "peak 200 packets/s" in texts(plots.throughput(samples, live=False))
    empty = plots.throughput([])
    renders(empty)
    assert "no samples yet" in texts(empty)


def test_drop_reasons_bars_are_labelled_with_counts():
    fig = plots.drop_reasons({"IP_RPFILTER": 3, "IP_LOCAL_SOURCE": 1, "forwarded": 2})
    renders(fig)
    text = texts(fig)
    for label in ("IP_RPFILTER", "IP_LOCAL_SOURCE", "forwarded", " 3", " 1", " 2",
                  "Kernel drop reasons"):
        assert label in text
    assert "no drops recorded" in texts(plots.drop_reasons({}))


def test_bars_loss_curve_and_latency():
    bars = plots.bars({"direct": 19000.0, "tunnel": 1400.0}, note="measured here")
    renders(bars)
    assert "19,000 Mbit/s" in texts(bars) and "measured here" in texts(bars)
    curve = plots.loss_curve({"direct": [(0, 100.0), (2, 50.0)], "tunnel": [(0, 80.0), (2, 70.0)]})
    renders(curve)
    assert "direct" in texts(curve) and "packet loss on the underlay (%)" in texts(curve)
    lat = plots.latency({"direct": [0.1, None, 0.2], "tunnel": [0.3, 40.0, 0.2]})
    renders(lat)
    assert "direct: 1 lost" in texts(lat) and "tunnel: 0 lost, max 40 ms" in texts(lat)


def test_figures_are_made_without_pyplot_state():
    import sys

    plots.seed_path()
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:  # another test may import it; we must not add figures to it
        assert pyplot.get_fignums() == []


def test_presenter_mode_text_is_at_least_16_css_px_and_figures_are_high_dpi():
    from matplotlib.text import Text

    normal = plots.render(plots.seed_path(title="x"), dpi=80)
    plots.set_presenter(True)
    try:
        fig = plots.seed_path(title="x")
        big = plots.render(fig)
        sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text()]
        # a point is 96/72 CSS px at 100 % zoom when shown at css_width
        assert min(sizes) * plots.CSS_DPI / 72 >= 16, min(sizes)
        width, _height = plots.png_size(big.png)
        assert big.css_width == width // plots.HIDPI  # two device pixels per CSS pixel
        # the PNG says its smallest text size (the browser test measures with it)
        key = plots.SMALLEST_TEXT_KEY.encode() + b"\0"
        assert key + f"{min(sizes):.2f}".encode() in big.png
        assert big.css_width > normal.css_width
        ticks = plots.bars({"a": 1.0, "b": 2.0})
        plots.render(ticks)
        labels = [t for ax in ticks.axes for t in ax.get_yticklabels() if t.get_text()]
        assert labels and min(t.get_fontsize() for t in labels) >= plots.PRESENTER_MIN_POINTS
    finally:
        plots.set_presenter(False)
    assert not plots.presenter_on()
