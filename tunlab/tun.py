"""TUN devices through /dev/net/tun: create or attach, read and write whole IP packets.

No sockets for traffic here: a TUN device is a file descriptor. Each read() returns one packet
the kernel routed *into* the device; each write() hands one packet to the kernel as if it had
arrived *from* the device. The open happens in the calling thread's network namespace.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct

from .errors import DeviceMissingError, EnvironmentProblem, InvalidPacketError, TunlabError
from .ippacket import ip_packet_problem

TUN_PATH = "/dev/net/tun"

# ioctl numbers from <linux/if_tun.h> (x86_64 and arm64 agree).
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNGETIFF = 0x800454D2
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
SIOCGIFMTU = 0x8921
SIOCSIFMTU = 0x8922

IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000

TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04

IFNAMSIZ = 16
MAX_PACKET = 65535
CREATE_SCRIPT = "scripts/create_named_tuntap_devices.sh"


def _ifreq(name: str, flags: int = 0) -> bytes:
    return struct.pack("16sH22x", name.encode(), flags)


def device_exists(name: str) -> bool:
    """True when a network device ``name`` exists in the calling thread's namespace."""
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


def check_device_name(name: str) -> None:
    """Raise :class:`TunlabError` unless ``name`` is a legal Linux interface name."""
    if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or any(c.isspace() for c in name):
        raise TunlabError(f"{name!r} is not a valid interface name",
                          "use 1 to 15 characters without '/' or spaces, for example mytun")


class TunDevice:
    """An open TUN device (IFF_TUN | IFF_NO_PI): one packet per read, one packet per write."""

    def __init__(self, fd: int, name: str, flags: int) -> None:
        self.fd = fd
        self.name = name
        self.flags = flags
        # A control socket opened now lives in the device's namespace, so MTU queries work
        # from any thread later.
        self._ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    @classmethod
    def open(cls, name: str, *, create: bool = False, vnet_hdr: bool = False,
             multi_queue: bool = False) -> TunDevice:
        """Attach to TUN device ``name`` in the calling thread's namespace.

        With ``create=False`` (the default) the device must already exist: made by
        ``scripts/create_named_tuntap_devices.sh`` or ``ip tuntap add NAME mode tun``.
        With ``create=True`` a missing device is created and disappears when closed.
        """
        check_device_name(name)
        if not create and not device_exists(name):
            raise DeviceMissingError(
                f"TUN device {name} does not exist in this network namespace",
                f"create it with `sudo bash {CREATE_SCRIPT}` (mytun, mytun2) "
                f"or `sudo ip tuntap add {name} mode tun`")
        try:
            fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise EnvironmentProblem(f"{TUN_PATH} is missing",
                                     "load the tun module: `sudo modprobe tun`") from exc
        except PermissionError as exc:
            raise EnvironmentProblem(f"no permission to open {TUN_PATH}",
                                     "run as root or with CAP_NET_ADMIN") from exc
        flags = IFF_TUN | IFF_NO_PI
        if vnet_hdr:
            flags |= IFF_VNET_HDR
        if multi_queue:
            flags |= IFF_MULTI_QUEUE
        try:
            fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, flags))
        except OSError as exc:
            os.close(fd)
            if exc.errno == errno.EPERM:
                raise EnvironmentProblem(f"not allowed to attach to {name}",
                                         "run as root or with CAP_NET_ADMIN") from exc
            if exc.errno == errno.EBUSY:
                raise TunlabError(f"{name} is already attached by another program",
                                  "stop the other vpn client/server using it") from exc
            if exc.errno == errno.EINVAL:
                raise TunlabError(f"{name} exists but is not a TUN device with these flags",
                                  f"recreate it: `ip link del {name}; "
                                  f"ip tuntap add {name} mode tun`") from exc
            raise
        return cls(fd, name, flags)

    # -- packets ------------------------------------------------------------------------------
    def read(self, size: int = MAX_PACKET + 64) -> bytes:
        """Block until the kernel routes a packet into the device; return it whole."""
        return os.read(self.fd, size)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Read one packet into ``buffer``; return its length."""
        return os.readv(self.fd, [buffer])

    def write(self, packet: bytes | bytearray | memoryview) -> int:
        """Hand one IP packet to the kernel as if it arrived on this device.

        Anything that is not a well-formed IPv4/IPv6 packet raises :class:`InvalidPacketError`
        and is not written.
        """
        if not self.flags & IFF_VNET_HDR:
            problem = ip_packet_problem(packet)
            if problem:
                raise InvalidPacketError(f"refusing to write to {self.name}: {problem}")
        return os.write(self.fd, packet)

    def fileno(self) -> int:
        return self.fd

    def set_blocking(self, blocking: bool) -> None:
        os.set_blocking(self.fd, blocking)

    # -- device settings ---------------------------------------------------------------------
    @property
    def mtu(self) -> int:
        """The device's MTU in bytes."""
        result = fcntl.ioctl(self._ctl, SIOCGIFMTU, struct.pack("16si20x", self.name.encode(), 0))
        return struct.unpack("16si20x", result)[1]

    @mtu.setter
    def mtu(self, value: int) -> None:
        fcntl.ioctl(self._ctl, SIOCSIFMTU, struct.pack("16si20x", self.name.encode(), value))

    def set_offload(self, flags: int) -> None:
        """TUNSETOFFLOAD: tell the kernel which offloads (TUN_F_*) this reader can take."""
        fcntl.ioctl(self.fd, TUNSETOFFLOAD, flags)

    def set_vnet_header_size(self, size: int) -> None:
        """TUNSETVNETHDRSZ: size of the virtio-net header in front of each packet."""
        fcntl.ioctl(self.fd, TUNSETVNETHDRSZ, struct.pack("i", size))

    def set_persistent(self, persistent: bool) -> None:
        """TUNSETPERSIST: keep the device after the last descriptor closes (like `ip tuntap`)."""
        fcntl.ioctl(self.fd, TUNSETPERSIST, int(persistent))

    def close(self) -> None:
        """Detach. A persistent device stays as it was; a device created by open() vanishes."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self._ctl.close()

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TunDevice({self.name!r}, fd={self.fd})"
