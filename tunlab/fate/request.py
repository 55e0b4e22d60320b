"""One fate experiment's inputs, validated: from the command line (:func:`parse_args`) or
from Python (:func:`request`), both through :func:`make_request`.

A fix changes a request with typed changes (:mod:`tunlab.fate.changes`, :meth:`FateRequest.apply`);
:meth:`FateRequest.to_args` writes a request as ``tunlab fate`` arguments, for display and JSON.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tunlab.errors import TunlabError
from tunlab.fate import nftinput
from tunlab.fate.changes import Change, apply_all

__all__ = ["add_arguments", "FateRequest", "from_namespace", "HOOKS", "Listener", "make_request",
           "parse_args", "request", "ROUTE_TYPES"]

HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
ROUTE_TYPES = ("blackhole", "unreachable", "prohibit", "throw")
_DEVICE = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")


@dataclass(frozen=True)
class Listener:
    """A socket the lab opens before the packet arrives (``--listen udp 53``)."""

    proto: str   # "udp" or "tcp"
    port: int


@dataclass(frozen=True)
class FateRequest:
    """Everything that decides a packet's fate in the lab: the packet and the host's setup."""

    src: str
    dst: str
    proto: str | int = "icmp"
    dport: int | None = None
    ttl: int = 64
    dev: str = "mytun2"
    size: int | None = None
    df: bool = False
    sysctls: tuple[tuple[str, str], ...] = ()
    nft_ruleset: str | None = None
    nft_rules: tuple[str, ...] = ()
    nft_commands: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    routes_deleted: tuple[str, ...] = ()
    mtus: tuple[tuple[str, int], ...] = ()
    listeners: tuple[Listener, ...] = ()
    nft_file: str | None = field(default=None, compare=False)

    @property
    def family(self) -> int:
        """4 or 6: the IP version of the addresses."""
        return ipaddress.ip_address(self.src).version

    @property
    def has_firewall(self) -> bool:
        """True when the request loads nftables rules."""
        return bool(self.nft_ruleset or self.nft_rules or self.nft_commands)

    @property
    def settings(self) -> dict[str, str]:
        return dict(self.sysctls)

    def apply(self, changes: Sequence[Change]) -> FateRequest:
        """This request with ``changes`` made (a fix), in order."""
        return apply_all(self, list(changes))

    def to_args(self) -> list[str]:
        """The ``tunlab fate`` arguments for this request (the ruleset as ``--nft-file``)."""
        args = ["--src", self.src, "--dst", self.dst, "--proto", str(self.proto)]
        if self.dport is not None:
            args += ["--dport", str(self.dport)]
        if self.ttl != 64:
            args += ["--ttl", str(self.ttl)]
        if self.dev != "mytun2":
            args += ["--dev", self.dev]
        if self.size is not None:
            args += ["--size", str(self.size)]
        if self.df:
            args.append("--df")
        for key, value in self.sysctls:
            args += ["--set", f"{key}={value}"]
        for rule in self.nft_rules:
            args += ["--nft-rule", rule]
        for command in self.nft_commands:
            args += ["--nft-cmd", command]
        for route in self.routes:
            args += ["--route", route]
        for route in self.routes_deleted:
            args += ["--route-del", route]
        for dev, mtu in self.mtus:
            args += ["--mtu", f"{dev}={mtu}"]
        for listener in self.listeners:
            args += ["--listen", listener.proto, str(listener.port)]
        if self.nft_ruleset is not None:
            args += ["--nft-ruleset-text", self.nft_ruleset]
        return args


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise TunlabError(f"tunlab fate: {message}", "see `tunlab fate --help`")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The packet and lab options of ``tunlab fate`` (shared by the CLI and :func:`parse_args`)."""
    parser.add_argument("--src", required=True, help="source address (IPv4 or IPv6)")
    parser.add_argument("--dst", required=True, help="destination address (same family)")
    parser.add_argument("--proto", default="icmp", help="icmp, udp, tcp or a protocol number")
    parser.add_argument("--dport", type=int, help="destination port (udp and tcp only)")
    parser.add_argument("--ttl", type=int, default=64,
                        help="TTL / hop limit, 0-255 (default 64)")
    parser.add_argument("--dev", default="mytun2",
                        help="device the packet arrives on: mytun, mytun2 (default) or wan0")
    parser.add_argument("--size", type=int, help="total IP packet length in bytes")
    parser.add_argument("--df", action=argparse.BooleanOptionalAction, default=False,
                        help="set IPv4 don't-fragment (--no-df: clear it)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a sysctl, e.g. net.ipv4.ip_forward=1 (repeatable)")
    parser.add_argument("--nft-file", metavar="FILE", help="an nftables ruleset to load first")
    parser.add_argument("--nft-ruleset-text", help=argparse.SUPPRESS)
    parser.add_argument("--nft-rule", action="append", default=[], metavar="'HOOK RULE'",
                        help="one firewall rule in a chain at HOOK, e.g. "
                        "'forward ip saddr 200.1.2.3 drop' (repeatable)")
    parser.add_argument("--nft-cmd", action="append", default=[], metavar="CMD",
                        help="an nft command run after the ruleset, e.g. 'insert rule inet "
                        "hostfw forward position 2 iifname \"mytun2\" accept' (repeatable)")
    parser.add_argument("--route", action="append", default=[], metavar="SPEC",
                        help="an extra route as `ip route add` takes it, e.g. "
                        "'blackhole 10.0.0.0/24' or '200.1.2.3 dev mytun2' (repeatable)")
    parser.add_argument("--route-del", action="append", default=[], metavar="SPEC",
                        help="remove a route (after --route), as `ip route del` takes it")
    parser.add_argument("--mtu", action="append", default=[], metavar="DEV=N",
                        help="set a device's MTU, e.g. wan0=1280 (repeatable)")
    parser.add_argument("--listen", action="append", default=[], nargs=2,
                        metavar=("udp|tcp", "PORT"),
                        help="open a listening socket in the lab first (repeatable)")


