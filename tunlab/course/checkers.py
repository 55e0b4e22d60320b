"""The exercises' checkers, all of one shape (:class:`Checker`): read the answer the way a
teacher would (equivalent spellings give the same normal form, or :class:`Wrong` says what kind
of value is asked for), judge the normal form without the kernel (why a wrong answer is wrong
without naming the right one; why a right one is right), and, where the lab runs, verify it
against the kernel itself. Accepted answers are stored as SHA-256 digests of their normal form,
so reading this file does not spoil them.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunlab.course.fates import live_fate
from tunlab.kernel.host import is_privileged

__all__ = ["ANSWERS", "CAPABILITIES", "Checker", "CHECKERS", "digest_checker", "Judgement",
           "Wrong"]

Judgement = tuple[bool, str]
"""``(ok, message)``: the verdict on an answer and the reason, in words."""


class Wrong(Exception):
    """An answer that cannot even be read as the kind of value asked for (the message says
    which kind)."""


def _same(answer: Any) -> Any:
    return answer


@dataclass(frozen=True)
class Checker:
    """How one exercise's answer is checked.

    ``read`` turns the answer into its normal form (raising :class:`Wrong` when it cannot);
    ``judge`` decides on the normal form without the kernel; ``verify``, when given, asks the
    kernel (``context`` is what the notebook passed: the lesson or a panel) and returns None
    when it cannot run here, so that ``judge`` decides.
    """

    judge: Callable[[Any], Judgement]
    read: Callable[[Any], Any] = _same
    verify: Callable[[Any, Any], Judgement | None] | None = None

    def __call__(self, answer: Any, context: Any = None) -> Judgement:
        """The verdict on ``answer``: the kernel's where it can run, else the judge's."""
        try:
            normal = self.read(answer)
            verdict = self.verify(normal, context) if self.verify is not None else None
            return verdict if verdict is not None else self.judge(normal)
        except Wrong as wrong:
            return False, str(wrong)

    def accepts(self, answer: Any) -> bool:
        """True when the judge (without the kernel) accepts ``answer``."""
        try:
            return self.judge(self.read(answer))[0]
        except Wrong:
            return False


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


ANSWERS = {
    "00": "82bc4445374d9410e2b5abbed681ad9fc8044355d645ad8205c9005bc4157602",
    "01": "39fa9ec190eee7b6f4dff1100d6343e10918d044c75eac8f9e9a2596173f80c9",
    "02": "19018fa00e3019b22e05bd6930778cc8674bd1548c525e9ee7da2ecffe0993a5",
    "03": "c8b73024940ca7fb540ec5114a04f02d14a22d68ee3dd589f1a29395e7043a8d",
    "04": "5feceb66ffc86f38d952786c6d696c79c2dbc239dd4e91b46729d73a27fb57e9",
    "06": "778091c9296f10adae7668a513ef0e5ba19da030687e506af461434261e66afa",
    "07": "35c39c51869e417ec83995513f1ef32c097f09b55d3afdcc92c2644e9f9b2717",
    "08": "d034a904e224b629947dac2110cf9900b655e6934aa735d5144f92a3399785fc",
}
"""SHA-256 of each exercise's answer in its normal form: checkable, but not readable."""


def _matches(exercise: str, normal: str) -> bool:
    return _digest(normal) == ANSWERS[exercise]


def _words(value: Any) -> list[Any]:
    """``value`` as a list of parts: a tuple/list/set as is, a string split on commas,
    semicolons and white space (``"lo local"``, ``"route_a, forward_b"``)."""
    if isinstance(value, tuple | list | set | frozenset):
        return list(value)
    if isinstance(value, str):
        return [p for p in value.replace(",", " ").replace(";", " ").split() if p]
    return [value]


def _pair(value: Any, example: str) -> tuple[Any, Any]:
    parts = _words(value)
    if isinstance(value, set | frozenset) or len(parts) != 2:
        raise Wrong(f"answer with a pair in this order: {example}")
    return parts[0], parts[1]


