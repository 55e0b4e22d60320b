"""The data path's sizes and timings, in one place."""

from __future__ import annotations

from ..vnet import VNET_HDR_SIZE

READ_BATCH = 64  # packets read from the device before one send(): fewer syscalls under load
RECV_SIZE = 256 * 1024
SEND_TIMEOUT = 5.0
READ_BUFFER = 65535 + VNET_HDR_SIZE + 64
# Fast path: after sending something read from the device, keep trying (yielding the CPU in
# between) this long for the peer's answer before sleeping in poll(); see the fast pump.
SPIN_SECONDS = 1e-3
# While packets flow both ways (a conversation), the pump polls with a 1 ms timeout instead of
# sleeping until the next packet, for KEEP_WARM_SECONDS after the last one; see the fast pump.
KEEP_WARM_SECONDS = 0.1
KEEP_WARM_TICK_MS = 1
