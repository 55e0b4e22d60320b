"""Lesson 09's judgements, without I/O: what a participant's result (bytes, or the kernel's
counters after their code ran) says, in one line of feedback.
"""

from __future__ import annotations

import os
import struct
import traceback
from dataclasses import dataclass, field
from typing import Any

from tunlab.course.handson.runner import LAB_SOURCE, PING_TARGET, Outcome
from tunlab.course.handson.solutions import PI_IPV4
from tunlab.packet.validate import checksum_ok

__all__ = ["diagnose_read", "diagnose_reply", "judge_udp", "UNFRAMED", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    """A check's result: ``ok`` and one line for the participant; ``counters`` are the kernel's
    counter deltas the verdict rests on."""

    ok: bool
    message: str
    counters: dict[str, int] = field(default_factory=dict)

    def pair(self) -> tuple[bool, str]:
        """``(ok, message)`` as :class:`tunlab.course.Exercise` verifiers return it."""
        return self.ok, self.message


def _as_bytes(value: Any) -> bytes | None:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if hasattr(value, "build") and callable(value.build):  # a scapy packet
        return bytes(value)
    return None


def diagnose_read(value: Any) -> str | None:
    """What is wrong with what a ``read_ping`` returned (None: it is a whole IPv4 echo request
    from 10.0.0.1 to 10.0.0.2). Pure: no root, no lab."""
    from scapy.layers.inet import ICMP, IP

    data = _as_bytes(value)
    if data is None:
        return (f"read_ping returned {type(value).__name__}, not bytes: return what "
                "os.read(fd, 2048) gave you")
    if not data:
        return "read_ping returned no bytes"
    if data[:4] == PI_IPV4 and len(data) > 4 and data[4] >> 4 == 4:
        return "the 4-byte PI header is still there: did you set IFF_NO_PI?"
    if data[0] >> 4 == 6:
        return ("you returned an IPv6 packet (the router solicitation a new device sends): "
                "skip packets whose first 4 bits are not 4")
    if data[0] >> 4 != 4 or len(data) < 20:
        return f"that is not an IPv4 packet (first byte 0x{data[0]:02x}, {len(data)} bytes)"
    total = struct.unpack("!H", data[2:4])[0]
    if len(data) < total:
        return (f"you read only {len(data)} of the packet's {total} bytes: read with a buffer "
                "as large as the MTU (os.read(fd, 2048))")
    ip = IP(data)
    if not ip.haslayer(ICMP) or ip[ICMP].type != 8:
        return f"that IPv4 packet is not the echo request: {ip.summary()}"
    if (ip.src, ip.dst) != (LAB_SOURCE, PING_TARGET):
        return (f"that echo request is {ip.src} -> {ip.dst}, not ping's "
                f"{LAB_SOURCE} -> {PING_TARGET}")
    return None


def diagnose_reply(request: bytes, value: Any) -> str | None:
    """What is wrong with ``value`` as the echo reply to ``request`` (None: a correct reply).
    Pure: no root, no lab."""
    from scapy.layers.inet import ICMP, IP

    data = _as_bytes(value)
    if data is None:
        return f"make_reply returned {type(value).__name__}, not bytes: return bytes(packet)"
    if not data:
        return "make_reply returned no bytes, so nothing was written to mytun"
    if data[:4] == PI_IPV4 and len(data) > 4:
        return ("your reply starts with a 4-byte PI header: the device was opened with "
                "IFF_NO_PI, write the bare IP packet")
    if len(data) < 28 or data[0] >> 4 != 4:
        return f"your reply is not an IPv4 packet with an ICMP header ({len(data)} bytes)"
    ihl = (data[0] & 0x0F) * 4
    if struct.unpack("!H", data[2:4])[0] != len(data):
        return (f"the IP total length field says {struct.unpack('!H', data[2:4])[0]} but the "
                f"packet has {len(data)} bytes: let scapy compute it (delete len)")
    if not checksum_ok(data[:ihl]):
        return "your reply has the wrong IP header checksum: delete chksum so scapy recomputes it"
    req, rep = IP(request), IP(data)
    if (rep.src, rep.dst) != (req.dst, req.src):
        return (f"your reply goes {rep.src} -> {rep.dst}: swap the request's addresses "
                f"({req.dst} -> {req.src})")
    if rep.proto != 1 or not rep.haslayer(ICMP):
        return f"your reply carries IP protocol {rep.proto}, not ICMP (1)"
    if rep[ICMP].type != 0:
        return (f"your reply has ICMP type {rep[ICMP].type}: an echo reply has type 0 "
                "(8 is the request)")
    if not checksum_ok(data[ihl:]):
        return "your reply has the wrong ICMP checksum"
    if (rep[ICMP].id, rep[ICMP].seq) != (req[ICMP].id, req[ICMP].seq):
        return ("your reply's ICMP id/seq differ from the request's: ping ignores replies "
                "that do not match its own")
    if bytes(rep[ICMP].payload) != bytes(req[ICMP].payload):
        return "your reply's payload differs from the request's: ping checks that it comes back"
    return None


def _pump_problem(counters: dict[str, int]) -> str:
    a_read, b_written = counters.get("a tun0 tx packets", 0), counters.get("b tun0 rx packets", 0)
    b_read, a_written = counters.get("b tun0 tx packets", 0), counters.get("a tun0 rx packets", 0)
    if a_read == 0:
        return "your pump never read the echo request from a's tun0 (a tun0 tx packets +0)"
    if b_written == 0:
        return ("the echo request was read from a's tun0 but nothing was written to b's tun0: "
                "check socket -> tun (recv, unframe, os.write)")
    if b_read == 0:
        return ("b's tun0 received the request but the kernel sent no reply: was the packet "
                "written whole, without your length prefix?")
    if a_written == 0:
        return ("b's reply was read from b's tun0 but nothing was written to a's tun0: the "
                "reply direction is missing")
    return "packets crossed both ways but ping saw no reply: are they written unchanged?"


def _udp_problem(c: dict[str, int]) -> str:
    if c.get("a tun0 tx packets", 0) == 0:
        return "your pump never read the echo request from a's tun0 (a tun0 tx packets +0)"
    if c.get("a UdpOutDatagrams", 0) == 0:
        if c.get("a TcpOutSegs", 0):
            return ("a sent no UDP datagram but TCP segments: the check gives you a UDP "
                    "socket, send on it")
        return ("your pump read the echo request from a's tun0 but sent no datagram "
                "(a Udp OutDatagrams +0): tun -> socket is missing")
    if c.get("b UdpInDatagrams", 0) == 0:
        no_ports = f", NoPorts +{c['b UdpNoPorts']}" if c.get("b UdpNoPorts") else ""
        return ("a sent datagrams but b's kernel received none (b Udp InDatagrams +0"
                f"{no_ports}): send on the socket you were given")
    if c.get("b tun0 rx packets", 0) == 0:
        return ("b received the datagrams (b Udp InDatagrams "
                f"+{c['b UdpInDatagrams']}) but wrote nothing to b's tun0: socket -> tun "
                "is missing")
    if c.get("b tun0 tx packets", 0) == 0:
        return ("b's tun0 got the request but the kernel sent no reply: was it written "
                "unchanged, one datagram = one packet?")
    if c.get("b UdpOutDatagrams", 0) == 0:
        return ("b's kernel answered but the reply was never sent back as a datagram "
                "(b Udp OutDatagrams +0): the reply direction is missing")
    if c.get("a tun0 rx packets", 0) == 0:
        return ("the reply came back to a (a Udp InDatagrams "
                f"+{c.get('a UdpInDatagrams', 0)}) but nothing was written to a's tun0")
    return "packets crossed both ways but ping saw no reply: are they written unchanged?"


UNFRAMED = "datagrams not starting with an IP header"


def judge_udp(code: int, counters: dict[str, int], outcomes: dict[str, Outcome],
              early: dict[str, bool]) -> Verdict:
    """The 09d verdict from ping's exit ``code``, the kernels' counter deltas (``"a
    UdpOutDatagrams"``, ``"b tun0 rx packets"``, ... and :data:`UNFRAMED`) and how each
    host's pump ended (``early``: before the check shut its socket down). Pure."""
    c = counters
    unframed = c.get(UNFRAMED, 0)
    # after the sockets were shut down, an OSError from send/recv is the expected way out
    errors = [(n, o) for n, o in outcomes.items() if o.error is not None
              and (early.get(n, False) or not isinstance(o.error, OSError))]
    tcp = c.get("a TcpOutSegs", 0) + c.get("b TcpOutSegs", 0)
    both_ways = all(c.get(k, 0) >= 1 for k in ("a UdpOutDatagrams", "b UdpInDatagrams",
                                               "b UdpOutDatagrams", "a UdpInDatagrams"))
    if code == 0 and (unframed or tcp or not both_ways):
        if unframed:
            what = (f"{unframed} datagram(s) did not start with the IP header: with UDP one "
                    "datagram is one packet, send it without a length prefix")
        elif tcp:
            what = (f"the kernels counted {tcp} TCP segment(s): the packets must go as UDP "
                    "datagrams on the socket you were given")
        else:
            what = ("not as datagrams both ways (Udp OutDatagrams a "
                    f"+{c.get('a UdpOutDatagrams', 0)}, b +{c.get('b UdpOutDatagrams', 0)}): "
                    "forward the packets, do not answer them yourself")
        return Verdict(False, f"ping crossed, but {what}.", counters)
    if code == 0:
        note = "" if all(o.ok for o in outcomes.values()) else (
            " (Your pump did not return when the socket was shut down: return when recv() "
            "gives b''.)")
        return Verdict(True, "ping 10.9.0.2 crossed your UDP tunnel: a tun0 read "
                          f"+{c.get('a tun0 tx packets', 0)}, Udp OutDatagrams a "
                          f"+{c.get('a UdpOutDatagrams', 0)}, Udp InDatagrams b "
                          f"+{c.get('b UdpInDatagrams', 0)}, b tun0 written "
                          f"+{c.get('b tun0 rx packets', 0)}, and back; no TCP "
                          "segment." + note, counters)
    if errors:
        name, outcome = errors[0]
        return Verdict(False, _crash(name, outcome), counters)
    if unframed:
        return Verdict(False, f"{unframed} datagram(s) did not start with the IP header: "
                          "with UDP one datagram is one packet, send it as it is", counters)
    return Verdict(False, _udp_problem(counters), counters)


def _where(exc: BaseException) -> str:
    """The last line of the participant's own code in the traceback (not tunlab's, not the
    standard library's): ``" (line 7: sock.send(pakcet))"``."""
    frames = traceback.extract_tb(exc.__traceback__)
    tunlab_dir = os.path.dirname(os.path.abspath(__file__))
    own = [f for f in frames if not os.path.abspath(f.filename).startswith(tunlab_dir)
           and "/lib/python" not in f.filename]
    if not own:
        return ""
    frame = own[-1]
    code = f": {frame.line.strip()}" if frame.line else ""
    return f" (line {frame.lineno}{code})"


def _crash(name: str, outcome: Outcome, kind: str = "UDP") -> str:
    """One line: which pump raised what, and the participant's line that raised it."""
    where = _where(outcome.error) if outcome.error is not None else ""
    return _error_message(f"the {kind} pump on host {name}", outcome) + where


def _limit_message(what: str, outcome: Outcome, seconds: float) -> str:
    tail = (" It is still blocked in a system call; restart the kernel if it holds a device."
            if outcome.still_running else " It was stopped.")
    return f"{what} did not return within {seconds:.0f} s.{tail}"


def _error_message(what: str, outcome: Outcome) -> str:
    exc = outcome.error
    why = (" (the kernel refuses to take anything but an IP packet from a TUN fd: is a "
           "length prefix or header still in front?)"
           if isinstance(exc, OSError) and exc.errno == 22 else "")
    return f"{what} raised {type(exc).__name__}: {exc}{why}"
