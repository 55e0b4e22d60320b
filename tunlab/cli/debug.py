"""``tunlab fate``, ``tunlab doctor`` and ``tunlab dropwatch``: the drop-debugging commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tunlab.errors import TunlabError
from tunlab.fate.report import FateReport
from tunlab.kernel.host import require_privileges

__all__ = ["cmd_doctor", "cmd_dropwatch", "cmd_fate", "register"]


def cmd_fate(args: argparse.Namespace) -> int:
    from tunlab.fate import fate
    from tunlab.fate.request import from_namespace

    request = from_namespace(args)  # validate everything before anything is built
    require_privileges("tunlab fate")
    report = fate(request, verify_fixes=not args.no_verify, trace=not args.no_trace)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_fate(report)
    if args.expect and args.expect not in (report.verdict, *report.drop_reasons):
        print(f"expected {args.expect}, the kernel said {report.verdict} "
              f"{' '.join(report.drop_reasons)}".rstrip(), file=sys.stderr)
        return 1
    return 0


def _print_fate(report: FateReport) -> None:
    packet = report.packet
    print(f"packet:    {packet.get('src')} -> {packet.get('dst')} {packet.get('proto')} "
          f"ttl {packet.get('ttl')}, written into {packet.get('dev')}")
    sources = report.effective_settings.get("sources", {})
    if sources:
        print("applied:   " + "; ".join(sources.values()))
    print(f"verdict:   {str(report.verdict).upper()}")
    for drop in report.drop_locations:
        print(f"dropped:   {drop.reason} in {drop.location}()")
    if report.firewall is not None:
        print(f"firewall:  {report.firewall.describe()}")
    for line in report.martian_log:
        print(f"kernel log: {line}")
    for reply in report.replies:
        extra = (f" type {reply.icmp_type} code {reply.icmp_code}" if reply.is_icmp
                 else f" flags {reply.tcp_flags or ''}")
        print(f"reply:     {reply.src} -> {reply.dst} {reply.proto}{extra} out of {reply.dev}")
    if report.counters:
        shown = {k: v for k, v in report.counters.items() if not k.startswith("IpExt")}
        print("counters:  " + ", ".join(f"{k} +{v}" for k, v in shown.items()))
    for what, why in report.missing_evidence.items():
        print(f"missing:   {what}: {why}")
    for fix in report.fixes:
        mark = "works" if fix.works else "no"
        print(f"fix [{mark}]: {fix.summary} -> {fix.verdict_after} "
              f"(tunlab fate ... {' '.join(_quote(a) for a in fix.fate_args)})")
    print(f"\n{report.explanation}")


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def cmd_doctor(args: argparse.Namespace) -> int:
    from tunlab.kernel.doctor import lab_can_run, run_checks

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
    from tunlab.kernel.tracefs import watch_drops
    from tunlab.lab import SeedLab

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
    from tunlab.packet.craft import craft

    def traffic() -> None:
        device = lab.device("mytun2")
        for packet in (craft("10.0.0.1", "10.0.0.2"), craft("200.1.2.3", "10.0.2.1", 253)):
            lab.ns.run(device.write, packet)

    return traffic


def register(sub: Any) -> None:
    """Add the fate, doctor and dropwatch subcommands to the ``tunlab`` parser."""
    from tunlab.fate.request import add_arguments

    fate = sub.add_parser("fate", help="what does the kernel do with this packet?",
                          description="Write one crafted IPv4 or IPv6 packet into a device of "
                          "a fresh seed lab (as the vpn-server releases packets) and report "
                          "what the kernel did with it, why, and which changes (each tried in "
                          "another fresh lab) let it through.")
    add_arguments(fate)
    fate.add_argument("--json", action="store_true", help="print one JSON object")
    fate.add_argument("--no-verify", action="store_true",
                      help="do not try the fixes (faster; the report then proposes none)")
    fate.add_argument("--no-trace", action="store_true",
                      help="do without tracefs, as on a machine that has none")
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
