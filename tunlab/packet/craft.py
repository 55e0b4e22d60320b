"""Crafting and dissecting IPv4 and IPv6 packets with scapy.

scapy is imported lazily and only the layers needed (``scapy.layers.inet`` for IPv4, plus
``scapy.layers.inet6`` for IPv6), never ``scapy.all``, which loads every protocol scapy knows
and takes several times longer. It is silenced: notebooks and the CLI should show our output,
not its warnings.
"""

from __future__ import annotations

import ipaddress
import logging
from types import ModuleType
from typing import Any

from tunlab.errors import TunlabError
from tunlab.packet import build as wire

__all__ = ["check_ip", "check_ipv4", "craft", "craft_with_scapy", "dissect", "HEADER", "ICMP_ECHO",
           "ICMP_ERRORS", "icmp_quoted_packet", "ICMPV6_ERRORS", "ip_family",
           "IPV6_EXTENSION_HEADERS", "L4_HEADER", "MAX_SIZE", "PROTOCOL_NAMES",
           "PROTOCOL_NAMES_V6", "protocol_number", "PROTOCOLS", "PROTOCOLS_V6", "SPORT",
           "summarize", "summarize_with_scapy"]

PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}
# IPv6 names its next headers the same way, except that ICMP is ICMPv6 (58).
PROTOCOLS_V6 = {"icmp": 58, "icmp6": 58, "icmpv6": 58, "ipv6-icmp": 58, "tcp": 6, "udp": 17}
PROTOCOL_NAMES_V6 = {58: "icmp6", 6: "tcp", 17: "udp"}
ICMP_ECHO = {4: 1, 6: 58}              # the protocol number of each family's ICMP
IPV6_EXTENSION_HEADERS = (0, 43, 44, 60)  # hop-by-hop, routing, fragment, destination options
MAX_SIZE = 65535                       # one write() to a TUN device; the IPv4 length field's limit
SPORT = 40000
HEADER = {4: 20, 6: 40}
L4_HEADER = {1: 8, 58: 8, 17: 8, 6: 20}


def _quiet() -> None:
    logging.getLogger("scapy").setLevel(logging.ERROR)
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)


def _inet() -> ModuleType:
    """scapy's IPv4 layers (IP, ICMP, UDP, TCP, Raw...)."""
    _quiet()
    from scapy.config import conf
    from scapy.layers import inet

    conf.verb = 0
    return inet


def _inet6() -> ModuleType:
    """scapy's IPv6 layers (IPv6, ICMPv6*, and UDP/TCP re-exported)."""
    _quiet()
    from scapy.config import conf
    from scapy.layers import inet6

    conf.verb = 0
    return inet6


def check_ip(address: str, what: str = "address") -> str:
    """``address`` (normalized) if it is an IPv4 or IPv6 address, else a :class:`TunlabError`."""
    if isinstance(address, str) and "%" in address:
        raise TunlabError(f"{what} {address!r} has a zone index (%...), which no packet carries",
                          "leave out the %DEVICE part: the packet goes into the device you name "
                          "with --dev")
    try:
        return str(ipaddress.ip_address(address))
    except ValueError as exc:
        raise TunlabError(f"{what} {address!r} is not an IPv4 or IPv6 address",
                          "write it like 200.1.2.3 or fd00:2::1") from exc


def check_ipv4(address: str, what: str = "address") -> str:
    """``address`` if it is a dotted IPv4 address, else a :class:`TunlabError` saying so."""
    try:
        return str(ipaddress.IPv4Address(address))
    except ValueError as exc:
        raise TunlabError(f"{what} {address!r} is not an IPv4 address",
                          "write it like 200.1.2.3") from exc


