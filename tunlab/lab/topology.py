"""Lab topologies in private namespaces: the seed's one host, and two hosts joined by veth.

The set-up runs the very ``ip`` commands a person would type (and keeps them in ``commands``
so a notebook can show them), rather than pyroute2 calls, because seeing those commands is
part of the lesson. Everything is inside namespaces this process created; the caller's own
namespace is never touched. Each lab is a context manager, and a new lab first removes what
killed runs left behind.
"""

from __future__ import annotations

import fcntl
import shlex
import socket
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tunlab import resources
from tunlab.errors import TunlabError
from tunlab.kernel import netns
from tunlab.kernel.host import require_privileges
from tunlab.kernel.netns import Namespace
from tunlab.kernel.tun import TunDevice

__all__ = ["cleanup_leftovers", "MAX_TUN_MTU", "READY_TIMEOUT", "SCRIPT", "script_path",
           "SEED_DEVICES", "SEED_DEVICES_V6", "SeedLab", "TUNNEL_ADDRESSES", "TUNNEL_PORT",
           "TwoHostLab", "UNDERLAY", "UPLINK_ADDRESS_V6"]

if TYPE_CHECKING:  # the tunnel is imported when a lab starts one (fate labs never do)
    from tunlab.tunnel import TunnelClient, TunnelServer

SCRIPT = resources.device_script()
SEED_DEVICES = {"mytun": "10.0.0.1/24", "mytun2": "10.0.2.1/24"}
UPLINK, UPLINK_ADDRESS = "wan0", "192.0.2.1/24"  # TEST-NET-1, only inside our namespace
SEED_DEVICES_V6 = {"mytun": "fd00::1/64", "mytun2": "fd00:2::1/64"}  # unique local (fd00::/8)
UPLINK_ADDRESS_V6 = "2001:db8::1/64"  # the IPv6 documentation prefix, only inside our namespace
MAX_TUN_MTU = 65535
READY_TIMEOUT = 1.0  # seconds to wait for an attached device to be able to send
SIOCGIFFLAGS, IFF_RUNNING = 0x8913, 0x40
UNDERLAY = ("198.18.0.1", "198.18.0.2")  # RFC 2544 benchmarking range, only inside our netns
TUNNEL_ADDRESSES = ("10.9.0.1", "10.9.0.2")
TUNNEL_PORT = 5555


def cleanup_leftovers() -> list[str]:
    """Remove namespaces and trace instances of tunlab runs that were killed."""
    removed = netns.cleanup_stale()
    try:
        from tunlab.kernel.tracefs import cleanup_stale_instances
    except ImportError:
        return removed
    try:
        removed += list(cleanup_stale_instances() or [])
    except Exception:  # noqa: BLE001 - tracefs may be absent; namespaces matter most
        pass
    return removed


def script_path() -> Path:
    """The seed's device script (scripts/ in the repository, package data when installed)."""
    if not SCRIPT.exists():
        raise FileNotFoundError(f"{SCRIPT} is missing from the installation")
    return SCRIPT


