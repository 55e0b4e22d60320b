"""Run one fate experiment: build the seed's host, inject the packet, gather the evidence.

:func:`observe` measures what the kernel does while some action writes a packet (the demo uses
it around a real tunnel); :func:`run` builds the lab a :class:`FateRequest` describes and
writes the packet itself. Both return a :class:`FateReport` with the facts and the verdict
(:mod:`tunlab.fate.judge`); the words and the fixes are added by :mod:`tunlab.fate.explain`
and :mod:`tunlab.fate.fixes`.
"""

from __future__ import annotations

import os
import secrets
import select
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tunlab.errors import EnvironmentProblem, TunlabError
from tunlab.fate.judge import Observation, judge
from tunlab.fate.report import Evidence, FateReport, Verdict
from tunlab.fate.request import FateRequest, Listener
from tunlab.fate.settings import EffectiveSettings, read_effective
from tunlab.kernel import counters, martians, tracefs
from tunlab.kernel.host import in_user_namespace
from tunlab.kernel.netns import Namespace
from tunlab.kernel.nft import NftTrace, NftTracer, PacketInfo, propose_fix
from tunlab.kernel.sysctl import SysctlChanges
from tunlab.kernel.tun import TunDevice
from tunlab.lab import SEED_DEVICES, UPLINK, SeedLab
from tunlab.packet import craft as packets

__all__ = ["craft", "LAB_DEVICES", "observe", "QUIET_PERIOD", "REPLY_WINDOW", "rules_ruleset",
           "RULES_TABLE", "run", "WATCHED_SYSCTLS"]

REPLY_WINDOW = 1.0     # replies are collected for at most this long after the write


# ... and stop early once the devices have been silent this long. The kernel handles a packet
# written to a TUN device in the write() call itself, so its replies are queued by then.
QUIET_PERIOD = 0.08


LAB_DEVICES = (*SEED_DEVICES, UPLINK)


WATCHED_SYSCTLS = ("net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter",
                   "net.ipv4.conf.all.accept_local", "net.ipv4.conf.all.log_martians")


RULES_TABLE = "tunlab_rules"


# ICMPv6 the kernel sends on its own when a device comes up: not answers to our packet.
_IPV6_CHATTER = {133, 134, 135, 136, 143}


def _read_sysctls(ns: Namespace) -> dict[str, str]:
    def read() -> dict[str, str]:
        values = {}
        for key in WATCHED_SYSCTLS:
            try:
                with open("/proc/sys/" + key.replace(".", "/")) as f:
                    values[key] = f.read().strip()
            except OSError:
                pass
        return values

    return ns.run(read)


def _watched(effective: EffectiveSettings) -> dict[str, str]:
    """The report's ``settings`` (the WATCHED_SYSCTLS' own values) from the effective read,
    which already holds them: one trip into the namespace instead of two."""
    return {"net.ipv4.ip_forward": str(effective.ip_forward),
            "net.ipv4.conf.all.rp_filter": str(effective.rp_filter.all),
            "net.ipv4.conf.all.accept_local": str(effective.accept_local.all),
            "net.ipv4.conf.all.log_martians": str(effective.log_martians.all)}


def _collect_replies(devices: Sequence[TunDevice], window: float) -> list[tuple[str, bytes]]:
    """IP packets the kernel sends out of ``devices`` until they go quiet (bounded)."""
    if not devices:
        return []
    by_fd = {d.fileno(): d for d in devices}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    out: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + window
    while (left := deadline - time.monotonic()) > 0:
        ready = poller.poll(min(left, QUIET_PERIOD) * 1000)
        if not ready:
            break
        for fd, _ in ready:
            try:
                packet = os.read(fd, 65535)
            except BlockingIOError:
                continue
            if packet and not _is_chatter(packet):
                out.append((by_fd[fd].name, packet))
    return out


def _is_chatter(packet: bytes) -> bool:
    """Router solicitations and MLD reports that a new IPv6 device sends by itself."""
    if packet[0] >> 4 != 6 or len(packet) < 41:
        return False
    next_header, offset = packet[6], 40
    if next_header == 0 and len(packet) >= 48:  # hop-by-hop options (MLD carries one)
        next_header, offset = packet[40], 40 + (packet[41] + 1) * 8
    return next_header == 58 and len(packet) > offset and packet[offset] in _IPV6_CHATTER


def _drain(devices: Sequence[TunDevice]) -> None:
    for device in devices:
        os.set_blocking(device.fileno(), False)
        for _ in range(1000):
            try:
                os.read(device.fileno(), 65535)
            except BlockingIOError:
                break