def ip_family(src: str, dst: str) -> int:
    """4 or 6: the IP version of ``src`` and ``dst``, which must be addresses of one family."""
    versions = {ipaddress.ip_address(check_ip(src, "source")).version,
                ipaddress.ip_address(check_ip(dst, "destination")).version}
    if len(versions) != 1:
        raise TunlabError(f"source {src} and destination {dst} are not of the same IP version",
                          "use two IPv4 addresses (200.1.2.3 -> 10.0.2.1) or two IPv6 "
                          "addresses (2001:db8::99 -> fd00:2::1)")
    return versions.pop()


def protocol_number(proto: str | int, version: int | None = None) -> int:
    """``icmp``/``icmp6``/``udp``/``tcp`` or a number 0-255 as the IP protocol (next header).

    ``icmp`` means ICMPv6 (58) when ``version`` is 6. With ``version=None`` any name of either
    family is accepted (``icmp`` is then 1).
    """
    if isinstance(proto, int) or str(proto).isdigit():
        number = int(proto)
        if not 0 <= number <= 255:
            raise TunlabError(f"protocol {number} is outside 0-255",
                              "use icmp, udp, tcp or 0-255")
        return number
    name = str(proto).lower()
    if version == 6:
        table = PROTOCOLS_V6
    elif version == 4:
        table = PROTOCOLS
    else:
        table = {**PROTOCOLS_V6, **PROTOCOLS}
    if name in table:
        return table[name]
    if version == 4 and name in PROTOCOLS_V6:
        raise TunlabError(f"protocol {proto!r} is ICMPv6, which needs IPv6 addresses",
                          "use --proto icmp with IPv4 addresses")
    raise TunlabError(f"unknown protocol {proto!r}",
                      "use icmp, udp, tcp or an IP protocol number such as 253")


def _check_options(version: int, number: int, dport: int | None, ttl: int, size: int | None,
                   df: bool) -> int:
    """The length of the headers in front of the payload; a TunlabError for bad options."""
    hop = "TTL" if version == 4 else "hop limit"
    if not 0 <= ttl <= 255:
        raise TunlabError(f"{hop} {ttl} is outside 0-255", f"use a {hop} from 0 to 255")
    if dport is not None:
        if number not in (6, 17):
            name = {1: "ICMP", 58: "ICMPv6"}.get(number, f"protocol {number}")
            raise TunlabError(f"{name} has no ports, so a destination port means nothing",
                              "leave out --dport, or use --proto udp or --proto tcp")
        if not 0 <= dport <= 65535:
            raise TunlabError(f"port {dport} is outside 0-65535", "use a port from 0 to 65535")
    if df and version == 6:
        raise TunlabError("--df is an IPv4 flag: IPv6 routers never fragment, every IPv6 "
                          "packet behaves as if it had DF set",
                          "leave out --df for IPv6 (a too-big packet gets Packet Too Big)")
    headers = HEADER[version] + L4_HEADER.get(number, 0)
    if size is not None and not headers <= size <= MAX_SIZE:
        raise TunlabError(f"size {size} is outside {headers}-{MAX_SIZE}: the total IP packet "
                          f"length must hold its {headers} bytes of headers",
                          f"use a size from {headers} to {MAX_SIZE}")
    return headers


def craft(src: str, dst: str, proto: str | int = "icmp", dport: int | None = None,
          ttl: int = 64, payload: bytes = b"tunlab", ident: int = 0x7475,
          size: int | None = None, df: bool = False) -> bytes:
    """One IPv4 or IPv6 packet as bytes; checksums are filled in.

    ``src`` and ``dst`` are both IPv4 or both IPv6. The packet is an ICMP (ICMPv6) echo
    request, a UDP datagram, a TCP SYN, or a raw protocol (next header) number with ``payload``
    behind the IP header. ``ttl`` is the TTL or the IPv6 hop limit; 0 is allowed (the kernel
    delivers such a packet locally and refuses to forward it). ``size`` is the total IP packet
    length: the payload is cut or padded with zero bytes to reach it. ``df`` sets IPv4's
    don't-fragment flag. ``dport`` is only for udp and tcp. Raises :class:`TunlabError` for any
    bad option, before building anything.
    """
    version = ip_family(src, dst)
    number = protocol_number(proto, version)
    headers = _check_options(version, number, dport, ttl, size, df)
    if size is not None:
        body = size - headers
        payload = payload[:body] + bytes(max(0, body - len(payload)))
    return wire.build(str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)), number,
                      dport=dport, ttl=ttl, payload=payload, ident=ident, df=df, sport=SPORT)


