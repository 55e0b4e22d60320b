"""``make bench``: tunlab's tunnel against the bare veth, OpenVPN and wireguard-go, side by side
in one run: :mod:`.rig` (the labs and tunnels measured), :mod:`.run` (the run, variant by
variant), :mod:`.targets` (the goals, judged), :mod:`.report` (table, chart, JSON) and
:mod:`.wgpeer` (the wireguard-go peers)."""

from tunlab.bench.report import format_table, write_results
from tunlab.bench.rig import BUSY_POLL_USEC, DAEMON_NICE
from tunlab.bench.run import DEFAULT_RESULTS, BenchConfig, run_bench
from tunlab.bench.targets import describe_target

__all__ = ["BUSY_POLL_USEC", "DAEMON_NICE", "DEFAULT_RESULTS", "BenchConfig", "describe_target",
           "format_table", "run_bench", "write_results"]
