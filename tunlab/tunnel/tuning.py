"""The data path's sizes and timings, in one place."""

from __future__ import annotations

from tunlab.packet.vnet import VNET_HDR_SIZE

__all__ = ["KEEP_WARM_SECONDS", "KEEP_WARM_TICK_MS", "MAX_BUSY_POLL_US", "NOTSENT_LOWAT",
           "READ_BATCH", "READ_BATCH_BYTES", "READ_BUFFER", "READY_TIMEOUT", "RECV_SIZE",
           "SEND_TIMEOUT", "SPIN_SECONDS"]

READ_BATCH = 64  # packets read from the device before one send(): fewer syscalls under load
RECV_SIZE = 256 * 1024
SEND_TIMEOUT = 5.0
READY_TIMEOUT = 10.0  # how long start() waits for a client's first connection, by default
READ_BUFFER = 65535 + VNET_HDR_SIZE + 64
# Fast path: after sending something read from the device, keep trying (yielding the CPU in
# between) this long for the peer's answer before sleeping in poll(); see the fast pump.
SPIN_SECONDS = 1e-3
# While packets flow both ways (a conversation), the pump polls with a 1 ms timeout instead of
# sleeping until the next packet, for KEEP_WARM_SECONDS after the last one; see the fast pump.
KEEP_WARM_SECONDS = 0.1
KEEP_WARM_TICK_MS = 1
# Fast path: one batch of device reads stops at this many bytes (or READ_BATCH packets), so
# that what waits in user space for the socket stays small: a few 64 KiB super-packets, not
# READ_BATCH of them (4 MiB), in front of a ping under load.
READ_BATCH_BYTES = 256 * 1024
# The underlay socket reports room (and takes more) only while less than this is unsent in the
# kernel: the rest waits in the TUN device's queue, where the kernel can still drop it, instead
# of megabytes of socket buffer in front of every packet (TCP_NOTSENT_LOWAT).
NOTSENT_LOWAT = 128 * 1024
MAX_BUSY_POLL_US = 1_000_000  # --busy-poll beyond a second is a typo, not a latency tweak
