"""``make bench``: tunlab's tunnel against the bare veth, OpenVPN and wireguard-go, side by side
in one run (:mod:`.run`), with the wireguard-go peers it starts (:mod:`.wgpeer`)."""

from tunlab.bench.run import (
    BUSY_POLL_USEC,
    DAEMON_NICE,
    DEFAULT_RESULTS,
    BenchConfig,
    describe_target,
    format_table,
    run_bench,
    write_results,
)

__all__ = ["BUSY_POLL_USEC", "DAEMON_NICE", "DEFAULT_RESULTS", "BenchConfig", "describe_target",
           "format_table", "run_bench", "write_results"]