def parse_args(argv: Sequence[str]) -> FateRequest:
    """The :class:`FateRequest` that ``tunlab fate ARGS`` describes; validated."""
    parser = _Parser(prog="tunlab fate", add_help=False)
    add_arguments(parser)
    return from_namespace(parser.parse_args(list(argv)))


def from_namespace(args: argparse.Namespace) -> FateRequest:
    """Validate parsed ``tunlab fate`` arguments into a request (nothing is built yet)."""
    from tunlab.kernel.sysctl import parse_assignments

    ruleset = args.nft_ruleset_text
    if args.nft_file:
        # read with the rights of the user who ran sudo, never as root (tunlab.fate.nftinput)
        ruleset = nftinput.read_ruleset(args.nft_file)
    proto: str | int = int(args.proto) if str(args.proto).isdigit() else str(args.proto).lower()
    return make_request(
        args.src, args.dst, proto=proto, dport=args.dport, ttl=args.ttl, dev=args.dev,
        size=args.size, df=args.df, sysctls=parse_assignments(args.set), nft_ruleset=ruleset,
        nft_rules=args.nft_rule, nft_commands=args.nft_cmd, routes=args.route,
        routes_deleted=args.route_del, mtus=[_mtu(item) for item in args.mtu],
        listeners=[(proto_, _port(proto_, port)) for proto_, port in args.listen],
        nft_file=args.nft_file)


def make_request(src: str, dst: str, *, proto: str | int = "icmp", dport: int | None = None,
                 ttl: int = 64, dev: str = "mytun2", size: int | None = None, df: bool = False,
                 sysctls: Mapping[str, object] | None = None, nft_ruleset: str | None = None,
                 nft_rules: Iterable[str] = (), nft_commands: Iterable[str] = (),
                 routes: Iterable[str] = (), routes_deleted: Iterable[str] = (),
                 mtus: Iterable[tuple[str, int]] = (), listeners: Iterable[tuple[str, int]] = (),
                 nft_file: str | None = None) -> FateRequest:
    """A validated :class:`FateRequest`: a clear :class:`~tunlab.errors.TunlabError` for
    anything the lab could not build or the packet could not be, before anything is built."""
    from tunlab.kernel.sysctl import parse_assignments
    from tunlab.packet.craft import protocol_number

    src, dst = _address(src, "source"), _address(dst, "destination")
    if ipaddress.ip_address(src).version != ipaddress.ip_address(dst).version:
        raise TunlabError(f"{src} and {dst} are not of the same IP version",
                          "give two IPv4 or two IPv6 addresses")
    proto = int(proto) if str(proto).isdigit() else str(proto).lower()
    number = protocol_number(proto)
    if dport is not None:
        if number not in (6, 17):
            raise TunlabError(f"--dport {dport} given for protocol {proto}, which has no "
                              "ports", "use --proto udp or --proto tcp with --dport")
        if not 0 <= dport <= 65535:
            raise TunlabError(f"port {dport} is outside 0-65535", "use 0-65535")
    if not 0 <= ttl <= 255:
        raise TunlabError(f"TTL {ttl} is outside 0-255", "use a TTL from 0 to 255")
    if dev not in ("mytun", "mytun2", "wan0"):
        raise TunlabError(f"{dev!r} is not a device of the seed topology",
                          "use one of mytun, mytun2, wan0")
    if size is not None and not 20 <= size <= 65535:
        raise TunlabError(f"--size {size} is outside 20-65535", "give a packet length")
    if df and ipaddress.ip_address(src).version == 6:
        raise TunlabError("--df is an IPv4 flag", "IPv6 routers never fragment; drop --df")
    settings = parse_assignments([f"{k}={v}" for k, v in (sysctls or {}).items()])
    # no include, no second command on one option (tunlab.fate.nftinput)
    if nft_ruleset is not None:
        nft_ruleset = nftinput.check_ruleset(nft_ruleset, "--nft-file")
    return FateRequest(
        src=src, dst=dst, proto=proto, dport=dport, ttl=ttl, dev=dev, size=size, df=df,
        sysctls=tuple(settings.items()), nft_ruleset=nft_ruleset,
        nft_rules=tuple(_nft_rule(nftinput.check_command(rule, "--nft-rule"))
                        for rule in nft_rules),
        nft_commands=tuple(_nft_command(nftinput.check_command(cmd, "--nft-cmd"))
                           for cmd in nft_commands),
        routes=tuple(_route(spec) for spec in routes),
        routes_deleted=tuple(_route(spec) for spec in routes_deleted),
        mtus=tuple(dict(_check_mtu(d, m) for d, m in mtus).items()),  # one MTU a device
        listeners=tuple(_listener(p, n) for p, n in listeners), nft_file=nft_file)


