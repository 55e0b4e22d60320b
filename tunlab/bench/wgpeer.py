"""wireguard-go peers for the benchmark: one user-space WireGuard end per namespace.

Debian ships WireGuard's user-space implementation as ``wireguard-go``. It creates a TUN
device in the namespace it runs in and is configured over a UAPI socket,
``/var/run/wireguard/<ifname>.sock``. That path is in the file system, which every network
namespace shares: two ends called ``wg0`` in two namespaces would fight over one socket. So each
end gets an interface name no other run can have (this process's pid and a counter), and
:meth:`WireGuardPair.close` stops both processes and removes their sockets.

The configuration speaks the UAPI text protocol (``set=1``, ``key=value`` lines, an empty line;
the answer is ``errno=0``) straight to the socket, so ``wg`` from wireguard-tools is not needed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from tunlab.errors import EnvironmentProblem, TunlabError
from tunlab.kernel.netns import Namespace
from tunlab.runtime import stop_process

__all__ = ["IFNAME_MAX", "KeyPair", "niced", "SOCKET_DIR", "socket_path", "uapi_set",
           "unique_ifname", "WG_MTU", "WireGuardEnd", "WireGuardPair"]

SOCKET_DIR = Path("/var/run/wireguard")
WG_MTU = 1420          # wireguard-go's default: 1500 minus the 80 bytes of an IPv6 underlay
IFNAME_MAX = 15
_counter = itertools.count(1)


@dataclass(frozen=True)
class KeyPair:
    """A Curve25519 key pair as the 32 raw bytes each."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        """Fresh random keys (what ``wg genkey | wg pubkey`` makes)."""
        key = X25519PrivateKey.generate()
        private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return cls(private, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def unique_ifname(side: str) -> str:
    """An interface name for one end that no other live process can be using (<= 15 chars)."""
    name = f"tlwg{os.getpid() % 10**6}x{next(_counter)}{side}"
    if len(name) > IFNAME_MAX:
        raise ValueError(f"interface name {name!r} is longer than {IFNAME_MAX} characters")
    return name


def socket_path(ifname: str) -> Path:
    """Where wireguard-go puts the UAPI socket of ``ifname``."""
    return SOCKET_DIR / f"{ifname}.sock"


def uapi_set(ifname: str, settings: list[tuple[str, str]], timeout: float = 5.0) -> None:
    """Send one ``set=1`` request to the UAPI socket of ``ifname``; raise unless ``errno=0``."""
    request = "set=1\n" + "".join(f"{key}={value}\n" for key, value in settings) + "\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path(ifname)))
        sock.sendall(request.encode())
        answer = b""
        while not answer.endswith(b"\n\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    if answer.strip() != b"errno=0":
        raise TunlabError(f"wireguard-go {ifname} refused its configuration: "
                          f"{answer.decode(errors='replace').strip()!r}")


def niced(nice: int) -> list[str]:
    """The ``nice -n N`` prefix that starts a command at niceness ``nice`` (nothing for 0).

    nice(1) execs the command, so the process keeps its pid (its CPU time is read from /proc).
    """
    return ["nice", "-n", str(nice)] if nice else []


@dataclass
class WireGuardEnd:
    """One running wireguard-go: its namespace, interface, tunnel address and process."""

    ns: Namespace
    ifname: str
    address: str
    port: int
    keys: KeyPair
    process: subprocess.Popen[Any] | None = None


@dataclass
class WireGuardPair:
    """Two wireguard-go ends over an underlay: ``a`` at ``underlay[0]``, ``b`` at ``underlay[1]``.

    Tunnel addresses ``<subnet>.1`` (a) and ``<subnet>.2`` (b), /24, MTU :data:`WG_MTU`. Use as a
    context manager or call :meth:`close`; a failed :meth:`start` cleans up after itself.
    """

    a: Namespace
    b: Namespace
    underlay: tuple[str, str]
    subnet: str = "10.7.0"
    port: int = 51820
    log: IO[str] | None = None
    nice: int = 0  # niceness of both wireguard-go processes (the bench runs every daemon so)
    ends: list[WireGuardEnd] = field(default_factory=list)

    def start(self, timeout: float = 10.0) -> WireGuardPair:
        """Start both ends, configure each with the other as its only peer, bring them up."""
        if shutil.which("wireguard-go") is None:
            raise EnvironmentProblem("wireguard-go is not installed",
                                     "apt-get install wireguard-go")
        try:
            for index, (ns, side) in enumerate(((self.a, "a"), (self.b, "b"))):
                end = WireGuardEnd(ns, unique_ifname(side), f"{self.subnet}.{index + 1}",
                                   self.port + index, KeyPair.generate())
                self.ends.append(end)
                # -f: stay in the foreground, so the pid is wireguard-go's own (its CPU is
                # read from /proc) and SIGTERM reaches it.
                end.process = ns.popen([*niced(self.nice), "wireguard-go", "-f", end.ifname],
                                       env=dict(os.environ, WG_PROCESS_FOREGROUND="1"),
                                       stdout=self.log or subprocess.DEVNULL,
                                       stderr=subprocess.STDOUT if self.log else
                                       subprocess.DEVNULL)
            for end in self.ends:
                self._wait_socket(end, timeout)
            for end, peer, peer_host in ((self.ends[0], self.ends[1], self.underlay[1]),
                                         (self.ends[1], self.ends[0], self.underlay[0])):
                uapi_set(end.ifname, [
                    ("private_key", end.keys.private.hex()), ("listen_port", str(end.port)),
                    ("replace_peers", "true"), ("public_key", peer.keys.public.hex()),
                    ("endpoint", f"{peer_host}:{peer.port}"), ("replace_allowed_ips", "true"),
                    ("allowed_ip", f"{peer.address}/32")])
                end.ns.ip("addr", "add", f"{end.address}/24", "dev", end.ifname)
                end.ns.ip("link", "set", end.ifname, "mtu", str(WG_MTU), "up")
        except BaseException:
            self.close()
            raise
        return self

    @staticmethod
    def _wait_socket(end: WireGuardEnd, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        path = socket_path(end.ifname)
        while time.monotonic() < deadline:
            if end.process is not None and end.process.poll() is not None:
                raise TunlabError(f"wireguard-go {end.ifname} exited with code "
                                  f"{end.process.returncode}", "see its log")
            if path.exists():
                return
            time.sleep(0.05)
        raise TunlabError(f"wireguard-go {end.ifname}: no UAPI socket {path} after "
                          f"{timeout:g} s")

    @property
    def processes(self) -> list[subprocess.Popen[Any]]:
        """The wireguard-go processes started so far."""
        return [end.process for end in self.ends if end.process is not None]

    @property
    def address(self) -> str:
        """The tunnel address of end ``b``: what ``a`` pings and sends to."""
        return f"{self.subnet}.2"

    def close(self) -> None:
        """Stop both processes (SIGTERM, then SIGKILL) and remove their sockets. Idempotent."""
        for end in self.ends:
            if end.process is not None:
                stop_process(end.process)
            # Only the sockets of our own, uniquely named interfaces: never anyone else's.
            with contextlib.suppress(FileNotFoundError):
                socket_path(end.ifname).unlink()
        self.ends.clear()

    def __enter__(self) -> WireGuardPair:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