def observe(ns: Namespace, inject: Callable[[], None], *, writer_tid: int | None = None,
            writer_comm: str | None = None,
            capture_devices: Sequence[TunDevice] = (),
            packet: bytes | Callable[[], bytes | None] | None = None, dev: str | None = None,
            devices: Iterable[str] = tuple(SEED_DEVICES), trace: bool = True) -> FateReport:
    """Measure what the kernel does while ``inject()`` runs, and judge it.

    ``writer_comm`` (the writing thread's unique name, which works inside PID namespaces too)
    or ``writer_tid``: the thread that writes the packet into a TUN device; only drops in its
    context count (neither: every drop on the machine, noisier). ``capture_devices``: open TUN
    devices to collect the kernel's replies from (leave empty when a tunnel owns them).
    ``packet`` (or a function returning it once ``inject`` ran) and ``dev``: the packet written
    and the device it was written into, to tell its drops, replies and martian lines from
    those of the replies the kernel made. ``trace=False`` does without tracefs, as on a
    machine that has none: the verdict then rests on counters and captures.
    """
    started = time.monotonic()
    observation = _observe(ns, inject, writer_tid=writer_tid, writer_comm=writer_comm,
                           capture_devices=capture_devices, packet=packet, dev=dev, trace=trace)
    report = judge(observation, [*devices, UPLINK])
    report.elapsed = time.monotonic() - started
    return report


def _observe(ns: Namespace, inject: Callable[[], None], *, writer_tid: int | None,
             writer_comm: str | None,
             capture_devices: Sequence[TunDevice], packet: Any, dev: str | None,
             trace: bool) -> Observation:
    evidence: list[Evidence] = []
    missing: dict[str, str] = {}
    tracing = "tracefs"
    tracer: tracefs.DropTracer | None = None
    if trace:
        try:
            tracer = tracefs.DropTracer(pid=writer_tid, comm=writer_comm, label="fate",
                                      track_receives=True).start()
            evidence.append(Evidence.TRACEFS)
        except (EnvironmentProblem, OSError) as exc:
            tracing = f"unavailable: {exc}"
            missing["tracefs"] = (f"tracefs belongs to the host, out of this user namespace's "
                                  f"reach ({exc})" if in_user_namespace() else str(exc))
    else:
        tracing = "off"
        missing["tracefs"] = "tracing was turned off for this run"
    try:
        effective = read_effective(ns, dev) if dev else None
        settings = _watched(effective) if effective else _read_sysctls(ns)
        with martians.MartianLog() as kmsg:
            before = counters.snapshot_counters(ns)
            inject()
            captured = _collect_replies(capture_devices, REPLY_WINDOW)
            if not capture_devices:
                time.sleep(0.05)  # let counters settle; the kernel handled the write already
            after = counters.snapshot_counters(ns)
            martian_lines = kmsg.collect()
        if kmsg.available:
            evidence.append(Evidence.KERNEL_LOG)
        else:
            missing["kernel log"] = (
                "the kernel log belongs to the host, out of this user namespace's reach"
                if in_user_namespace() else "/dev/kmsg cannot be read here (needs CAP_SYSLOG)")
    finally:
        if tracer is not None:
            tracer.stop()
    evidence.append(Evidence.COUNTERS)
    if capture_devices:
        evidence.append(Evidence.CAPTURE)
    written = packet() if callable(packet) else packet
    sent = packets.summarize(written) if written else {}
    if sent and dev:
        sent["dev"] = dev
    if tracer and written and dev:
        ours, others = tracefs.attribute_drops(tracer.events, dev, len(written))
    else:
        ours, others = (tracer.drops if tracer else []), []
    return Observation(packet=sent, drops=ours, other_drops=others,
                       martian_lines=martian_lines, captured=captured,
                       counters=counters.counter_delta(before, after), settings=settings,
                       effective=effective, evidence=evidence, missing=missing,
                       tracing=tracing)


def _apply_ruleset(ns: Namespace, ruleset: str) -> None:
    result = ns.exec(["nft", "-f", "-"], check=False, input=ruleset.encode())
    if result.returncode != 0:
        error = (result.stderr.decode(errors="replace") if isinstance(result.stderr, bytes)
                 else str(result.stderr)).strip()
        raise TunlabError(f"nft refused the ruleset: {error}",
                          "check it with `nft -c -f FILE`")


def rules_ruleset(rules: Sequence[str]) -> str:
    """The nft ruleset for ``--nft-rule 'HOOK RULE'`` options: one accept-policy chain per hook."""
    hooks = list(dict.fromkeys(rule.split(" ", 1)[0] for rule in rules))
    lines = [f"table inet {RULES_TABLE} {{"]
    for hook in hooks:
        lines.append(f"    chain {hook} {{")
        lines.append(f"        type filter hook {hook} priority filter; policy accept;")
        lines += [f"        {rule.split(' ', 1)[1]}" for rule in rules
                  if rule.split(" ", 1)[0] == hook]
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _open_listener(listener: Listener, family: int) -> socket.socket:
    kind = socket.SOCK_DGRAM if listener.proto == "udp" else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::" if family == 6 else "0.0.0.0", listener.port))
    if kind == socket.SOCK_STREAM:
        sock.listen(4)
    return sock