def craft_with_scapy(src: str, dst: str, number: int, dport: int | None = None, ttl: int = 64,
                     payload: bytes = b"tunlab", ident: int = 0x7475, df: bool = False) -> bytes:
    """What :func:`craft` builds, built by scapy (the reference tests/test_wire.py holds
    :mod:`tunlab.packet.build` to). Options are not checked here."""
    from scapy.packet import Raw

    version = ip_family(src, dst)
    if version == 4:
        inet = _inet()
        ip = inet.IP(src=src, dst=dst, ttl=ttl, id=ident, flags="DF" if df else 0)
        if number == 1:
            packet = ip / inet.ICMP(type=8, id=ident, seq=1) / payload
        elif number == 17:
            packet = ip / inet.UDP(sport=SPORT, dport=9 if dport is None else dport) / payload
        elif number == 6:
            packet = ip / inet.TCP(sport=SPORT, dport=80 if dport is None else dport, flags="S",
                                   seq=1000) / payload
        else:
            packet = ip / Raw(payload)
            packet[inet.IP].proto = number
        return bytes(packet)
    inet6 = _inet6()
    ip6 = inet6.IPv6(src=src, dst=dst, hlim=ttl)
    if number == 58:
        packet = ip6 / inet6.ICMPv6EchoRequest(id=ident, seq=1, data=payload)
    elif number == 17:
        packet = ip6 / inet6.UDP(sport=SPORT, dport=9 if dport is None else dport) / payload
    elif number == 6:
        packet = ip6 / inet6.TCP(sport=SPORT, dport=80 if dport is None else dport, flags="S",
                                 seq=1000) / payload
    else:
        ip6.nh = number
        packet = ip6 / Raw(payload)
    return bytes(packet)


def summarize(packet: bytes) -> dict[str, Any]:
    """The fields a person looks at first, the same keys for IPv4 and IPv6.

    ``version``, ``src``, ``dst``, ``proto`` (icmp/icmp6/udp/tcp or the number), ``ttl`` (the
    hop limit for IPv6), ``len``; ``icmp_type``/``icmp_code`` for ICMP and ICMPv6 (and ``mtu``
    for "fragmentation needed" and "packet too big"); ``sport``/``dport`` and ``tcp_flags``.
    For IPv6, ``proto`` is the upper-layer protocol behind any extension headers.
    """
    return wire.summarize(packet)


def summarize_with_scapy(packet: bytes) -> dict[str, Any]:
    """What :func:`summarize` reads, read by scapy (the reference for
    :mod:`tunlab.packet.build`)."""
    if not packet:
        return {"version": 0, "len": 0}
    version = packet[0] >> 4
    if version == 6:
        return _summarize_v6(packet)
    if version != 4:
        return {"version": version, "len": len(packet)}
    inet = _inet()
    ip = inet.IP(packet)
    info: dict[str, Any] = {"version": 4, "src": ip.src, "dst": ip.dst,
                            "proto": PROTOCOL_NAMES.get(ip.proto, ip.proto), "ttl": ip.ttl,
                            "len": len(packet)}
    if ip.haslayer(inet.ICMP):
        icmp = ip[inet.ICMP]
        info["icmp_type"], info["icmp_code"] = int(icmp.type), int(icmp.code)
        if (icmp.type, icmp.code) == (3, 4) and icmp.nexthopmtu is not None:
            info["mtu"] = int(icmp.nexthopmtu)
    elif ip.haslayer(inet.UDP) or ip.haslayer(inet.TCP):
        layer = ip[inet.UDP] if ip.haslayer(inet.UDP) else ip[inet.TCP]
        info["sport"], info["dport"] = int(layer.sport), int(layer.dport)
        if ip.haslayer(inet.TCP):
            info["tcp_flags"] = str(layer.flags)
    return info


