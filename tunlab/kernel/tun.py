"""TUN devices through /dev/net/tun: create or attach, read and write whole IP packets.

No sockets for traffic here: a TUN device is a file descriptor. Each read() returns one packet
the kernel routed *into* the device; each write() hands one packet to the kernel as if it had
arrived *from* the device. The open happens in the calling thread's network namespace.

Opened with ``vnet_hdr=True`` (``IFF_VNET_HDR``), every packet in both directions carries a 10-byte
virtio-net header in front (see :mod:`tunlab.packet.vnet`), and :meth:`TunDevice.set_offload` may
then let the kernel hand over unchecksummed 64 KiB TCP super-packets instead of MTU-sized ones: the
tunnel's fast path. Those settings belong to the *device*, not to the file descriptor, and outlive
it; so :meth:`TunDevice.close` puts back what it changed (offloads off, the ``vnet_hdr`` flag as it
was), and every plain open switches offloads off, because a reader without the header would get
packets whose checksums the kernel left for it to finish. A fast open of a persistent device is
written down (:mod:`tunlab.kernel.ownership`), so that after a SIGKILL ``tunlab cleanup`` can put
the device back for readers that are not tunlab's.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Callable

from tunlab.errors import DeviceMissingError, EnvironmentProblem, InvalidPacketError, TunlabError
from tunlab.kernel import ownership
from tunlab.kernel.ownership import CleanupAction, Kind, Outcome, OwnerState, Record
from tunlab.packet.validate import ip_packet_problem
from tunlab.packet.vnet import VNET_HDR_SIZE, ZERO_HEADER, OffloadError, needs_work, resolve

__all__ = ["attach_fd", "check_device_name", "CLONE_NEWNET", "CREATE_SCRIPT", "device_exists",
           "ETHTOOL_GTSO", "ETHTOOL_GTXCSUM", "IFF_MULTI_QUEUE", "IFF_NO_PI", "IFF_PERSIST",
           "IFF_TUN", "IFF_VNET_HDR", "IFNAMSIZ", "MAX_PACKET", "OFFLOAD_FAST",
           "restore_stale_devices", "SIOCETHTOOL", "SIOCGIFMTU", "SIOCSIFMTU", "TUN_F_CSUM",
           "TUN_F_TSO4", "TUN_F_TSO6", "TUN_PATH", "TunDevice", "TUNGETIFF", "TUNSETIFF",
           "TUNSETOFFLOAD", "TUNSETPERSIST", "TUNSETVNETHDRSZ"]

TUN_PATH = "/dev/net/tun"

# ioctl numbers from <linux/if_tun.h> (x86_64 and arm64 agree).
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNGETIFF = 0x800454D2
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
SIOCGIFMTU = 0x8921
SIOCSIFMTU = 0x8922
SIOCETHTOOL = 0x8946
ETHTOOL_GTXCSUM = 0x16
ETHTOOL_GTSO = 0x1E
CLONE_NEWNET = 0x40000000

IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
IFF_PERSIST = 0x0800

TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
# What the fast path asks for: unchecksummed TCP super-packets, IPv4 and IPv6.
OFFLOAD_FAST = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6

IFNAMSIZ = 16
MAX_PACKET = 65535
CREATE_SCRIPT = "scripts/create_named_tuntap_devices.sh"


def _ifreq(name: str, flags: int = 0) -> bytes:
    return struct.pack("16sH22x", name.encode(), flags)


def attach_fd(name: str, flags: int) -> int:
    """Attach a new file descriptor to TUN device ``name`` (the calling thread's namespace) with
    ``flags`` (``IFF_TUN | IFF_NO_PI``...): ``open("/dev/net/tun")`` and the ``TUNSETIFF`` ioctl,
    the two system calls every TUN program makes. Returns the fd; the caller closes it.

    A missing ``name`` is created by the kernel (and goes when the fd closes): check
    :func:`device_exists` first where that is not wanted. Raises
    :class:`~tunlab.errors.TunlabError` saying how to fix what went wrong.
    """
    try:
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise EnvironmentProblem(f"{TUN_PATH} is missing",
                                 "load the tun module: `sudo modprobe tun`") from exc
    except PermissionError as exc:
        raise EnvironmentProblem(f"no permission to open {TUN_PATH}",
                                 "run as root or with CAP_NET_ADMIN") from exc
    try:
        fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, flags))
    except OSError as exc:
        os.close(fd)
        if exc.errno == errno.EPERM:
            raise EnvironmentProblem(f"not allowed to attach to {name}",
                                     "run as root or with CAP_NET_ADMIN") from exc
        if exc.errno == errno.EBUSY:
            raise TunlabError(f"{name} is already attached by another program",
                              "stop the other program using it (a vpn client or server, a "
                              "lesson's reader or tunnel)") from exc
        if exc.errno == errno.EINVAL:
            raise TunlabError(f"{name} exists but is not a TUN device with these flags",
                              f"recreate it: `ip link del {name}; "
                              f"ip tuntap add {name} mode tun`") from exc
        raise
    return fd


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


def _tun_link_info(name: str) -> dict[str, object] | None:
    """The tun driver's own view of ``name`` (``ip -d link``: pi, vnet_hdr, persist), or None.

    Runs ``ip`` as a child of the calling thread, so it sees the thread's namespace.
    """
    try:
        out = subprocess.run(["ip", "-j", "-d", "link", "show", "dev", name],
                             capture_output=True, text=True, timeout=5).stdout
        info: dict[str, object] = json.loads(out)[0]["linkinfo"]["info_data"]
        return info
    except (OSError, subprocess.SubprocessError, ValueError, LookupError, TypeError):
        return None


def _in_namespace(ns_fd: int, fn: Callable[[], None]) -> None:
    """Run ``fn`` on a short-lived thread that first enters the network namespace ``ns_fd``."""
    errors: list[BaseException] = []

    def body() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(ns_fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns failed")
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=body, name="tunlab-tun-restore", daemon=True)
    thread.start()
    thread.join(5)
    if errors:
        raise errors[0]


def _namespace_id(path: str) -> str:
    info = os.stat(path)
    return f"{info.st_dev}-{info.st_ino}"


def _record_name(device: str) -> str:
    """Ownership-record name of ``device`` in the calling thread's namespace."""
    return f"{_namespace_id('/proc/thread-self/ns/net')}:{device}"


class TunDevice:
    """An open TUN device (IFF_TUN | IFF_NO_PI): one packet per read, one packet per write.

    With ``vnet_hdr`` each read starts with a 10-byte virtio-net header and each write must
    start with one (:meth:`write_packet` adds it for you).
    """

    def __init__(self, fd: int, name: str, flags: int) -> None:
        self.fd = fd
        self.name = name
        self.flags = flags
        self.offload = 0
        # A control socket opened now lives in the device's namespace, so MTU queries work
        # from any thread later.
        self._ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._ns_fd = -1          # kept to put the vnet_hdr flag back from any thread
        self._restore_flags: int | None = None
        self._record: str | None = None  # ownership record of a fast open (persistent device)

    @classmethod
    def open(cls, name: str, *, create: bool = False, vnet_hdr: bool = False,
             multi_queue: bool = False) -> TunDevice:
        """Attach to TUN device ``name`` in the calling thread's namespace.

        With ``create=False`` (the default) the device must already exist: made by
        ``scripts/create_named_tuntap_devices.sh`` or ``ip tuntap add NAME mode tun``.
        With ``create=True`` a missing device is created and disappears when closed.
        ``vnet_hdr=True`` opens it for the fast path: virtio-net header size 10, offloads off
        until :meth:`set_offload` (the tunnel turns them on when its peer can take them).
        """
        check_device_name(name)
        existed = device_exists(name)
        if not create and not existed:
            raise DeviceMissingError(
                f"TUN device {name} does not exist in this network namespace",
                f"create it with `sudo bash {CREATE_SCRIPT}` (mytun, mytun2) "
                f"or `sudo ip tuntap add {name} mode tun`")
        prior_vnet = False
        if vnet_hdr and existed:
            info = _tun_link_info(name) or {}
            prior_vnet = bool(info.get("vnet_hdr", False))
            try:
                stale = ownership.read(Kind.TUN, _record_name(name))
            except TunlabError:
                stale = None  # records we cannot trust say nothing
            if stale is not None and ownership.owner_state(stale) is OwnerState.DEAD:
                # vnet_hdr is on because a killed fast reader left it on: not the prior state.
                prior_vnet = bool(stale.details.get("prior_vnet", 0))
        flags = IFF_TUN | IFF_NO_PI
        if vnet_hdr:
            flags |= IFF_VNET_HDR
        if multi_queue:
            flags |= IFF_MULTI_QUEUE
        fd = attach_fd(name, flags)
        device = cls(fd, name, flags)
        try:
            # A fast reader that was killed may have left offloads on (the attach above has
            # already cleared its vnet_hdr flag): switch them off, or set them to none for now.
            device.set_offload(0)
            device.set_vnet_header_size(VNET_HDR_SIZE)
            if vnet_hdr and device.kernel_flags() & IFF_PERSIST:
                try:
                    ownership.claim(Kind.TUN, _record_name(name), device=name,
                                    prior_vnet=int(prior_vnet))
                    device._record = _record_name(name)
                except TunlabError:
                    pass  # no records directory here: only a later plain open can repair
                if not prior_vnet:
                    device._restore_flags = IFF_TUN | IFF_NO_PI | (flags & IFF_MULTI_QUEUE)
                    device._ns_fd = os.open("/proc/thread-self/ns/net",
                                            os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            device.close()
            raise
        return device

    # -- packets ------------------------------------------------------------------------------
    @property
    def vnet_hdr(self) -> bool:
        """True when every packet on this descriptor carries a virtio-net header."""
        return bool(self.flags & IFF_VNET_HDR)

    def read(self, size: int = MAX_PACKET + 64) -> bytes:
        """Block until the kernel routes a packet into the device; return it whole."""
        return os.read(self.fd, size)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Read one packet into ``buffer``; return its length."""
        return os.readv(self.fd, [buffer])

    def write(self, packet: bytes | bytearray | memoryview) -> int:
        """Hand one IP packet to the kernel as if it arrived on this device.

        Anything that is not a well-formed IPv4/IPv6 packet raises :class:`InvalidPacketError`
        and is not written. On a ``vnet_hdr`` device ``packet`` starts with the 10-byte
        virtio-net header, and the check applies to what follows it.
        """
        if self.flags & IFF_VNET_HDR:
            return self.write_packet(memoryview(packet)[VNET_HDR_SIZE:],
                                     memoryview(packet)[:VNET_HDR_SIZE])
        problem = ip_packet_problem(packet)
        if problem:
            raise InvalidPacketError(f"refusing to write to {self.name}: {problem}")
        return os.write(self.fd, packet)

    def write_packet(self, packet: bytes | bytearray | memoryview,
                     vnet_header: bytes | bytearray | memoryview | None = None) -> int:
        """Write one IP packet, with its virtio-net header if it came with one; any device.

        On a ``vnet_hdr`` device header and packet go out in one writev() (a plain packet gets
        an all-zero header) and the kernel finishes any offload work. On a plain device a
        header that asks for work (checksum, segmentation) is done in software first
        (:func:`tunlab.packet.vnet.resolve`). Returns the bytes written. Not-IP packets, and headers
        shorter than 10 bytes, raise :class:`InvalidPacketError` and nothing is written.
        """
        problem = ip_packet_problem(packet)
        if problem:
            raise InvalidPacketError(f"refusing to write to {self.name}: {problem}")
        if vnet_header is not None and len(vnet_header) != VNET_HDR_SIZE:
            raise InvalidPacketError(f"refusing to write to {self.name}: virtio-net header of "
                                     f"{len(vnet_header)} bytes, not {VNET_HDR_SIZE}")
        if self.flags & IFF_VNET_HDR:
            return os.writev(self.fd, (ZERO_HEADER if vnet_header is None else vnet_header,
                                       packet))
        if vnet_header is None or not needs_work(vnet_header):
            return os.write(self.fd, packet)
        try:
            pieces = resolve(vnet_header, packet)
        except OffloadError as exc:
            raise InvalidPacketError(f"refusing to write to {self.name}: {exc}") from None
        return sum(os.write(self.fd, piece) for piece in pieces)

    def fileno(self) -> int:
        """The file descriptor (for poll/select)."""
        return self.fd

    def set_blocking(self, blocking: bool) -> None:
        """Blocking (default) or non-blocking reads and writes."""
        os.set_blocking(self.fd, blocking)

    # -- device settings ---------------------------------------------------------------------
    @property
    def mtu(self) -> int:
        """The device's MTU in bytes."""
        result = fcntl.ioctl(self._ctl, SIOCGIFMTU, struct.pack("16si20x", self.name.encode(), 0))
        return int(struct.unpack("16si20x", result)[1])

    @mtu.setter
    def mtu(self, value: int) -> None:
        fcntl.ioctl(self._ctl, SIOCSIFMTU, struct.pack("16si20x", self.name.encode(), value))

    def kernel_flags(self) -> int:
        """TUNGETIFF: the flags the kernel holds for the device (IFF_*, IFF_PERSIST included)."""
        result = fcntl.ioctl(self.fd, TUNGETIFF, _ifreq(""))
        return int(struct.unpack("16sH22x", result)[1])

    def _ethtool_value(self, command: int) -> int:
        request = bytearray(struct.pack("II", command, 0))
        buffer = ctypes.create_string_buffer(bytes(request), len(request))
        ifreq = struct.pack("16sP8x", self.name.encode(), ctypes.addressof(buffer))
        fcntl.ioctl(self._ctl, SIOCETHTOOL, ifreq)
        return int(struct.unpack("II", buffer.raw)[1])

    def offloads_enabled(self) -> dict[str, bool]:
        """Which offloads the device currently has on (empty dict: none), as ethtool says."""
        try:
            found = {"tx-checksumming": self._ethtool_value(ETHTOOL_GTXCSUM),
                     "tcp-segmentation-offload": self._ethtool_value(ETHTOOL_GTSO)}
        except OSError:
            return {}
        return {name: True for name, value in found.items() if value}

    def set_offload(self, flags: int) -> None:
        """TUNSETOFFLOAD: tell the kernel which offloads (TUN_F_*) this reader can take.

        Only a ``vnet_hdr`` reader can be told about offloads it can take; 0 is always allowed.
        """
        if flags and not self.flags & IFF_VNET_HDR:
            raise TunlabError(f"{self.name} was opened without vnet_hdr: it cannot take "
                              "offloaded packets", "open it with vnet_hdr=True")
        fcntl.ioctl(self.fd, TUNSETOFFLOAD, flags)
        self.offload = flags

    def set_vnet_header_size(self, size: int) -> None:
        """TUNSETVNETHDRSZ: size of the virtio-net header in front of each packet."""
        fcntl.ioctl(self.fd, TUNSETVNETHDRSZ, struct.pack("i", size))

    def set_persistent(self, persistent: bool) -> None:
        """TUNSETPERSIST: keep the device after the last descriptor closes (like `ip tuntap`)."""
        fcntl.ioctl(self.fd, TUNSETPERSIST, int(persistent))

    def close(self) -> None:
        """Detach. A persistent device stays as it was; a device created by open() vanishes.

        What a ``vnet_hdr`` open changed on a persistent device is put back: offloads off, and
        the ``vnet_hdr`` flag cleared by a brief plain re-attach inside the device's namespace.
        """
        if self.fd < 0:
            return
        if self.offload:
            try:
                self.set_offload(0)
            except OSError:
                pass
        os.close(self.fd)
        self.fd = -1
        self._ctl.close()
        if self._ns_fd >= 0:
            flags, name = self._restore_flags, self.name

            def reattach() -> None:
                os.close(attach_fd(name, flags or IFF_TUN | IFF_NO_PI))

            try:
                _in_namespace(self._ns_fd, reattach)
            except OSError:
                pass  # device gone or taken by someone else meanwhile: nothing to put back
            finally:
                os.close(self._ns_fd)
                self._ns_fd = -1
        if self._record is not None:
            ownership.release(Kind.TUN, self._record)
            self._record = None

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self.fd < 0

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        extra = ", vnet_hdr" if self.vnet_hdr else ""
        return f"TunDevice({self.name!r}, fd={self.fd}{extra})"


def _find_namespace(namespace_id: str) -> str | None:
    """A path to the network namespace ``namespace_id``: this thread's or a named one."""
    candidates = ["/proc/thread-self/ns/net"]
    try:
        candidates += [os.path.join("/run/netns", n) for n in sorted(os.listdir("/run/netns"))]
    except OSError:
        pass
    for path in candidates:
        try:
            if _namespace_id(path) == namespace_id:
                return path
        except OSError:
            continue
    return None


def _restore_device(record: Record) -> CleanupAction | None:
    """Put a killed fast reader's device back the way a plain open leaves it."""
    namespace_id, _, device = record.name.partition(":")
    path = _find_namespace(namespace_id)
    if path is None:
        return None  # the namespace, and the device with it, is gone
    ns_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    outcome: list[CleanupAction | None] = [None]

    def reopen() -> None:
        if not device_exists(device):
            return
        try:
            TunDevice.open(device).close()  # a plain open switches the offloads off
        except TunlabError as exc:
            outcome[0] = CleanupAction(Kind.TUN, device, Outcome.SKIPPED, exc.message)
            return
        outcome[0] = CleanupAction(Kind.TUN, device, Outcome.RESTORED,
                                   f"offloads off, vnet_hdr off (left on by pid "
                                   f"{record.owner.pid}, which is gone)")

    try:
        _in_namespace(ns_fd, reopen)
    finally:
        os.close(ns_fd)
    return outcome[0]


def restore_stale_devices(report: list[CleanupAction] | None = None) -> list[str]:
    """Switch offloads off on TUN devices whose fast-path reader was killed.

    Only devices with an ownership record whose owner is dead, in this namespace or a named
    one (``/run/netns``); a device someone has attached since is left alone. Returns the
    devices restored; ``report`` collects every decision.
    """
    actions = []
    for record in ownership.records(Kind.TUN):
        state = ownership.owner_state(record)
        if state is OwnerState.ALIVE:
            continue
        if state is OwnerState.UNKNOWN:
            actions.append(CleanupAction(Kind.TUN, record.name, Outcome.SKIPPED,
                                         "owned by a process in another PID namespace"))
            continue
        action = _restore_device(record)
        if action is None or action.outcome is not Outcome.SKIPPED:
            ownership.release(Kind.TUN, record.name)
        if action is not None:
            actions.append(action)
    if report is not None:
        report.extend(actions)
    return [a.name for a in actions if a.outcome is Outcome.RESTORED]