def _configure(lab: SeedLab, request: FateRequest) -> None:
    ns = lab.ns
    for dev, mtu in request.mtus:
        result = ns.exec(["ip", "link", "set", "dev", dev, "mtu", str(mtu)], check=False)
        if result.returncode != 0:
            raise TunlabError(f"cannot set the MTU of {dev} to {mtu}: "
                              f"{result.stderr.strip()}",
                              "use a lab device (mytun, mytun2, wan0) and a valid MTU")
    for verb, specs in (("add", request.routes), ("del", request.routes_deleted)):
        for spec in specs:
            family = "-6" if ":" in spec else "-4"
            result = ns.exec(["ip", family, "route", verb, *spec.split()], check=False)
            if result.returncode != 0:
                raise TunlabError(f"ip route {verb} {spec} failed: {result.stderr.strip()}",
                                  f"write the route as `ip route {verb}` takes it")
    if request.nft_ruleset:
        _apply_ruleset(ns, request.nft_ruleset)
    if request.nft_rules:
        _apply_ruleset(ns, rules_ruleset(request.nft_rules))
    for command in request.nft_commands:
        _apply_ruleset(ns, command + "\n")


def craft(request: FateRequest) -> bytes:
    """The packet a request describes, as bytes."""
    extra: dict[str, Any] = {}
    if request.size is not None:
        extra["size"] = request.size
    if request.df:
        extra["df"] = True
    return packets.craft(request.src, request.dst, request.proto, dport=request.dport,
                         ttl=request.ttl, **extra)


def run(request: FateRequest, *, trace: bool = True,
        before_inject: Callable[[SeedLab], None] | None = None) -> FateReport:
    """Build the seed's host as ``request`` says, write its packet into ``request.dev``, judge.

    Everything happens in a private namespace that is removed afterwards, also on errors.
    ``log_martians`` is on unless the request sets it, so the kernel names martians.
    """
    started = time.monotonic()
    packet = craft(request)
    settings = {"net.ipv4.conf.all.log_martians": "1", **request.settings}
    with SeedLab("fate", uplink=True) as lab:
        SysctlChanges(lab.ns, settings).apply()  # the namespace goes away; no restore needed
        _configure(lab, request)
        listeners = [lab.ns.run(_open_listener, listener, request.family)
                     for listener in request.listeners]
        try:
            if before_inject is not None:
                before_inject(lab)
            devices = [lab.device(name) for name in LAB_DEVICES]
            for device in devices:
                os.set_blocking(device.fileno(), False)
            writer = devices[list(LAB_DEVICES).index(request.dev)]
            time.sleep(0.02)
            _drain(devices)  # router solicitations and the like, sent when the devices came up
            writer_comm = f"tlw{secrets.token_hex(6)}"  # unique on the machine
            lab.ns.run(tracefs.name_this_thread, writer_comm)
            tracer = _start_nft_tracer(lab.ns) if request.has_firewall else None
            try:
                report = observe(lab.ns, lambda: lab.ns.run(writer.write, packet),
                                 writer_comm=writer_comm, capture_devices=devices,
                                 packet=packet, dev=request.dev, trace=trace)
            finally:
                nft_trace = tracer.stop() if tracer is not None else None
            if nft_trace is not None:
                _attach_firewall(report, nft_trace, request)
            if report.verdict == Verdict.DROPPED:  # only the explanations of drops need them
                report.route_back, report.route_in = _lookups(lab.ns, request)
        finally:
            for sock in listeners:
                sock.close()
    report.packet = {**report.packet, "hex": packet.hex()}
    report.elapsed = time.monotonic() - started
    return report


def _start_nft_tracer(ns: Namespace) -> NftTracer | None:
    try:
        return NftTracer(ns).start()
    except (TunlabError, OSError):
        return None  # the verdict stands without it; the report says the rule is unknown


def _attach_firewall(report: FateReport, trace: NftTrace,
                     request: FateRequest) -> None:
    """Name the rule or policy that refused the packet, and the accept that would pass it."""
    report.evidence.append(Evidence.NFTRACE)
    packet = PacketInfo(request.src, request.dst, iif=request.dev)
    verdict = trace.verdict_for(packet)
    if verdict is None or not verdict.decision.refuses:
        return
    report.firewall = verdict
    try:
        report.firewall_fix = propose_fix(verdict, trace.ruleset, packet)
    except TunlabError:
        report.firewall_fix = None


def _lookups(ns: Namespace, request: FateRequest) -> tuple[str, str]:
    """``ip route get SRC`` (the way back to the source, which reverse-path filtering checks)
    and ``ip route get DST from SRC iif DEV`` (the lookup the kernel made for the packet)."""

    def get(*args: str) -> str:
        result = ns.exec(["ip", "route", "get", *args], check=False)
        out = (result.stdout or result.stderr).strip()
        line = " ".join(out.splitlines()[0].split()) if out else ""
        return line.removesuffix(" uid 0").removeprefix("RTNETLINK answers: ")

    return get(request.src), get(request.dst, "from", request.src, "iif", request.dev)
