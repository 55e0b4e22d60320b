"""The VPN tunnel: TUN -> encapsulate -> TCP -> decapsulate -> TUN, as threads owned by objects.

:class:`TunnelServer` and :class:`TunnelClient` each own:

* a *device reader* thread: read packets the kernel routed into the TUN device, frame them and
  send them to the peer (dropped and counted while there is no peer);
* a *receiver* thread per connection: read the TCP stream, let the sans-IO
  :class:`~tunlab.proto.session.Session` turn it into packets, write those into the device.

Both forward at once, keep live :class:`TunnelStats`, and record :class:`TunnelEvent` objects
(connections, rejections, and optionally every packet) for notebooks to show and plot.
A :class:`~tunlab.runtime.ThreadGroup` owns the threads: ``stop()`` wakes every one of them
through its :class:`~tunlab.runtime.Waker`, so it returns within a second, and it never closes
the device it was given. No peer input ends an endpoint: an unexpected exception while serving
one connection drops that peer (socket closed, unregistered) and the endpoint goes on; the
first such exception is kept (``failure``) and re-raised by ``stop()``.

Two data paths, chosen by how the device was opened:

* the **simple path** (a plain device, the default for notebooks): one ``read()`` per packet,
  one frame per packet, the code reads like the diagram;
* the **fast path** (a device opened with ``TunDevice.open(name, vnet_hdr=True)``, used by the
  command line and the benchmark): each endpoint offers the ``vnet_hdr`` feature in its HELLO.
  When both offer it, the device is told it may hand over unfinished TCP super-packets of up to
  64 KiB (``TUNSETOFFLOAD(CSUM|TSO4|TSO6)``), which travel as GSO_DATA frames with their
  virtio-net header, and the far kernel finishes them: one read, one frame and one write
  instead of forty-five. When the peer lacks the feature, offloads stay off (the kernel then
  hands over finished MTU-sized packets) and plain DATA frames are sent, so a fast and a simple
  endpoint interoperate. The switch happens per connection, because the offload setting
  belongs to the device while the feature belongs to the connection; packets queued under the
  previous setting are finished in software (:mod:`tunlab.packet.vnet`). While a peer is connected,
  one *pump* thread owns the device and does both directions with non-blocking calls, frames
  without copying and spins briefly before it sleeps (see :mod:`tunlab.tunnel.pump`); the
  device reader only drains the device while no peer is there.
"""

from tunlab.proto.framing import VNET_FEATURE
from tunlab.tunnel.address import parse_hostport
from tunlab.tunnel.client import TunnelClient
from tunlab.tunnel.events import EventKind, TunnelEvent
from tunlab.tunnel.server import TunnelServer
from tunlab.tunnel.stats import TunnelStats

__all__ = ["VNET_FEATURE", "EventKind", "TunnelClient", "TunnelEvent", "TunnelServer",
           "TunnelStats", "parse_hostport"]