def _upper_layer_v6(ip6: Any) -> tuple[int, Any]:
    """(next header number, scapy layer) of the upper-layer protocol behind extension headers.

    The layer is None for a fragment other than the first: its bytes continue the upper-layer
    payload and hold no ICMPv6/UDP/TCP header.
    """
    number, layer = int(ip6.nh), ip6.payload
    for _ in range(8):  # bounded: a packet could chain extension headers forever
        if number not in IPV6_EXTENSION_HEADERS or not hasattr(layer, "nh"):
            break
        if number == 44 and int(getattr(layer, "offset", 0) or 0) != 0:
            return int(layer.nh), None
        number, layer = int(layer.nh), layer.payload
    return number, layer


def _summarize_v6(packet: bytes) -> dict[str, Any]:
    inet6 = _inet6()
    ip6 = inet6.IPv6(packet)
    number, layer = _upper_layer_v6(ip6)
    info: dict[str, Any] = {"version": 6, "src": ip6.src, "dst": ip6.dst,
                            "proto": PROTOCOL_NAMES_V6.get(number, number), "ttl": int(ip6.hlim),
                            "len": len(packet)}
    head = bytes(layer)[:2] if number == 58 and layer is not None else b""
    if len(head) == 2:  # from the bytes: not every ICMPv6 class has a "code" field (MLDv2)
        info["icmp_type"], info["icmp_code"] = head[0], head[1]
        if head[0] == 2 and getattr(layer, "mtu", None) is not None:
            info["mtu"] = int(layer.mtu)
    elif number in (6, 17) and layer is not None and hasattr(layer, "sport"):
        info["sport"], info["dport"] = int(layer.sport), int(layer.dport)
        if number == 6:
            info["tcp_flags"] = str(layer.flags)
    return info


def dissect(packet: bytes) -> str:
    """scapy's layer-by-layer view of ``packet`` (like ``packet.show()``), as text."""
    if packet and packet[0] >> 4 == 6:
        parsed = _inet6().IPv6(packet)
    else:
        parsed = _inet().IP(packet)
    return str(parsed.show(dump=True))


ICMP_ERRORS = (3, 4, 5, 11, 12)
ICMPV6_ERRORS = (1, 2, 3, 4)  # destination unreachable, packet too big, time exceeded, parameter


def icmp_quoted_packet(packet: bytes) -> dict[str, Any] | None:
    """For an ICMP or ICMPv6 error, the src/dst/proto of the packet it quotes (the one it
    complains of); None for anything else."""
    if len(packet) >= 28 and packet[0] >> 4 == 4 and packet[9] == 1:
        ihl = (packet[0] & 0x0F) * 4
        if packet[ihl] not in ICMP_ERRORS:
            return None
        inet = _inet()
        quoted = inet.IP(packet)[inet.ICMP].payload
        if not quoted or not hasattr(quoted, "src"):
            return None
        return {"src": quoted.src, "dst": quoted.dst,
                "proto": PROTOCOL_NAMES.get(quoted.proto, quoted.proto)}
    if len(packet) >= 88 and packet[0] >> 4 == 6 and packet[6] == 58 \
            and packet[40] in ICMPV6_ERRORS:
        inet6 = _inet6()
        error = inet6.IPv6(packet).payload
        quoted = error.payload
        if not quoted or not hasattr(quoted, "src") or not hasattr(quoted, "nh"):
            return None
        number, _ = _upper_layer_v6(quoted)
        return {"src": quoted.src, "dst": quoted.dst,
                "proto": PROTOCOL_NAMES_V6.get(number, number)}
    return None