class _Lab:
    def __init__(self) -> None:
        require_privileges("building a lab")
        self.namespaces: list[Namespace] = []
        self.commands: list[str] = []
        self._devices: list[TunDevice] = []

    def _ns(self, label: str) -> Namespace:
        ns = netns.create(label)
        self.namespaces.append(ns)
        return ns

    def _ip(self, ns: Namespace, *args: str) -> str:
        self.commands.append(f"[{ns.name}] ip {shlex.join(args)}")
        return ns.ip(*args)

    def _ip_batch(self, ns: Namespace, commands: list[tuple[str, ...]]) -> None:
        """Several ``ip`` commands in one ``ip -batch`` run (one process instead of many);
        each is shown in ``commands`` as a person would type it."""
        if not commands:
            return
        by_family: dict[str, list[str]] = {}
        for args in commands:
            self.commands.append(f"[{ns.name}] ip {shlex.join(args)}")
            # -batch lines take no family option: IPv6 lines go to a second `ip -6 -batch`.
            family, rest = (args[0], args[1:]) if args[0] in ("-4", "-6") else ("", args)
            by_family.setdefault(family, []).append(shlex.join(rest))
        for family, lines in by_family.items():
            netns._run(["ip", "-n", ns.name, *([family] if family else []), "-batch", "-"],
                       input="\n".join(lines).encode() + b"\n")

    def open_device(self, ns: Namespace, name: str, *, vnet_hdr: bool = False) -> TunDevice:
        """Attach to TUN device ``name`` inside ``ns``; closed with the lab.

        ``vnet_hdr=True`` opens it for the tunnel's fast path (see :mod:`tunlab.tunnel`).
        """
        device = ns.run(lambda: TunDevice.open(name, vnet_hdr=vnet_hdr))
        self._devices.append(device)
        return device

    def close_devices(self) -> None:
        """Close the devices this lab opened (they stay in their namespaces, as found)."""
        for device in self._devices:
            device.close()
        self._devices.clear()

    def close(self) -> None:
        """Close devices this lab opened and remove its namespaces (with all devices inside)."""
        self.close_devices()
        for ns in reversed(self.namespaces):
            ns.delete()
        self.namespaces.clear()

    def __enter__(self):  # noqa: ANN204 - returns the concrete lab type
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wait_running(name: str, timeout: float) -> bool:
    """Wait (bounded) until device ``name`` of the calling thread's namespace is RUNNING."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        while True:
            request = struct.pack("16sH22x", name.encode(), 0)
            flags = struct.unpack_from("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
            if flags & IFF_RUNNING or time.monotonic() > deadline:
                return bool(flags & IFF_RUNNING)
            time.sleep(0.002)


class SeedLab(_Lab):
    """The seed's single host: mytun 10.0.0.1/24 and mytun2 10.0.2.1/24, up, in one namespace.

    With ``uplink=True`` the host also gets what the seed's host had besides the two TUN
    devices: a way out with a default route. Here it is a third TUN device, ``wan0``
    192.0.2.1/24 with ``default dev wan0``, so the lab can read what the kernel sends to the
    wider world (replies to 200.1.2.3, ICMP errors) and strict and loose reverse-path
    filtering differ as they do on a real host.

    ``ipv6`` (default: the same as ``uplink``) adds IPv6: mytun fd00::1/64, mytun2
    fd00:2::1/64, wan0 2001:db8::1/64 and ``default dev wan0``. The addresses are added with
    ``nodad`` so they are usable at once (TUN devices are NOARP, which skips duplicate address
    detection anyway; ``nodad`` says so in the commands a learner reads).
    """

    def __init__(self, label: str = "seed", uplink: bool = False,
                 ipv6: bool | None = None) -> None:
        super().__init__()
        cleanup_leftovers()
        self.ipv6 = uplink if ipv6 is None else ipv6
        self.ns = self._ns(label)
        try:
            self.commands.append(f"[{self.ns.name}] bash scripts/{SCRIPT.name}")
            self.script_output = self.ns.exec(["bash", str(script_path())]).stdout
            batch: list[tuple[str, ...]] = []
            if uplink:
                batch += [("tuntap", "add", "dev", UPLINK, "mode", "tun"),
                          ("addr", "add", UPLINK_ADDRESS, "dev", UPLINK),
                          ("link", "set", UPLINK, "up"),
                          ("route", "add", "default", "dev", UPLINK)]
            if self.ipv6:
                addresses = {**SEED_DEVICES_V6, **({UPLINK: UPLINK_ADDRESS_V6} if uplink else {})}
                batch += [("-6", "addr", "add", address, "dev", dev, "nodad")
                          for dev, address in addresses.items()]
                if uplink:
                    batch.append(("-6", "route", "add", "default", "dev", UPLINK))
            self._ip_batch(self.ns, batch)
        except BaseException:
            self.close()
            raise

    def device(self, name: str) -> TunDevice:
        """Attach to mytun, mytun2 (or wan0) inside the lab; returns once it can send.

        Attaching gives the device its carrier, but the kernel activates the device's queue
        a moment later (the link-watch work); a packet sent out of it before that is dropped
        (tx_dropped), as was a reply to a packet written at once. So this waits (at most
        ``READY_TIMEOUT``) until the device is RUNNING.
        """
        device = self.open_device(self.ns, name)
        self.ns.run(_wait_running, name, READY_TIMEOUT)
        return device

    def _lab_device(self, dev: str) -> str:
        links = {line.split()[0].split("@")[0] for line in
                 self.ns.ip("-br", "link").splitlines() if line.strip()}
        if dev not in links:
            raise TunlabError(f"the lab has no device {dev!r}",
                              f"use one of {', '.join(sorted(links - {'lo'}))}")
        return dev

    def set_mtu(self, dev: str, mtu: int) -> None:
        """``ip link set DEV mtu N`` inside the lab.

        Note for IPv6: a device whose MTU drops below 1280 (IPv6's minimum) loses its IPv6
        addresses and routes; the kernel disables IPv6 on it.
        """
        self._lab_device(dev)
        if isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= MAX_TUN_MTU:
            raise TunlabError(f"MTU {mtu!r} is outside 68-{MAX_TUN_MTU}",
                              f"use an MTU from 68 (IPv4's minimum; 1280 for IPv6) to "
                              f"{MAX_TUN_MTU}")
        self._ip_checked("link", "set", dev, "mtu", str(mtu))

    def add_route(self, spec: str) -> None:
        """``ip route add SPEC`` inside the lab, e.g. ``"blackhole 203.0.113.0/24"``,
        ``"unreachable 2001:db8:99::/48"``, ``"prohibit 10.0.9.0/24"`` or
        ``"198.51.100.0/24 dev mytun"``. ``ip`` takes the family from the addresses; start
        SPEC with ``-6`` for IPv6 routes without an address (``-6 blackhole default``).
        A refused route raises :class:`TunlabError` with ip's message and changes nothing.
        """
        try:
            words = shlex.split(spec)
        except ValueError as exc:
            raise TunlabError(f"route {spec!r} cannot be read: {exc}",
                              "write it as `ip route add` takes it, e.g. "
                              "\"blackhole 203.0.113.0/24\"") from exc
        family = []
        if words and words[0] in ("-4", "-6"):
            family, words = [words[0]], words[1:]
        if not words:
            raise TunlabError("an empty route", "write it as `ip route add` takes it, e.g. "
                              "\"unreachable 2001:db8:99::/48\"")
        self._ip_checked(*family, "route", "add", *words)

    def _ip_checked(self, *args: str) -> str:
        """``ip`` inside the lab; a refusal becomes a TunlabError quoting ip's message."""
        try:
            return self._ip(self.ns, *args)
        except TunlabError as exc:
            self.commands.pop()  # it changed nothing: don't show it as part of the set-up
            raise TunlabError(exc.message, "check the spelling against `man ip-route` and "
                              "`man ip-link`") from None


class TwoHostLab(_Lab):
    """Two hosts (namespaces ``a`` and ``b``) joined by a veth cable, a TUN device ``tun0`` in each.

    Underlay: a 198.18.0.1/24 <-> b 198.18.0.2/24 (MTU ``mtu``). Tunnel addresses: a 10.9.0.1/24,
    b 10.9.0.2/24, so that once a tunnel runs, ``ping 10.9.0.2`` in ``a`` crosses it.
    """

    def __init__(self, mtu: int = 1500, tun_mtu: int = 1400, label: str = "2host") -> None:
        super().__init__()
        cleanup_leftovers()
        try:
            self.a = self._ns(f"{label}a")
            self.b = self._ns(f"{label}b")
            self._ip(self.a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0",
                     "netns", self.b.name)
            for ns, addr in ((self.a, UNDERLAY[0]), (self.b, UNDERLAY[1])):
                self._ip(ns, "link", "set", "veth0", "mtu", str(mtu), "up")
                self._ip(ns, "addr", "add", f"{addr}/24", "dev", "veth0")
            for ns, addr in ((self.a, TUNNEL_ADDRESSES[0]), (self.b, TUNNEL_ADDRESSES[1])):
                self._ip(ns, "tuntap", "add", "dev", "tun0", "mode", "tun")
                self._ip(ns, "link", "set", "tun0", "mtu", str(tun_mtu), "up")
                self._ip(ns, "addr", "add", f"{addr}/24", "dev", "tun0")
        except BaseException:
            self.close()
            raise
        self.server: TunnelServer | None = None
        self.client: TunnelClient | None = None

    def start_tunnel(self, port: int = TUNNEL_PORT, record_packets: bool = False,
                     psk: bytes | None = None, fast: bool | tuple[bool, bool] = False,
                     ) -> tuple[TunnelServer, TunnelClient]:
        """Server in ``b`` on 198.18.0.2:port, client in ``a``; returns once both are connected
        (TunlabError, both stopped, when they do not connect within 5 s).

        With ``psk`` both ends authenticate each other and seal every frame. ``fast`` opens
        the devices for the fast path: one flag for both, or ``(server, client)``.
        """
        from tunlab.tunnel import TunnelClient, TunnelServer

        server_fast, client_fast = fast if isinstance(fast, tuple) else (fast, fast)
        server = TunnelServer(self.open_device(self.b, "tun0", vnet_hdr=server_fast),
                              (UNDERLAY[1], port),
                              namespace=self.b, record_packets=record_packets, psk=psk)
        client = TunnelClient(self.open_device(self.a, "tun0", vnet_hdr=client_fast),
                              (UNDERLAY[1], port),
                              namespace=self.a, record_packets=record_packets, psk=psk)
        self.server = server.start()
        try:
            self.client = client.start(timeout=5)  # stops itself and raises if it cannot
        except TunlabError:
            self.stop_tunnel()
            raise
        # The client is connected; the server takes it over a moment later, in its own thread.
        if not server.wait_connected(timeout=5):
            self.stop_tunnel()
            raise TunlabError("the tunnel server did not take the connected client within 5 s",
                              "see the server's events() for why it refused the client")
        return server, client

    def stop_tunnel(self) -> None:
        """Stop both ends, even when one re-raises a connection's failure (then raised)."""
        failure: BaseException | None = None
        for endpoint in (self.client, self.server):
            if endpoint is not None:
                try:
                    endpoint.stop()
                except Exception as exc:  # noqa: BLE001 - the other end must stop too
                    failure = failure or exc
        self.client = self.server = None
        if failure is not None:
            raise failure

    def close(self) -> None:
        self.stop_tunnel()
        super().close()
