"""A minimal ``tcpdump -i IF -U -w FILE EXPR`` for user namespaces that deny setgroups(2).

Started as root, tcpdump gives up privileges after opening the device, and ``-Z root`` keeps
it root; both go through initgroups(3), i.e. setgroups(2). ``unshare --map-root-user`` (the
"tunlab (no sudo)" kernel) must write "deny" to /proc/self/setgroups before it may map the
user's groups, so there setgroups fails and tcpdump exits ("Couldn't change to 'root'"),
whatever ``-Z`` says. This stand-in captures like tcpdump does (an AF_PACKET socket on the
device, the filter compiled by ``tcpdump -ddd``, which exits before dropping anything) and
writes the same pcap file; it never changes its credentials. Run it inside the namespace::

    python -m tunlab.kernel.capture -i lo -w out.pcap tcp port 5555

It prints tcpdump's "listening on IF" line to stderr once capturing, writes each packet as it
arrives (like ``-U``), and stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import ctypes
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

__all__ = ["ARPHRD_NONE", "attach_filter", "capture", "compile_filter", "ETH_P_ALL", "linktype",
           "LINKTYPE_ETHERNET", "LINKTYPE_RAW", "main", "PACKET_OUTGOING", "SNAPLEN",
           "SO_ATTACH_FILTER"]

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
ARPHRD_NONE = 0xFFFE      # TUN devices: IP packets without a link-layer header
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
SNAPLEN = 262144


def linktype(interface: str) -> int:
    """The pcap link type of ``interface``: raw IP for TUN devices, else Ethernet (lo, veth)."""
    try:
        kind = int(Path(f"/sys/class/net/{interface}/type").read_text())
    except (OSError, ValueError):
        kind = 1
    return LINKTYPE_RAW if kind == ARPHRD_NONE else LINKTYPE_ETHERNET


def compile_filter(interface: str, expression: list[str]) -> bytes:
    """The classic BPF program for ``expression`` on ``interface``, as ``tcpdump -ddd`` says."""
    result = subprocess.run(["tcpdump", "-ddd", "-i", interface, *expression],
                            capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise SystemExit(f"tcpdump -ddd: {result.stderr.strip()}")
    lines = result.stdout.split("\n")
    count = int(lines[0])
    return b"".join(struct.pack("HBBI", *map(int, line.split()))
                    for line in lines[1:1 + count])


def attach_filter(sock: socket.socket, program: bytes) -> None:
    """SO_ATTACH_FILTER: the kernel passes only matching packets to ``sock``."""
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HP", len(program) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _write_header(out: BinaryIO, link: int) -> None:
    out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, link))
    out.flush()


def _write_packet(out: BinaryIO, data: bytes) -> None:
    now = time.time()
    seconds = int(now)
    out.write(struct.pack("<IIII", seconds, int((now - seconds) * 1e6), len(data), len(data)))
    out.write(data)
    out.flush()


def capture(interface: str, path: str, expression: list[str]) -> int:
    """Capture on ``interface`` into the pcap file ``path`` until SIGINT or SIGTERM."""
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    program = compile_filter(interface, expression) if expression else b""
    count = 0
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as sock, \
            open(path, "wb") as out:
        if program:
            attach_filter(sock, program)
        sock.bind((interface, 0))
        _write_header(out, linktype(interface))
        loopback = interface == "lo"
        print(f"tunlab.kernel.capture: listening on {interface}, link-type "
              f"{linktype(interface)}, snapshot length {SNAPLEN} bytes", file=sys.stderr,
              flush=True)
        while not stop:
            try:
                ready, _, _ = select.select([sock], [], [], 0.1)
            except InterruptedError:
                continue
            if not ready:
                continue
            data, address = sock.recvfrom(SNAPLEN)
            if loopback and address[2] == PACKET_OUTGOING:
                continue  # lo shows each packet going out and coming in: keep one, as libpcap
            _write_packet(out, data)
            count += 1
    print(f"{count} packets captured", file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m tunlab.kernel.capture -i IF -w FILE [EXPRESSION...]`` (tcpdump's options)."""
    parser = argparse.ArgumentParser(prog="python -m tunlab.kernel.capture", description=__doc__)
    parser.add_argument("-i", dest="interface", required=True)
    parser.add_argument("-w", dest="path", required=True)
    parser.add_argument("expression", nargs="*")
    args = parser.parse_args(argv)
    return capture(args.interface, args.path, args.expression)


if __name__ == "__main__":
    raise SystemExit(main())
