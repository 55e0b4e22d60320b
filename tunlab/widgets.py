"""Moved: the lessons' panels live in :mod:`tunlab.course` (one module per panel in
:mod:`tunlab.course.panels`). This module keeps the old import path working for code outside
the notebooks (``tunlab.bench``); notebooks use ``from tunlab import course``."""

from __future__ import annotations

from .course.experiments import (
    events_dicts,
    kfree_skb_reasons,
    link_tx_packets,
    ping_bound,
    ping_device_counts,
)
from .course.panels.base import LabBar, LabPanel, clear_figure, show_figure
from .course.panels.doctor_panel import DoctorPanel, DoctorReport, run_doctor
from .course.panels.fix_panel import VPN_STEPS, FixPanel, StepView, vpn_figure
from .course.panels.frame_explorer import FrameExplorer, capture_ping_frames
from .course.panels.kernel_log import KernelLogView, kernel_log, read_kernel_log
from .course.panels.packet_builder import PacketBuilder
from .course.panels.pi_reader import PiReader, hexdump, read_one_ping
from .course.panels.route_view import RouteView, parse_route_get, route_figure
from .course.panels.seed_goal import SeedGoalPanel, explain_counters, ping_through_seed
from .course.panels.tunnel_panel import TunnelPanel
from .course.reports import count_outcomes, fate_box, fate_html, fate_table, rp_sweep, sweep
from .course.seed_tunnel import SeedTunnel, seed_tunnel
from .course.style import PRESENTER_CSS, presenter_style, set_presenter
from .course.tables import events_html, events_table, frames_html, frames_table

__all__ = (
    "PRESENTER_CSS", "VPN_STEPS", "DoctorPanel", "FixPanel", "FrameExplorer", "KernelLogView",
    "LabBar", "LabPanel", "PacketBuilder", "PiReader", "RouteView", "SeedGoalPanel",
    "SeedTunnel", "StepView", "TunnelPanel", "capture_ping_frames", "clear_figure",
    "count_outcomes", "events_dicts", "events_html", "events_table", "explain_counters",
    "fate_box", "fate_html", "fate_table", "frames_html", "frames_table", "hexdump",
    "kernel_log", "kfree_skb_reasons", "link_tx_packets", "DoctorReport", "parse_route_get",
    "ping_bound", "ping_device_counts", "ping_through_seed", "presenter_style", "read_kernel_log",
    "read_one_ping", "route_figure", "rp_sweep", "run_doctor", "seed_tunnel", "set_presenter",
    "show_figure", "sweep", "vpn_figure",
)
