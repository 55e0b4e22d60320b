"""``tunlab bench``: the performance benchmark (see :mod:`tunlab.bench`).

Registered into the ``tunlab`` command by :func:`register`. Exit codes: 0 every target met,
1 a target missed (each one printed), 2 usage or environment error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["cmd_bench", "register"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to the ``tunlab`` parser's subparsers."""
    from tunlab.bench import BUSY_POLL_USEC, DAEMON_NICE, DEFAULT_RESULTS

    parser = subparsers.add_parser(
        "bench", help="measure tunlab against the bare veth and OpenVPN, in private namespaces",
        description="Throughput (iperf3), latency (ping; idle and under load), CPU per Gbit "
        "and per idle hour, MTU and stream sweeps for direct veth, tunlab (fast, simple, psk, "
        "busy-poll), OpenVPN 2.6 and wireguard-go, side by side in one run. Writes bench.json "
        "and bench.png; exit 1 when a target is missed.")
    parser.add_argument("--quick", action="store_true",
                        help="short runs (1 s, one repeat): checks that everything works")
    parser.add_argument("--seconds", type=float, metavar="N",
                        help="seconds per iperf3 run (default 5, --quick 1)")
    parser.add_argument("--repeats", type=int, metavar="N",
                        help="runs per variant, medians reported (default 3, --quick 1)")
    parser.add_argument("--busy-poll-usec", type=int, metavar="USEC",
                        help="the --busy-poll value of the busy-poll variant (default "
                        f"{BUSY_POLL_USEC})")
    parser.add_argument("--nice", type=int, metavar="N",
                        help="niceness of every tunnel daemon, tunlab's, OpenVPN's and "
                        f"wireguard-go's alike (default {DAEMON_NICE}; 0 runs them as started)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS, metavar="DIR",
                        help=f"where bench.json and bench.png go (default {DEFAULT_RESULTS})")
    parser.add_argument("--no-install", action="store_true",
                        help="do not apt-get install missing iperf3/openvpn/wireguard-go")
    parser.add_argument("--no-sweeps", action="store_true",
                        help="skip the MTU and parallel-stream sweeps")
    parser.add_argument("--no-notebooks", action="store_true",
                        help="do not time the execution of the whole notebook sequence")
    parser.set_defaults(handler=cmd_bench)
    return parser


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table (or JSON), write the results; 1 if a target missed."""
    from tunlab.bench import BenchConfig, describe_target, format_table, run_bench, write_results
    from tunlab.errors import TunlabError

    config = BenchConfig.quick() if args.quick else BenchConfig()
    if args.seconds is not None:
        if args.seconds <= 0:
            raise TunlabError("--seconds must be positive", "for example --seconds 5")
        config.seconds = args.seconds
    if args.repeats is not None:
        if args.repeats < 1:
            raise TunlabError("--repeats must be at least 1", "for example --repeats 3")
        config.repeats = args.repeats
    if args.busy_poll_usec is not None:
        if not 0 < args.busy_poll_usec <= 1_000_000:
            raise TunlabError("--busy-poll-usec must be between 1 and 1000000",
                              "for example --busy-poll-usec 100")
        config.busy_poll_usec = args.busy_poll_usec
    if args.nice is not None:
        if not -20 <= args.nice <= 19:
            raise TunlabError("--nice must be between -20 and 19", "for example --nice -10")
        config.nice = args.nice
    config.install = not args.no_install
    if args.no_notebooks:
        config.notebooks = False
    if args.no_sweeps:
        config.mtus, config.streams = (1500,), (1,)

    def log(line: str) -> None:
        print(f"bench: {line}", file=sys.stderr, flush=True)

    report = run_bench(config, log=log)
    json_path, png_path = write_results(report, args.output)
    if args.json:
        print(json.dumps(report, indent=1, default=float))
    else:
        print(format_table(report))
        print(f"\nwrote {json_path} and {png_path}")
    missed = [t for t in report["targets"] if not t["met"]]
    for target in missed:
        print(f"target {describe_target(target)}", file=sys.stderr)
    return 1 if missed else 0
