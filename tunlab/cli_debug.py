"""``tunlab fate``, ``tunlab doctor`` and ``tunlab dropwatch``: the drop-debugging commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .errors import TunlabError
from .privileges import require_privileges


def cmd_fate(args: argparse.Namespace) -> int:
    from .fate import packet_fate
    from .packets import check_ipv4, protocol_number
    from .sysctl import parse_assignments

    # Validate everything before anything is built.
    check_ipv4(args.src, "source")
    check_ipv4(args.dst, "destination")
    proto: str | int = args.proto if not str(args.proto).isdigit() else int(args.proto)
    protocol_number(proto)
    settings = parse_assignments(args.set)
    ruleset = None
    if args.nft_file:
        try:
            ruleset = Path(args.nft_file).read_text()
        except OSError as exc:
            raise TunlabError(f"cannot read {args.nft_file}: {exc.strerror}",
                              "give an nftables ruleset file (nft -f syntax)") from exc
    require_privileges("tunlab fate")
    report = packet_fate(args.src, args.dst, proto=proto, dport=args.dport, ttl=args.ttl,
                         dev=args.dev, sysctls=settings, nft_ruleset=ruleset).to_dict()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_fate(report)
    if args.expect and args.expect not in (report["verdict"], *report["drop_reasons"]):
        print(f"expected {args.expect}, the kernel said {report['verdict']} "
              f"{' '.join(report['drop_reasons'])}".rstrip(), file=sys.stderr)
        return 1
    return 0


def _print_fate(report: dict[str, Any]) -> None:
    packet = report["packet"]
    print(f"packet:    {packet.get('src')} -> {packet.get('dst')} {packet.get('proto')} "
          f"ttl {packet.get('ttl')}, written into {packet.get('dev')}")
    if report["settings"]:
        print("settings:  " + ", ".join(f"{k}={v}" for k, v in report["settings"].items()))
    print(f"verdict:   {report['verdict'].upper()}")
    for drop in report["drop_locations"]:
        print(f"dropped:   {drop['reason']} in {drop['location']}()")
    for line in report["martian_log"]:
        print(f"kernel log: {line}")
    for reply in report["replies"]:
        extra = (f" type {reply.get('icmp_type')} code {reply.get('icmp_code')}"
                 if reply.get("proto") == "icmp" else f" flags {reply.get('tcp_flags', '')}")
        print(f"reply:     {reply['src']} -> {reply['dst']} {reply['proto']}{extra} "
              f"out of {reply['dev']}")
    if report["counters"]:
        shown = {k: v for k, v in report["counters"].items() if not k.startswith("IpExt")}
        print("counters:  " + ", ".join(f"{k} +{v}" for k, v in shown.items()))
    if report["tracing"] != "tracefs":
        print(f"tracing:   {report['tracing']}")
    print(f"\n{report['explanation']}")


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import lab_can_run, run_checks

    checks = run_checks()
    ok = lab_can_run(checks)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [c.to_dict() for c in checks]}, indent=2))
    else:
        for check in checks:
            mark = "ok  " if check.ok else ("FAIL" if check.required else "warn")
            fix = "" if check.ok else f"  -> {check.fix}"
            print(f"[{mark}] {check.name}: {check.detail}{fix}")
        print("\nthe lab can run here" if ok else "\nthe lab cannot run yet: fix the FAIL lines")
    return 0 if ok else 1


def cmd_dropwatch(args: argparse.Namespace) -> int:
    from .drops import watch_drops
    from .lab import SeedLab

    if not 0 < args.seconds <= 600:
        raise TunlabError("--seconds must be between 0 and 600", "e.g. --seconds 5")
    require_privileges("tunlab dropwatch")
    with SeedLab("dropwatch") as lab:
        traffic = _seed_traffic(lab) if args.seed_traffic else None
        if not args.json:
            print(f"watching kernel drops for {args.seconds:g} s (whole machine)"
                  + ("; sending the seed's scenarios in a lab namespace" if traffic else ""),
                  file=sys.stderr)
        rows = watch_drops(lab.ns, args.seconds, traffic)
    if args.json:
        print(json.dumps([{"reason": r, "location": loc, "count": n} for r, loc, n in rows],
                         indent=2))
        return 0
    print(f"{'count':>6}  {'reason':<24} location")
    for reason, location, count in rows:
        print(f"{count:>6}  {reason:<24} {location}")
    if not rows:
        print("no drops seen")
    return 0


def _seed_traffic(lab: Any) -> Any:
    """Writes the seed's problem packets into mytun2 (they are dropped, which is the point)."""
    from .packets import craft

    def traffic() -> None:
        device = lab.device("mytun2")
        for packet in (craft("10.0.0.1", "10.0.0.2"), craft("200.1.2.3", "10.0.2.1", 253)):
            lab.ns.run(device.write, packet)

    return traffic


def register(sub: Any) -> None:
    """Add the fate, doctor and dropwatch subcommands to the ``tunlab`` parser."""
    fate = sub.add_parser("fate", help="what does the kernel do with this packet?",
                          description="Write one crafted IPv4 packet into a TUN device of a "
                          "fresh seed lab (as the vpn-server releases packets) and report "
                          "what the kernel did with it, and why.")
    fate.add_argument("--src", required=True, help="source IPv4 address")
    fate.add_argument("--dst", required=True, help="destination IPv4 address")
    fate.add_argument("--proto", default="icmp", help="icmp, udp, tcp or a protocol number")
    fate.add_argument("--dport", type=int, help="destination port for udp/tcp")
    fate.add_argument("--ttl", type=int, default=64, help="time to live (default 64)")
    fate.add_argument("--dev", default="mytun2", choices=["mytun", "mytun2"],
                      help="device the packet arrives on (default mytun2)")
    fate.add_argument("--set", action="append", metavar="KEY=VALUE",
                      help="a sysctl, e.g. net.ipv4.ip_forward=1 (repeatable)")
    fate.add_argument("--nft-file", metavar="FILE", help="an nftables ruleset to load first")
    fate.add_argument("--json", action="store_true", help="print one JSON object")
    fate.add_argument("--expect", metavar="VERDICT|REASON",
                      help="exit 1 unless the verdict or a drop reason is this "
                      "(e.g. delivered, IP_RPFILTER): for scripted checks and exercises")
    fate.set_defaults(handler=cmd_fate)

    doctor = sub.add_parser("doctor", help="check that the lab can run here")
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    doctor.set_defaults(handler=cmd_doctor)

    dropwatch = sub.add_parser("dropwatch", help="live drop reasons with counts and locations")
    dropwatch.add_argument("--seconds", type=float, default=5.0, help="how long (default 5)")
    dropwatch.add_argument("--seed-traffic", action="store_true",
                           help="also send the seed's dropped packets in a lab namespace")
    dropwatch.add_argument("--json", action="store_true", help="print JSON")
    dropwatch.set_defaults(handler=cmd_dropwatch)