def _number(value: Any, what: str = "a number") -> int:
    """An int from ``60``, ``"60"``, ``"0x3c"``, ``"60 bytes"`` (never from a bool)."""
    if isinstance(value, bool):
        raise Wrong(f"answer with {what}")
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    for unit in ("bytes", "byte", "packets", "packet"):
        text = text.removesuffix(unit).strip()
    if text in ("zero", "none", "no"):
        return 0
    try:
        return int(text, 0)
    except ValueError:
        raise Wrong(f"answer with {what}; {value!r} is not one") from None


def _name(value: Any) -> str:
    """An identifier in upper case with underscores: ``" skb_drop_reason_no-socket"`` ->
    ``"SKB_DROP_REASON_NO_SOCKET"``."""
    return "_".join(str(value).strip().upper().replace("-", " ").replace("_", " ").split())


# -- 00: capabilities

CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
                "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
                "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
                "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
                "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
                "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
                "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE")
"""Linux capabilities by number (linux/capability.h), without the CAP_ prefix."""
_LAB_CAPABILITIES = {"NET_ADMIN", "SYS_ADMIN"}


def _capability(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(CAPABILITIES):
        return CAPABILITIES[value]
    name = _name(value).removeprefix("CAP_")
    if name.isdigit() and int(name) < len(CAPABILITIES):
        return CAPABILITIES[int(name)]
    if name not in CAPABILITIES:
        raise Wrong(f"{value!r} is not a Linux capability (man 7 capabilities lists them)")
    return name


def _capability_pair(answer: Any) -> tuple[str, str]:
    held, missing = (_capability(v) for v in _pair(answer, '("CAP_...", "CAP_...")'))
    return held, missing


def _judge_capabilities(pair: tuple[str, str]) -> Judgement:
    held, missing = pair
    if _matches("00", f"{held}|{missing}"):
        return True, ("CAP_NET_ADMIN configures the network inside a namespace "
                      "(devices, addresses, routes, firewall, TUN devices), while creating a "
                      "namespace (unshare, and the bind mount `ip netns add` makes) needs "
                      "CAP_SYS_ADMIN. The lab needs both, so it runs as root.")
    if held == missing:
        return False, "the capability it holds and the one it lacks cannot be the same"
    others = [f"CAP_{c}" for c in (held, missing) if c not in _LAB_CAPABILITIES]
    if others:
        return False, (f"{', '.join(others)} is not one of the two capabilities the lab "
                       "needs (see the doctor's table above)")
    return False, ("both are the lab's capabilities, but the other way round: which name "
                   "speaks of network administration, which of everything else?")


# -- 01: packet information

def _pi_proto(answer: Any) -> int:
    """The number an answer names: 60, "0x003c", "003c", b"\\x00<", "ETH_P_IP"."""
    if isinstance(answer, bytes | bytearray):
        value = int.from_bytes(answer, "big")
    elif isinstance(answer, str) and _name(answer) in ("ETH_P_IP", "ETH_P_IPV6"):
        value = 0x0800 if _name(answer) == "ETH_P_IP" else 0x86DD
    else:
        text = str(answer).replace(" ", "") if isinstance(answer, str) else answer
        if isinstance(text, str) and len(text) == 4 and not text.isdigit() \
                and not text.lower().startswith("0x"):
            text = "0x" + text  # "003c": two bytes in hex
        value = _number(text, "a number (decimal or 0x hex)")
    return value


def _judge_pi_proto(value: int) -> Judgement:
    if _matches("01", str(value)):
        return True, ("0x003c = 60, the packet's total length. Without IFF_NO_PI the "
                      "kernel takes bytes 0-1 of what you write as `flags` and bytes 2-3 as "
                      "`proto`; no protocol has that number, so the packet silently vanishes.")
    if value == 0x0800:
        return False, ("0x0800 is what a packet info *should* say for IPv4, but nobody wrote "
                       "one: the kernel reads it from the first bytes of the bare packet")
    if value == 0x86DD:
        return False, "0x86dd is IPv6's EtherType; the packet written is IPv4 and has no header"
    if value == 4:
        return False, "4 is the size of the packet info; the question asks for its proto field"
    if value == 0x4500:
        return False, ("0x4500 are bytes 0-1 of the packet: the kernel reads them as `flags`; "
                       "`proto` is the next field")
    return False, ("the kernel reads `struct tun_pi { u16 flags; be16 proto; }` from the first "
                   "four bytes of what you write: which bytes of the IPv4 header are those?")


# -- 02: route get

_TABLE_IDS = {"255": "LOCAL", "254": "MAIN", "253": "DEFAULT"}


def _route_pair(answer: Any) -> tuple[str, str]:
    if isinstance(answer, str):  # "dev lo table local", as `ip route get` spells it
        answer = [w for w in _words(answer) if w.lower() not in ("dev", "table")]
    device, table = _pair(answer, '("device", "table")')
    device = _name(device).removeprefix("DEV_").lower()
    table = _name(table).removeprefix("TABLE_")
    return device, _TABLE_IDS.get(table, table).lower()


def _route_hint(device: str, table: str, device_ok: bool, table_ok: bool) -> str:
    parts = []
    if not device_ok:
        parts.append(f"the kernel does not send it through {device}" +
                     (": mytun is the way to the *other* addresses of 10.0.0.0/24, not to "
                      "mytun's own" if device == "mytun" else ""))
    if not table_ok:
        parts.append(f"the route it uses is not in table {table}" +
                     (": `ip route` shows table main, but the host's own addresses live in a "
                      "table it does not show by default" if table == "main" else ""))
    return "; ".join(parts) or "not the kernel's choice"


def _judge_route(pair: tuple[str, str]) -> Judgement:
    device, table = pair
    if _matches("02", f"{device}|{table}"):
        return True, ("`ip route get 10.0.0.1` says `local 10.0.0.1 dev lo table "
                      "local`: the host's own addresses are in table local, which the kernel "
                      "consults first, and are delivered through lo, so mytun never sees them.")
    # which part is right: pair it with each plausible other part
    device_ok = any(_matches("02", f"{device}|{t}") for t in ("local", "main", "default"))
    table_ok = any(_matches("02", f"{d}|{table}") for d in ("lo", "mytun", "mytun2"))
    return False, _route_hint(device, table, device_ok, table_ok)


def _verify_route_get(pair: tuple[str, str], lesson: Any) -> Judgement | None:
    """Exercise 02: compare with the kernel's own `ip route get 10.0.0.1`."""
    if lesson is None or not getattr(lesson, "live", False) or lesson.ns is None:
        return None
    device, table = pair
    if hasattr(lesson, "ensure_lab"):
        lesson.ensure_lab()  # checked again after lesson.finish(): ask a fresh lab
    out = lesson.ns.ip("route", "get", "10.0.0.1")
    local = lesson.ns.ip("route", "show", "table", "local")
    kernel_device = out.split(" dev ")[1].split()[0] if " dev " in out else "?"
    kernel_table = "local" if "local 10.0.0.1 " in local else "main"
    device_ok, table_ok = device == kernel_device, table == kernel_table
    if device_ok and table_ok:
        return True, (f"Right, the kernel agrees: `{out.strip()}`. The host's own addresses "
                      "are in table local, which the kernel consults first, and are delivered "
                      "through lo, so mytun never sees them.")
    return False, _route_hint(device, table, device_ok, table_ok)


# -- 03: frame header

def _header_bytes(answer: Any) -> bytes:
    if isinstance(answer, bytes | bytearray):
        return bytes(answer)
    if isinstance(answer, list | tuple) and all(isinstance(b, int) for b in answer):
        try:
            return bytes(answer)
        except ValueError:
            raise Wrong("each byte is a number from 0 to 255") from None
    text = str(answer).strip().lower()
    for junk in ("0x", "\\x", " ", ":", "-", ","):
        text = text.replace(junk, "")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise Wrong('answer with the bytes in hex, e.g. "00 11 22 33 44 55 66 77"') from None


def _judge_header(header: bytes) -> Judgement:
    from tunlab.proto import framing

    if _matches("03", header.hex()):
        return True, ("54 4c is the magic `TL`, 01 the version, 02 the type DATA, and "
                      "00 00 05 78 the payload length 1400, big endian: the packet costs 1408 "
                      "bytes on the TCP stream, before TCP's and IP's own headers.")
    if len(header) != framing.HEADER_SIZE:
        return False, f"the header has {framing.HEADER_SIZE} bytes; you gave {len(header)}"
    magic, version, kind, length = framing.HEADER.unpack(header)
    if magic != framing.MAGIC:
        return False, "bytes 0-1 are the magic: the two ASCII letters every frame starts with"
    if version != framing.VERSION:
        return False, "byte 2 is the protocol version, and tunlab speaks only one"
    if kind == framing.FrameType.GSO_DATA:
        return False, ("type GSO_DATA carries a virtio-net header before the packet (the fast "
                       "path); the vpn-client of this lesson sends plain packets")
    if kind != framing.FrameType.DATA:
        return False, "byte 3, the type, must say that the frame carries a packet"
    if length == 1400 + framing.HEADER_SIZE:
        return False, "the length field counts the payload only, not the header"
    if header[4:] == (1400).to_bytes(4, "little"):
        return False, "bytes 4-7 are big endian: the most significant byte comes first"
    return False, ("bytes 4-7 are the payload's length, the 1400-byte packet, as a 32-bit "
                   "big-endian number")


# -- 04: echo count

def _packets(answer: Any) -> int:
    return _number(answer, "a number of packets")


def _judge_echo_count(count: int) -> Judgement:
    if _matches("04", str(count)):
        return True, ("None: 10.0.0.1 is the host's own address: the kernel routes the "
                      "ping through lo (lesson 02) and answers it itself, so the vpn-client "
                      "reads nothing from mytun.")
    return False, ("the vpn-client only sees what the kernel routes into mytun: which device "
                   "does the kernel pick for one of its own addresses (lesson 02)?")


def _verify_echo_count(count: int, panel: Any) -> Judgement | None:
    """Exercise 04: ping 10.0.0.1 through the live seed lab and count what the client read."""
    if panel is None or not hasattr(panel, "run") or getattr(panel, "server", None) is None:
        return None
    if not getattr(panel.lesson, "live", False):
        return None
    result = panel.run("10.0.0.1")
    if result is None:
        return None
    seen = result.echo_read
    if count == seen:
        return True, (f"The vpn-client read {seen} echo request(s) for 10.0.0.1: the kernel "
                      "answered the ping itself via lo.")
    return False, ("the panel just pinged 10.0.0.1 and the vpn-client's count differs: look at "
                   "what it read from mytun, and ask which device the kernel picks for its "
                   "own address (lesson 02)")


# -- 05: a source that strict rp_filter lets through

def _ipv4_address(answer: Any) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(str(answer).strip())
    except ValueError:
        raise Wrong(f"{answer!r} is not an IPv4 address") from None


def _judge_source_offline(address: ipaddress.IPv4Address) -> Judgement:
    net = ipaddress.IPv4Network("10.0.2.0/24")
    if address == ipaddress.IPv4Address("10.0.2.1"):
        return False, ("that is mytun2's own address: a packet arriving from outside with one "
                       "of the host's own addresses as source is a martian (IP_LOCAL_SOURCE)")
    if address in (net.network_address, net.broadcast_address):
        return False, f"{address} is not a host address of its subnet: the kernel drops it"
    if address in ipaddress.IPv4Network("10.0.0.0/24"):
        return False, (f"the kernel routes {address} out of mytun (or delivers it locally), "
                       "not out of mytun2 where the packet came in: rp_filter or the martian "
                       "check drops it")
    if address in net:
        return True, (f"The kernel would route a reply to {address} out of mytun2, the device "
                      "the packet came in on, so strict rp_filter lets it through and it is "
                      "forwarded to 10.0.0.2.")
    return False, (f"strict rp_filter asks where a reply to {address} would go: not out of "
                   "mytun2, where the packet came in, so the kernel drops it")


def _verify_forwarded_source(address: ipaddress.IPv4Address, lesson: Any
                             ) -> Judgement | None:
    """Exercise 05: ask the kernel whether a packet from ``address`` to 10.0.0.2 is
    forwarded."""
    answer = str(address)
    settings = {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 1,
                "net.ipv4.conf.all.accept_local": 0, "net.ipv4.conf.all.log_martians": 1}
    if not is_privileged():
        return None
    report = live_fate(answer, "10.0.0.2", sysctls=settings)
    verdict, reasons = report.verdict, report.drop_reasons
    if verdict == "forwarded":
        return True, (f"The kernel forwarded {answer} -> 10.0.0.2 out of mytun: the reverse "
                      "path to that source is mytun2, the device it arrived on, so strict "
                      "rp_filter is satisfied.")
    return False, (f"The kernel said: {verdict} {', '.join(reasons)}. "
                   f"{report.explanation}")


# -- 06: drop reason of a UDP packet to a closed port

_COURSE_REASONS = {
    "IP_NOPROTO": "IP_NOPROTO is protocol 253's reason (above): UDP has a handler, so this "
                  "packet gets one step further",
    "IP_INADDRERRORS": "IP_INADDRERRORS is for a packet that is not for this host and not "
                       "forwarded; 10.0.2.1 is this host's own address",
    "IP_RPFILTER": "IP_RPFILTER needs rp_filter on, and the builder's packet leaves it at 0",
    "NETFILTER_DROP": "there is no firewall in this packet's way",
    "IP_LOCAL_SOURCE": "200.1.2.3 is not one of this host's addresses: no local-source martian",
}


def _reason_name(answer: Any) -> str:
    if not isinstance(answer, str):
        raise Wrong('answer with the drop reason\'s name, e.g. "IP_NOPROTO"')
    return _name(answer).removeprefix("SKB_DROP_REASON_")


def _judge_drop_reason(name: str) -> Judgement:
    if _matches("06", name):
        return True, ("NO_SOCKET. UDP is delivered to its handler, which finds no socket "
                      "bound to port 9, frees the packet with NO_SOCKET (counter UdpNoPorts) "
                      "and answers ICMP port unreachable (type 3, code 3).")
    if name in _COURSE_REASONS:
        return False, _COURSE_REASONS[name]
    return False, (f"the kernel does not report {name} for this packet: send it with the "
                   "builder (protocol UDP, port 9) and read the reason in its result")


# -- 07: the set of fixes

_FIX_ORDER = ("route_a", "forward_b", "firewall_b", "route_c")
_FIX_STOPS = {
    "route_a": "a has no route to 192.168.50.2 (ENETUNREACH, IpOutNoRoutes)",
    "forward_b": "IP_INADDRERRORS on b: forwarding is off",
    "firewall_b": "NETFILTER_DROP on b: forward policy drop",
    "route_c": "c has no route back to 10.9.0.1: the reply is never sent",
}
"""Where the packet stops when this fix (and every later one) is missing: the lesson's steps."""


def _fix_names(answer: Any) -> set[str]:
    if isinstance(answer, dict):
        answer = [k for k, v in answer.items() if v]
    return {_name(a).lower() for a in _words(answer)}


def _judge_fixes(fixes: set[str]) -> Judgement:
    from tunlab.lab.vpn import VpnScenario

    unknown = fixes - set(VpnScenario.FIXES)
    if unknown:
        return False, (f"unknown fix names: {', '.join(sorted(unknown))}; the panel's are "
                       f"{', '.join(VpnScenario.FIXES)}")
    if _matches("07", "|".join(sorted(fixes))):
        return True, ("The ping works with these fixes and fails without any one: a "
                      "needs a route into the tunnel, b must forward and its firewall let the "
                      "packets through, and c needs a route back. rp_filter is satisfied because "
                      "the routes are symmetric.")
    missing = [f for f in _FIX_ORDER if f not in fixes]
    if missing:
        return False, (f"with exactly these fixes the ping still fails: the packet stops where "
                       f"the lesson's step says: {_FIX_STOPS[missing[0]]}")
    extra = sorted(fixes - set(_FIX_ORDER))
    return False, f"the ping also works without {', '.join(extra)}: it is not needed"


def _verify_fix_set(fixes: set[str], panel: Any) -> Judgement | None:
    """Exercise 07: apply exactly these fixes in the live scenario, and each one less."""
    if panel is None or not hasattr(panel, "verify_fix_set"):
        return None
    return panel.verify_fix_set(fixes)


# -- 08: MSS

def _bytes_count(answer: Any) -> int:
    return _number(answer, "a number of bytes")


def _judge_mss(mss: int) -> Judgement:
    if _matches("08", str(mss)):
        return True, ("1400 - 20 (IPv4 header) - 20 (TCP header) = 1360 bytes of TCP "
                      "payload per segment. The tunnel's own headers (tunlab's 8, the outer "
                      "TCP and IP) are added on the underlay, outside tun0.")
    if mss == 1400:
        return False, "1400 is the MTU: the whole IP packet; the MSS counts TCP's payload only"
    if mss == 1380:
        return False, "only one header taken off: both the IP and the TCP header come off"
    if mss == 1460:
        return False, "that is the MSS for MTU 1500; this tun0 has a smaller MTU"
    if mss < 1360:
        return False, ("too small: the tunnel's own overhead is added outside tun0 (on the "
                       "underlay), not inside the packets the kernel hands to it")
    return False, "the MSS is the MTU minus the headers in front of TCP's payload"


def _plain_normal(value: Any) -> str:
    """A plain normal form: parts joined by ``|`` (sets sorted), text stripped, lower case,
    without spaces, numbers in decimal."""
    if isinstance(value, tuple | list):
        return "|".join(_plain_normal(v) for v in value)
    if isinstance(value, set | frozenset):
        return "|".join(sorted(_plain_normal(v) for v in value))
    text = str(value).strip().lower().replace(" ", "")
    try:
        return str(int(text, 0))
    except ValueError:
        return text


def digest_checker(answers: set[str], explain: str,
                   verify: Callable[[Any, Any], Judgement | None] | None = None) -> Checker:
    """A checker for the older form of an exercise: the digests of the accepted answers in
    their plain normal form (see :func:`_plain_normal`), what to say when right, and
    optionally a ``verify`` that gets the answer as given (a function, for lesson 09)."""
    def judge(answer: Any) -> Judgement:
        if _digest(_plain_normal(answer)) in answers:
            return True, explain
        return False, "not this one: read the question again, or ask for a hint"
    return Checker(judge, verify=verify)


CHECKERS: dict[str, Checker] = {
    "00": Checker(_judge_capabilities, read=_capability_pair),
    "01": Checker(_judge_pi_proto, read=_pi_proto),
    "02": Checker(_judge_route, read=_route_pair, verify=_verify_route_get),
    "03": Checker(_judge_header, read=_header_bytes),
    "04": Checker(_judge_echo_count, read=_packets, verify=_verify_echo_count),
    "05": Checker(_judge_source_offline, read=_ipv4_address, verify=_verify_forwarded_source),
    "06": Checker(_judge_drop_reason, read=_reason_name),
    "07": Checker(_judge_fixes, read=_fix_names, verify=_verify_fix_set),
    "08": Checker(_judge_mss, read=_bytes_count),
}
"""The checker of each exercise of lessons 00-08."""