def _address(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise TunlabError(f"{what} {text!r} is not an IPv4 or IPv6 address",
                          "write it like 200.1.2.3 or 2001:db8::5") from None


def _nft_rule(rule: str) -> str:
    hook, _, body = rule.strip().partition(" ")
    if hook not in HOOKS or not body.strip():
        raise TunlabError(f"--nft-rule {rule!r} does not start with a hook",
                          f"write 'HOOK RULE' with HOOK one of {', '.join(HOOKS)}, e.g. "
                          "'forward ip saddr 200.1.2.3 drop'")
    return f"{hook} {body.strip()}"


def _nft_command(command: str) -> str:
    words = command.split()
    if not words or words[0] not in ("add", "insert", "replace", "delete", "flush", "create"):
        raise TunlabError(f"--nft-cmd {command!r} is not an nft rule command",
                          "write what follows `nft`, e.g. 'insert rule inet t forward "
                          "position 2 accept'")
    return " ".join(words)


def _route(spec: str) -> str:
    words = spec.split()
    if not words or any(w in (";", "&&", "|") for w in words):
        raise TunlabError(f"--route {spec!r} is not a route",
                          "write it as `ip route add` takes it, e.g. 'blackhole 10.0.0.0/24'")
    return " ".join(words)


def _mtu(item: str) -> tuple[str, int]:
    dev, sep, value = item.partition("=")
    if not sep or not value.isdigit():
        raise TunlabError(f"--mtu {item!r} is not DEV=N", "write e.g. wan0=1280")
    return dev, int(value)


def _check_mtu(dev: str, mtu: int) -> tuple[str, int]:
    if not _DEVICE.match(dev):
        raise TunlabError(f"--mtu {dev}={mtu}: {dev!r} is not a device name",
                          "write e.g. wan0=1280")
    if not 68 <= int(mtu) <= 65535:
        raise TunlabError(f"MTU {mtu} is outside 68-65535", "e.g. wan0=1280")
    return dev, int(mtu)


def _port(proto: str, port: str) -> int:
    if not str(port).isdigit():
        raise TunlabError(f"--listen {proto} {port} is not a socket",
                          "write e.g. --listen udp 53 or --listen tcp 80")
    return int(port)


def _listener(proto: str, port: int) -> Listener:
    if proto not in ("udp", "tcp") or not 0 < int(port) <= 65535:
        raise TunlabError(f"--listen {proto} {port} is not a socket",
                          "write e.g. --listen udp 53 or --listen tcp 80")
    return Listener(proto, int(port))


def request(src: str, dst: str, proto: str | int = "icmp", dport: int | None = None,
            ttl: int = 64, dev: str = "mytun2", sysctls: Mapping[str, object] | None = None,
            nft_ruleset: str | None = None, *, nft_rules: Iterable[str] = (),
            routes: Iterable[str] = (), mtus: Mapping[str, int] | None = None,
            listen: Iterable[tuple[str, int]] = (), size: int | None = None,
            df: bool = False) -> FateRequest:
    """A validated request from keyword arguments (the Python API's spelling)."""
    return make_request(src, dst, proto=proto, dport=dport, ttl=ttl, dev=dev, size=size, df=df,
                        sysctls=sysctls, nft_ruleset=nft_ruleset, nft_rules=nft_rules,
                        routes=routes, mtus=list((mtus or {}).items()), listeners=listen)
