"""Write notebooks/NN-*.ipynb from the sources below: `.venv/bin/python notebooks/.src/build.py`.

The notebooks are the product; this file only keeps their text reviewable in one place.
Notebooks are saved without outputs; tests/test_notebooks.py executes them.
"""

from __future__ import annotations

import sys

from nbtools import code, md, write


def setup(name: str, lab: str | None = "seed", extra: str = "") -> list:
    lab_arg = "None" if lab is None else repr(lab).replace("'", '"')
    return [code(f"""
from tunlab import course, plots, widgets{extra}

lesson = course.start("{name}", lab={lab_arg})
""", "setup")]


def exercise(key: str, context: str = "lesson", intro: str = "") -> list:
    return [
        md(f"## Exercise\n{intro}\nWrite your answer in the cell below, run it, then run the "
           "check. `course.hint(...)` reveals one more hint each time you run it, folded: click "
           "to open it."),
        code(f'course.question("{key}")'),
        code("answer = None  # your answer here", "answer"),
        code(f'course.check("{key}", answer, {context})', "check"),
        code(f'course.hint("{key}")', "hint"),
    ]


def finish(extra: str = "") -> list:
    return [md("## Clean up\nThis removes the lab's namespaces, with every device, route and "
               "firewall rule inside them. (It also happens when the kernel stops or restarts; "
               "after a crash, `sudo .venv/bin/tunlab cleanup` or the next lab removes "
               "leftovers.)"),
            code(f"{extra}lesson.finish()", "finish")]


NOTEBOOKS: dict[str, list] = {}

# ------------------------------------------------------------------------------------------------
NOTEBOOKS["00-welcome"] = [
    md("""
# 00 · Welcome to tunlab

tunlab is a hands-on course on how Linux moves a packet through **TUN devices**, **routing
tables** and a **user-space VPN tunnel**, and why the kernel sometimes drops it without a word.

**Learning goals**
- know the packet's journey this course follows (the *seed's example goal*);
- see what this machine can run, and what needs root;
- understand why the lab never changes your own network: everything happens in private
  network namespaces that the lab creates and removes;
- know how a lesson works: short cells, widgets, plots, and an exercise whose answer is checked.
"""),
    *setup("00-welcome"),
    md("""
The box above says whether the lab could start. If it says **read-only mode**, the lessons
still work: every command shows output recorded from a real run, marked *recorded example*.
To run everything for real, start JupyterLab as root from the repository with `sudo make lab`.

## What runs here: the doctor
The doctor checks what the lab needs. Press the button to check again (for example after
`sudo modprobe tun`).
"""),
    code("widgets.DoctorPanel()"),
    md("""
| needs | for |
|---|---|
| root (CAP_NET_ADMIN + CAP_SYS_ADMIN) | namespaces, TUN devices, routes, sysctls, nft rules: every lesson's live part |
| `/dev/net/tun` | lessons 01, 03, 04, 07, 08 (the tunnel) |
| tracefs | lesson 06: the kernel's own drop reasons (`skb:kfree_skb`) |
| `nft`, `tcpdump`, `iperf3`, `nstat` | firewall (05-07), capture (03), throughput (08), counters |
| nothing | reading, plots from recorded runs, the exercises |

## The journey
The seed of this course is one sentence:

> my-packet → via routing (10.0.0.1/24) → vpn-client (encapsulate) --tcp→ vpn-server
> (decapsulate) → release raw my-packet

Every lesson zooms into one of these stations.
"""),
    code('plots.seed_path(title="The packet\'s journey through this course")'),
    md("""
| lesson | station |
|---|---|
| [01 TUN devices](01-tun-devices.ipynb) | `mytun`, `mytun2`: a network device whose wire is a file descriptor |
| [02 Routing tables](02-routing-tables.ipynb) | why `ping 10.0.0.2` enters mytun but `ping 10.0.0.1` never does |
| [03 Encapsulation](03-encapsulation.ipynb) | the vpn-client's frames on the TCP connection |
| [04 The seed's goal](04-seed-goal.ipynb) | the whole path, hop by hop |
| [05 Martians and rp_filter](05-martians-and-rp_filter.ipynb) | what the kernel thinks of the released packet |
| [06 Drop reasons](06-drop-reasons.ipynb) | asking the kernel *why* it dropped it |
| [07 A working VPN](07-working-vpn.ipynb) | two hosts: every fix, one at a time |
| [08 Performance](08-performance.ipynb) | throughput, MTU, TCP over TCP |

## Your own network stays untouched
The lab ran the seed's script `scripts/create_named_tuntap_devices.sh` inside a **private
network namespace**: a separate copy of the network stack with its own devices, addresses,
routes, sysctls and firewall. This is what it sees:
"""),
    code('lesson.sh("links", "ip", "-br", "link")'),
    code('lesson.sh("addrs", "ip", "-br", "-4", "addr")'),
    md("""
Only `lo`, `mytun` and `mytun2`: none of your machine's devices. These are the commands the lab
ran to get there (`lesson.lab.commands`):
"""),
    code('lesson.run("commands", lambda: lesson.lab.commands)'),
    md("""
Each notebook ends with `lesson.finish()`, which deletes the namespace and everything in it.
If the kernel is restarted or shut down first, the lab is removed then; if the kernel is
killed outright, the next lab (or `sudo .venv/bin/tunlab cleanup`) removes what was left.
"""),
    *exercise("00"),
    *finish(),
]

# ------------------------------------------------------------------------------------------------
NOTEBOOKS["01-tun-devices"] = [
    md("""
# 01 · TUN devices: a network device whose wire is a file

**Learning goals**
- create TUN devices with addresses, as the seed's first step does;
- attach to one through `/dev/net/tun` and read a ping from the raw file descriptor;
- know the **4-byte packet-information header** that appears without `IFF_NO_PI`, the most
  common TUN bug;
- read a device's counters with `ip -stats link` and know what *TX dropped* means for a TUN.
"""),
    *setup("01-tun-devices"),
    md("""
## Step 1 of the seed: create the devices
`lesson.start` ran `bash scripts/create_named_tuntap_devices.sh` inside the lab's namespace:
"""),
    code('print(lesson.run("script_output", lambda: lesson.lab.script_output))'),
    code('lesson.sh("details", "ip", "-d", "link", "show", "mytun")'),
    md("""
`tun type tun pi off`: a *layer 3* device (it carries IP packets, no Ethernet header), and
`pi off`: it was created for readers that use `IFF_NO_PI`. `NO-CARRIER` and `state DOWN` mean
that no program holds the device open yet: a TUN device's "cable" is a file descriptor.

## Attach and read
A program attaches with two system calls:

```python
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", b"mytun", IFF_TUN | IFF_NO_PI))
```

From then on, every packet the kernel routes *into* mytun is one `read(fd)`, and every
`write(fd, packet)` is a packet *arriving from* mytun. `widgets.read_one_ping` does exactly this
inside the lab, runs `ping -c1 10.0.0.2`, and returns the first IPv4 packet it read:
"""),
    code("""
packet = lesson.run("read_no_pi", lambda: widgets.read_one_ping(lesson.ns, "mytun", no_pi=True))
print(len(packet), "bytes:", packet[:20].hex(" "))
"""),
    code("plots.read_layout(packet, pi=False)"),
    md("""
The ping's echo request, byte for byte: `45` = IPv4 with a 20-byte header, total length 84,
protocol ICMP, 10.0.0.1 → 10.0.0.2, then the ICMP echo header and 56 bytes of payload.
(New TUN devices also send IPv6 router solicitations; the reader skips them.)

## The pitfall: forgetting IFF_NO_PI
Without `IFF_NO_PI`, the kernel puts a `struct tun_pi { u16 flags; be16 proto; }` in front of
every packet you read, and expects one in front of every packet you write. Try both in the
widget:
"""),
    code("reader = widgets.PiReader(lesson)\nreader"),
    code("""
reader.no_pi.value = False   # what the widget does when you untick the box
with_pi = reader.read_packet()
print(len(with_pi), "bytes:", with_pi[:8].hex(" "), "...")
"""),
    md("""
Four more bytes: `flags` 0x0000 and `proto` 0x0800. Code that expects the IP header at byte 0
now reads version **0** and decides that this is not IPv4. In the other direction it is worse:
a program that writes bare IP packets to a device opened *without* `IFF_NO_PI` makes the kernel
read the first four bytes of the IP header as `flags` and `proto` (here 0x0054, the total
length), so the packet is handed to a protocol that does not exist and silently vanishes.
Both ends of a tunnel must agree; tunlab always uses `IFF_NO_PI`, and refuses to write
anything that is not a well-formed IP packet.
"""),
    code("plots.read_layout(with_pi, pi=True)"),
    md("""
## Counters: who dropped what?
The seed's hint: `ip -stats link show <interface>`. While nobody holds a TUN device open, the
kernel cannot hand packets to anyone; it counts them as **TX dropped**:
"""),
    code("""
lesson.sh("ping_nobody", "ping", "-c2", "-i", "0.2", "-W1", "10.0.0.2")
lesson.sh("stats", "ip", "-stats", "link", "show", "mytun")
"""),
    md("""
For a TUN device, *TX* is the direction kernel → your program: TX packets count what was
read, TX dropped what nobody read (no reader attached, or the queue of `qlen` packets full
because the reader was too slow). *RX* is your program → kernel: every `write()`.
"""),
    *exercise("01"),
    *finish(),
]

# ------------------------------------------------------------------------------------------------
NOTEBOOKS["02-routing-tables"] = [
    md("""
# 02 · Routing tables: main, local, and why your own address loops back

**Learning goals**
- read the routing policy (`ip rule`) and the tables it consults: `local` first, then `main`;
- know which routes adding an address creates, and in which table;
- use `ip route get` to ask the kernel which way a packet would go;
- explain the seed's warning: ping an address *from mytun's subnet*, not mytun's own address,
  "or it will get routed to loopback".
"""),
    *setup("02-routing-tables"),
    md("""
## Which tables, in which order
"""),
    code('lesson.sh("rules", "ip", "rule")'),
    md("""
For every packet the kernel walks these rules top down: priority 0 looks in table **local**,
32766 in **main** (what `ip route` shows), 32767 in **default**. The first match wins.
"""),
    code('lesson.sh("main", "ip", "route", "show", "table", "main")'),
    code('lesson.sh("local", "ip", "route", "show", "table", "local")'),
    md("""
Adding `10.0.0.1/24` to mytun created two kinds of route:
- in **main**: `10.0.0.0/24 dev mytun scope link`: the rest of the subnet is out there, on mytun;
- in **local**: `local 10.0.0.1 dev mytun scope host`: *this host* is 10.0.0.1 (plus a
  broadcast route).

(`linkdown` means nobody holds the device open yet: lesson 01.)

## Ask the kernel: `ip route get`
"""),
    code('lesson.sh("get_peer", "ip", "route", "get", "10.0.0.2")'),
    code('lesson.sh("get_own", "ip", "route", "get", "10.0.0.1")'),
    md("""
10.0.0.2 leaves through **mytun**, where the vpn-client will read it. 10.0.0.1 matches the
`local` route first: a packet to one of this host's own addresses is delivered through the
loopback device `lo`, whatever device the address sits on. It never enters mytun, so the
vpn-client never sees it. Try other addresses:
"""),
    code("view = widgets.RouteView(lesson)\nview"),
    code('''
view.address.value = "10.0.2.1"   # as if typed into the widget above
view.lookup.click()               # as if the button was pressed: the widget above updates
'''),
    md("""
## Proof by counters
Ping both addresses and count the packets each device transmitted:
"""),
    code("""
counts = lesson.run("ping_counts", lambda: widgets.ping_device_counts(lesson.ns))
plots.bars(counts, unit="packets", title="Packets given to each device during 3 pings")
"""),
    md("""
Pinging 10.0.0.1 sends through `lo` (request and reply: 6 packets) and nothing enters mytun;
pinging 10.0.0.2 hands the 3 requests to mytun (counted as *TX dropped*: nobody reads mytun
yet, lesson 01).
"""),
    *exercise("02"),
    *finish(),
]

# ------------------------------------------------------------------------------------------------
NOTEBOOKS["03-encapsulation"] = [
    md("""
# 03 · Encapsulation: tunlab frames on the wire

**Learning goals**
- know what the vpn-client adds to each packet: tunlab's 8-byte frame header;
- understand why a frame needs a length field when it travels in a TCP *byte stream*;
- capture real tunnel traffic with `tcpdump` inside the lab and dissect it with scapy, using
  a scapy layer for the frame header;
- read a frame's byte layout.
"""),
    *setup("03-encapsulation", extra="\nfrom tunlab import framing, scapy_frame"),
    md("""
## One frame
The vpn-client reads a packet from mytun and sends `header + packet` over TCP. The header:

| bytes | field | value |
|---|---|---|
| 0-1 | magic | `TL` |
| 2 | version | 1 |
| 3 | type | HELLO 1, DATA 2, GSO_DATA 3, KEEPALIVE 4, CLOSE 5 |
| 4-7 | length | payload bytes, big endian |

Build an echo request with scapy and frame it with tunlab's codec:
"""),
    code("""
from scapy.layers.inet import ICMP, IP

packet = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP() / (b"x" * 56))
frame = framing.encode_packet(packet)
print(len(packet), "byte packet ->", len(frame), "byte frame; header:", frame[:8].hex(" "))
"""),
    code("plots.frame_layout(frame)"),
    md("""
## A scapy layer for the header
`tunlab.scapy_frame.TunlabFrame` teaches scapy the header, and binds its payload to IP, so scapy
can both build and dissect frames:
"""),
    code("""
built = scapy_frame.TunlabFrame() / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP() / (b"x" * 56)
print("scapy builds the same bytes as tunlab's codec:", bytes(built) == frame)
scapy_frame.TunlabFrame(frame).show()
"""),
    md("""
## Real traffic: capture the tunnel
Now the real thing: the vpn-server on mytun2 (listening on 127.0.0.1 in the lab namespace), a
tcpdump on the namespace's `lo`, then the vpn-client on mytun, and two pings through it.
"""),
    code("""
tunnel = widgets.SeedTunnel(lesson, capture=True, pings=2)
session = lesson.run("session", lambda: tunnel.session)
widgets.frames_table(session)
"""),
    md("""
Both sides start with a **HELLO** (JSON: role, features), then the client's two **DATA** frames
carry the echo requests. TCP does not keep message boundaries: a `recv()` can return half a
frame or several frames, and the client sends up to 64 frames in one `send()`. So the
dissector first puts each direction's TCP payload back in order (`tcp_streams`), then cuts the
byte stream into frames with the length field (`frames_from_stream`):
"""),
    code("""
stream = frame + framing.encode_keepalive() + frame[:20]   # two whole frames and a piece
frames, rest = scapy_frame.frames_from_stream(stream)
print([f.sprintf("%type% len=%length%") for _, f in frames], "- waiting for", len(rest), "bytes")
"""),
    md("""
## Explore
Choose a ping size and send: the widget captures the ping's frame on `lo` and dissects it.
"""),
    code("""
explorer = widgets.FrameExplorer(lesson, tunnel.server)
explorer.capture()
explorer
"""),
    md("""
On the underlay each packet now costs its own size + 8 (tunlab) + 20 (IP) + 20-32 (TCP)
bytes: the tunnel's overhead. Lesson 08 measures what that costs in throughput.
"""),
    *exercise("03"),
    *finish(extra="tunnel.close()\n"),
]

# ------------------------------------------------------------------------------------------------
NOTEBOOKS["04-seed-goal"] = [
    md("""
# 04 · The seed's example goal, end to end

> my-packet → via routing (10.0.0.1/24) → vpn-client (encapsulate) --tcp→ vpn-server
> (decapsulate) → release raw my-packet

**Learning goals**
- run the seed's five steps: devices, vpn-server on mytun2, vpn-client on mytun, one ping,
  the output of both ends;
- follow the ping hop by hop and check that the released packet is the one that was sent;
- see what the kernel does with the released packet, and why that is not yet a reply.
"""),
    *setup("04-seed-goal", extra="\nfrom tunlab.tunnel import TunnelClient, TunnelServer"),
    md("""
## Steps 1-3: devices, server, client
Step 1 (the script) ran when the lab started. Steps 2 and 3 are the seed's `make` in
`vpn_server` and `vpn_client`; here they are two objects, running as threads inside the lab's
namespace (the command-line equivalents are `tunlab server --dev mytun2 --listen ...` and
`tunlab client --dev mytun --server ...`):

```python
server = TunnelServer(lab.device("mytun2"), ("127.0.0.1", 0), namespace=lab.ns).start()
client = TunnelClient(lab.device("mytun"), server.address, namespace=lab.ns).start()
```

`widgets.SeedTunnel` does exactly that, with packet recording on, so we can look inside:
"""),
    code("""
tunnel = widgets.SeedTunnel(lesson)
server, client = tunnel.server, tunnel.client
lesson.run("connected", lambda: {"server listens on": "%s:%d" % server.address,
                                 "client connected": client.connected})
"""),
    md("""
## Step 4: `ping 10.0.0.2 -c1`
10.0.0.2 is in mytun's subnet but is not mytun's own address (lesson 02), so the kernel routes
the echo request into mytun:
"""),
    code("""
panel = widgets.SeedGoalPanel(lesson, server, client)
panel.run("10.0.0.2")
panel
"""),
    md("""
## Step 5: what each end saw
The vpn-client's events: it read the packet from mytun and sent one frame. The vpn-server's:
it received the frame and wrote the packet into mytun2.
"""),
    code("""
events = lesson.run("client_events", lambda: widgets.events_dicts(client, {"connected", "read", "sent"}))
widgets.events_table(events)
"""),
    code("""
events = lesson.run("server_events", lambda: widgets.events_dicts(server, {"connected", "written"}))
widgets.events_table(events)
"""),
    code("""
result = panel.last_result
print("sent:     ", result["sent_hex"][:40], "...")
print("released: ", result["released_hex"][:40], "...")
print("identical:", result["sent_hex"] == result["released_hex"] != "")
"""),
    md("""
The packet came out of the tunnel exactly as it went in. So why does `ping` report 100% loss?

## What the kernel did with the released packet
Writing into mytun2 means: *a packet arrived on mytun2*. The kernel now handles
`10.0.0.1 → 10.0.0.2` as if it came from a network behind mytun2. It is not addressed to this
host, so it would have to be **forwarded**, and a fresh namespace has `net.ipv4.ip_forward=0`:
"""),
    code('lesson.sh("forward", "sysctl", "net.ipv4.ip_forward")'),
    code("""
counters = result["counters"]
for line in widgets.explain_counters(counters):
    print(line)
"""),
    md("""
`IpInAddrErrors` is the counter of `ip_error()`: the packet was dropped with drop reason
**IP_INADDRERRORS**. And even with forwarding on, the source 10.0.0.1 is *this host's own
address* arriving from outside: a **martian**. Lessons 05 and 06 ask the kernel about both,
with its own drop reasons; the figure shows where the journey ends now.
"""),
    code("panel.figure(result)"),
    md("""
Try other destinations in the panel: 10.0.0.77 (another address in mytun's subnet), 10.0.2.1
(mytun2's own address), 10.0.0.1 (mytun's own address).
"""),
    *exercise("04", context="panel"),
    *finish(extra="tunnel.close()\n"),
]


# ------------------------------------------------------------------------------------------------
NOTEBOOKS["05-martians-and-rp_filter"] = [
    md("""
# 05 · Martians and rp_filter

**Learning goals**
- know what the kernel checks about a packet's *source* before it forwards or delivers it;
- reproduce the seed's log line `martian source 10.0.2.33 from 10.0.0.1, on dev mytun`, and
  read it correctly;
- know `rp_filter` 0, 1 (strict) and 2 (loose), `accept_local` and `log_martians`, and which
  one drops which packet;
- find the evidence: drop reasons, the kernel log, and counters that work on every kernel.
"""),
    *setup("05-martians-and-rp_filter"),
    md("""
When the vpn-server writes a packet into mytun2, the kernel handles it as **received on
mytun2**. Input routing then asks two questions: where does it go (forward, deliver locally),
and *could this source really be behind mytun2?* A packet whose source is impossible is a
**martian** and is dropped. The settings that decide, in a fresh namespace:
"""),
    code('''
lesson.sh("defaults", "sysctl", "net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter",
          "net.ipv4.conf.all.accept_local", "net.ipv4.conf.all.log_martians")
'''),
    md("""
These are kernel defaults. Many distributions set `rp_filter` to 1 or 2 on the host: check
yours with `sysctl net.ipv4.conf.all.rp_filter` (the effective value per device is the maximum
of `all` and the device's own).

Every experiment below is run by `course.fate(...)`: a fresh namespace with the seed's devices,
one crafted packet written into a device the way the vpn-server releases it, and the kernel's
own answer: verdict, drop reasons (traced), kernel log lines, replies, counters.

## The seed's martian
"""),
    code('''
seed = lesson.run("seed_martian", lambda: course.fate(
    "10.0.0.1", "10.0.2.33", dev="mytun",
    sysctls={"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.log_martians": 1}))
widgets.fate_box(seed)
'''),
    md("""
Read the line as *martian source* **10.0.2.33** (the destination, confusingly) *from*
**10.0.0.1** (the source), *on dev mytun*. 10.0.0.1 is this host's own address; a packet that
*arrives* carrying it must be forged or looped, so the kernel drops it: drop reason
`IP_LOCAL_SOURCE` (older kernels say `NOT_SPECIFIED`). The line appears only with
`log_martians=1`, in the kernel log, which is global: `journalctl -k -g martian` or
`dmesg | grep martian` show the same line on the host.

## The released ping of lesson 04
The ping `10.0.0.1 → 10.0.0.2` came out of the tunnel on mytun2:
"""),
    code('''
released = lesson.run("released", lambda: [
    ("ip_forward=0", course.fate("10.0.0.1", "10.0.0.2", sysctls={"net.ipv4.ip_forward": 0})),
    ("ip_forward=1", course.fate("10.0.0.1", "10.0.0.2", sysctls={
        "net.ipv4.ip_forward": 1, "net.ipv4.conf.all.log_martians": 1}))])
widgets.fate_table(released)
'''),
    md("""
With forwarding off it never gets as far as the source check (`IP_INADDRERRORS`: not for me,
and I do not forward). With forwarding on, it is the same martian as the seed's. Setting
`accept_local=1` would let it through, and the kernel would forward it out of mytun, straight
back into the vpn-client: a loop through the tunnel until the TTL runs out. The real fix is a
source address that belongs behind mytun2.

## A public source: rp_filter
The seed: *after changing the source IP to something publicly routable like 200.1.2.3, we
don't see martian packets anymore*. That depends on `rp_filter`:
"""),
    code('''
sweep = lesson.run("sweep", lambda: widgets.rp_sweep(
    course.fate, ["200.1.2.3", "10.0.2.33", "10.0.0.1"]))
widgets.fate_table(sweep)
'''),
    code('plots.drop_reasons(widgets.count_outcomes(sweep), title="9 packets, 3 sources x 3 rp_filter modes")'),
    md("""
- `rp_filter=0`: no source check; 200.1.2.3 is forwarded (that is what the seed saw).
- `rp_filter=1`, **strict**: the route *back* to the source must leave through the device
  the packet came in on. The lab has no route to 200.1.2.3 at all: `IP_RPFILTER`, and with
  `log_martians=1` a martian line again.
- `rp_filter=2`, **loose**: any route back will do. The lab has none (no default route), so it
  drops too; on a host with a default route, loose mode lets 200.1.2.3 pass.
- 10.0.2.33 lies in mytun2's subnet: the route back is mytun2, so even strict mode is happy.
- 10.0.0.1 is dropped as a local source whatever rp_filter says.

## Counters
Drop reason names need a recent kernel and tracing. Counters work everywhere: rp_filter drops
count in `TcpExtIPReversePathFilter` (`nstat`), martian sources in `in_martian_src`
(`/proc/net/stat/rt_cache`), and every device has `ip -stats link`:
"""),
    code('widgets.fate_box(dict(sweep)["200.1.2.3 rp_filter=1"])'),
    md("""
## Try it
Change the source, the settings, the device, and press **Send**: a fresh namespace, one packet,
the kernel's verdict within a second or two.
"""),
    code('''
builder = widgets.PacketBuilder(src="10.0.2.33", rp_filter=1)
builder.run()
builder
'''),
    *exercise("05", intro="The checker sends your packet through the real kernel."),
    *finish(),
]

# ------------------------------------------------------------------------------------------------
NOTEBOOKS["06-drop-reasons"] = [
    md("""
# 06 · Drop reasons: asking the kernel why

**Learning goals**
- know where drop reasons come from (`kfree_skb_reason()` and the `skb:kfree_skb` tracepoint)
  and how tunlab traces them without disturbing anyone (a private tracefs instance);
- look a reason up in the kernel's `dropreason-core.h`, as the seed suggests;
- reproduce the seed's `IP_NOPROTO` and `NETFILTER_DROP`, and fix the firewall one;
- explain the seed's last hint: *requests from any internal interface seem to get dropped*
  (`ping -I <interface> <mytun2-subnet-ip>`).
"""),
    *setup("06-drop-reasons"),
    md("""
## Where reasons come from
When the kernel frees a packet it did not deliver, it calls `kfree_skb_reason(skb, reason)`,
which fires the tracepoint `skb:kfree_skb` with the packet's address, the code location and the
reason. tunlab creates a **private trace instance** (`/sys/kernel/tracing/instances/tunlab-...`),
enables only that event, reads it while the packet is injected, matches events to the writing
thread, and removes the instance. `dropwatch` and `pwru` show the same reasons but need the
netlink drop monitor or kprobes, which this kernel lacks; they may work on your laptop.

The names are read from the running kernel, because the numbers shift between versions:
"""),
    code('''
reasons = lesson.run("reason_names", widgets.kfree_skb_reasons)
print(len(reasons), "reasons; the IP ones:", [n for n in reasons.values() if n.startswith("IP_")])
'''),
    md("""
Each is documented by a comment in
[`include/net/dropreason-core.h`](https://github.com/torvalds/linux/blob/master/include/net/dropreason-core.h),
for example *IP_NOPROTO: no support for IP protocol*.

## IP_NOPROTO
A packet addressed to this host is delivered to the handler of its IP protocol number (1 ICMP,
6 TCP, 17 UDP, ...). If no handler is registered, `ip_local_deliver_finish()` drops it:
"""),
    code('''
noproto = lesson.run("noproto", lambda: course.fate("200.1.2.3", "10.0.2.1", proto=253))
widgets.fate_box(noproto)
'''),
    md("""
Protocol 253 is reserved for experiments; nothing handles it. The kernel would answer with an
ICMP *protocol unreachable*, but it has no route back to 200.1.2.3 here, so no reply leaves.
The seed's packet was *delivered locally* with a protocol number nobody handles: a hand-crafted
packet with a wrong protocol field, or a protocol whose module is not loaded (GRE, SCTP, ...).

## NETFILTER_DROP: the host firewall
Forwarded packets pass netfilter's *forward* hook. A firewall whose forward policy is drop
(Docker sets the host's `FORWARD` policy to `DROP`) eats the tunnel's traffic; the fix lets the
tunnel's packets through:
"""),
    code('''
firewall = lesson.run("firewall", lambda: [
    (name, course.fate("200.1.2.3", "10.0.0.2", sysctls={"net.ipv4.ip_forward": 1}, nft_ruleset=rules))
    for name, rules in (("policy drop", course.FORWARD_DROP_RULESET),
                        ("+ accept mytun2 -> mytun", course.FORWARD_ACCEPT_TUNNEL_RULESET))])
widgets.fate_table(firewall)
'''),
    code("print(course.FORWARD_ACCEPT_TUNNEL_RULESET)"),
    md("""
With Docker's iptables, the same fix goes into the `DOCKER-USER` chain:
`iptables -I DOCKER-USER -i mytun2 -o mytun -j ACCEPT`.

## `ping -I`: requests from an internal interface
The seed: `ping -I <interface> <mytun2-subnet-ip>` seems to get dropped. Bind the ping to mytun
with the tunnel running and follow it:
"""),
    code('''
tunnel = widgets.SeedTunnel(lesson)
bound = lesson.run("ping_I", lambda: widgets.ping_bound(lesson, tunnel, "mytun", "10.0.2.33", {
    "net.ipv4.ip_forward": 1, "net.ipv4.conf.all.log_martians": 1}))
widgets.fate_box(bound)
'''),
    md("""
`-I mytun` makes the kernel send out of mytun even though 10.0.2.33 is routed to mytun2 (a
socket bound to a device may reach any address "on link"). The vpn-client carries it to the
vpn-server, which writes it into mytun2, and there it arrives with source **10.0.0.1**, this
host's own address, from outside: a local-source martian (`IP_LOCAL_SOURCE`, and the same kind
of log line as the seed's), or, with forwarding off, simply not for this host
(`IP_INADDRERRORS`). Both ends of this tunnel live on one host, so anything it sends to itself through the
tunnel comes back with its own source: that is why the seed's requests "from any internal
interface" were dropped. Two hosts (lesson 07) do not have this problem.

## Try it
"""),
    code('''
builder = widgets.PacketBuilder(src="200.1.2.3", dst="10.0.2.1", proto=253)
builder.run()
builder
'''),
    code('''
seen = [("noproto", noproto), *firewall, ("ping -I", bound)] + [(p["src"], r) for p, r in builder.history]
plots.drop_reasons(widgets.count_outcomes(seen), title="Outcomes in this lesson")
'''),
    *exercise("06"),
    *finish(extra="tunnel.close()\n"),
]


# ------------------------------------------------------------------------------------------------
NOTEBOOKS["07-working-vpn"] = [
    md("""
# 07 · A working VPN between two hosts

**Learning goals**
- build the classic remote-access VPN: laptop **a**, VPN server **b**, and host **c** on the
  LAN behind b;
- follow one ping and fix each drop in turn: the route on a, forwarding on b, b's firewall, the
  route back on c, and know which kernel counter or drop reason points at each;
- know when `rp_filter` drops tunnel traffic, and why it does not here;
- know NAT (masquerade) as the other way to get replies back.

```
  host a                         host b                          host c
  tun0 10.9.0.1 ── tunnel ──  tun0 10.9.0.2
  veth0 198.18.0.1 ═══════ veth0 198.18.0.2   lan0 192.168.50.1 ─── lan0 192.168.50.2
        (the tunnel's TCP connection runs over this underlay)
```
"""),
    *setup("07-working-vpn", lab="two-host", extra="\nfrom tunlab import vpn_lab"),
    md("""
Host b starts the way many real machines are: forwarding off, strict `rp_filter`, and a
firewall whose *forward* chain drops everything (this is what Docker does to a host).
"""),
    code("""
scenario = vpn_lab.VpnScenario.for_lesson(lesson)   # host c, b's defaults, the tunnel a <-> b
lesson.sh("b_sysctl", "sysctl", "net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", ns="b")
lesson.sh("b_nft", "nft", "list", "ruleset", ns="b")
"""),
    md("The tunnel itself works: a reaches b's tunnel address."),
    code('lesson.sh("ping_b", "ping", "-c1", "-W1", "10.9.0.2", ns="a")'),
    md("""
## One drop at a time
The panel applies or reverts each fix and pings 192.168.50.2 from a; below it, where the packet
stopped and which counters moved. Each cell below ticks one more fix (as clicking would).
"""),
    code("panel = widgets.FixPanel(lesson, scenario)\npanel"),
    code("panel.step()"),
    md("""
**a has no route.** `ping` fails at once: `connect: Network is unreachable` (counter
`IpOutNoRoutes`). Nothing was dropped: the kernel refused to send. Route the LAN into the
tunnel:
"""),
    code('panel.step("route_a")'),
    md("""
**b: IP_INADDRERRORS.** The packet crossed the tunnel and the vpn-server wrote it into b's
tun0. It is not for b, and b does not forward: `ip_error()` drops it (counter
`IpInAddrErrors`, drop reason `IP_INADDRERRORS`; lesson 06 shows it in the trace).
"""),
    code('panel.step("forward_b")'),
    md("""
**b: NETFILTER_DROP.** Now b forwards, and its firewall's forward chain (policy drop) eats
the packet: the seed's `NETFILTER_DROP`. The counter rule before the policy counts it. The fix
accepts new traffic from tun0 to lan0 and everything that belongs to an existing connection:
"""),
    code('panel.step("firewall_b")'),
    md("""
**c: no way back.** c got the echo request (`IcmpInEchos`), but it has no route to
10.9.0.0/24, so the reply is never sent. Either give c (or its default gateway) a route back
via b, or make b masquerade the tunnel's addresses behind its own LAN address (NAT: `nft add
rule ... oifname "lan0" ip saddr 10.9.0.0/24 masquerade`). Here: the route.
"""),
    code('panel.step("route_c")'),
    md("""
## Is rp_filter a problem?
b has strict reverse-path filtering (`rp_filter=1`): a packet is dropped unless b would send
a reply to its *source* out of the device it came in on. a's packets come from 10.9.0.1 in on
tun0, and b's route to 10.9.0.0/24 is tun0: they pass. It strikes when the source does not
fit the device, for example when a sends from its underlay address through the tunnel
(`ping -I 198.18.0.1`): b would answer 198.18.0.1 via veth0, not tun0.
"""),
    code('panel.step(source="198.18.0.1")'),
    md("""
`IP_RPFILTER` on b (counter `TcpExtIPReversePathFilter`). `rp_filter=2` (loose: any route back
will do) or a route matching the tunnel would let it pass; the tick box in the panel turns it
off if you want to try.
"""),
    *exercise("07", context="panel", intro="The panel's checker applies exactly your fixes in "
              "the lab, pings, and then tries each one less."),
    *finish(),
]

# ------------------------------------------------------------------------------------------------
NOTEBOOKS["08-performance"] = [
    md("""
# 08 · Performance: throughput, MTU, offloads, TCP over TCP

**Learning goals**
- watch a tunnel's packets per second and Mbit/s live;
- measure what the user-space tunnel costs compared with the bare underlay;
- see why a bigger tun MTU (or offloads) makes the tunnel faster: the cost is per packet;
- see what TCP over TCP does with loss: it turns into delay (and, at worst, meltdown).

Numbers here are small-scale and noisy (a shared machine, a few seconds each): compare them
side by side, not with other machines.
"""),
    *setup("08-performance", lab="two-host", extra="\nfrom tunlab import measure"),
    md("""
## Live
Two hosts a and b over a veth pair, the tunnel between their tun0 devices. The panel samples the
client's counters every half second and redraws the plot from a background thread; the buttons
start and stop the tunnel and push iperf3 traffic through it, the slider drops packets on the
underlay. The next cell starts it and sends 3 seconds of iperf3:
"""),
    code("""
panel = widgets.TunnelPanel(lesson.lab)
panel
"""),
    code("panel.run_demo(lesson, seconds=3)"),
    md("""
## What the tunnel costs
The same iperf3, once straight over the underlay veth, once through the tunnel:
"""),
    code("""
compare = lesson.run("compare", lambda: measure.compare_paths(lesson.lab, seconds=1.5))
plots.bars(compare, title="iperf3 over the underlay vs. through the tunnel")
"""),
    md("""
Every packet costs the tunnel a `read()` from tun0, a frame header, a `send()` on TCP, a
`recv()` and a `write()` on the other side, in Python. Measured on this kind of machine (the
lab notes, iperf3 5 s, MTU 1500): direct veth about 19,000 Mbit/s, OpenVPN 2.6 over TCP without
cipher about 510, a naive Python tunnel about 1,400.

## MTU: fewer, bigger packets
If the cost is per packet, bigger packets carry more bytes for the same cost. tun0's MTU sets
the largest packet the kernel hands to the tunnel:
"""),
    code("""
mtus = lesson.run("mtu", lambda: measure.mtu_experiment(lesson.lab, (1400, 9000, 60000), seconds=1.5))
plots.bars(mtus, title="Tunnel throughput by tun0 MTU")
"""),
    md("""
**Offloads** get the same effect without a giant MTU: a reader that opens the device with
`IFF_VNET_HDR` and announces `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)` receives TCP
*super-packets* of up to 64 KiB at MTU 1500, with a 10-byte virtio-net header saying how to
cut them up; the far end writes them whole and the kernel segments them. tunlab does exactly that on its **fast
path** (the command line's default; the notebooks use the simple path, because one packet per
read is easier to watch). Both ends offer `vnet_hdr` in their HELLO; only when both do are the
offloads switched on, so a fast and a simple endpoint still talk. Same lab, same iperf3:
"""),
    code("""
paths = lesson.run("paths", lambda: measure.data_path_experiment(lesson.lab, seconds=1.5))
plots.bars(paths, title="The same tunnel: simple path vs. fast path")
"""),
    md("""
The fast path also keeps one thread per connection that owns the device and does both
directions, and sends frames straight out of the read buffers (no copy). `make bench` measures
all variants side by side with OpenVPN; its results, if present:
"""),
    code("""
bench = course.load_bench()
plots.bars(bench, title="make bench: bench/results/bench.json") if bench else print("no bench/results/bench.json yet: run `sudo make bench`")
"""),
    md("""
## A round trip: waking costs more than working
Throughput is work, bytes per CPU second. A ping is mostly *waiting*. ping writes the echo into
tun0 and sleeps. The client's thread wakes, frames the echo and sends it. The server's thread
wakes, writes it into its device, reads the kernel's reply and sends that back. The client wakes
again and writes the reply, and ping wakes. On a virtual machine, waking a thread on an idle CPU
costs tens of microseconds. A hop's Python code takes 1-3 us while its caches are warm and 25-70
us right after a sleep. So the fast path keeps polling for 1 ms after each burst: the answer to
what it just sent is read by a thread that is already awake. `make bench` pings every tunnel in
ten interleaved rounds. The median of each round:
"""),
    code("""
rounds = course.load_bench_rtt_rounds()
plots.latency(rounds, title="make bench: median RTT of each interleaved round", xlabel="round of pings (all paths take turns)", count_lost=False) if rounds else print("no RTT rounds in bench/results/bench.json yet: run `sudo make bench`")
"""),
    md("""
The rounds of one run spread widely: the same code is fast in one round and slow in the next,
depending on which CPU the scheduler picked and what else that CPU was doing. That is why a
benchmark interleaves what it compares and reports medians and percentiles, and why one ping
proves nothing. The traces behind these numbers are in `docs/performance.md`.
"""),
    md("""
## TCP over TCP
The tunnel runs over TCP, and most traffic inside it is TCP too. When the underlay loses a
packet, the *outer* TCP retransmits it: the inner connection sees no loss, only a stall, and
every packet behind the lost one waits (head-of-line blocking). If stalls grow longer than the
inner TCP's own retransmission timeout, both layers retransmit at once and throughput collapses
(*TCP meltdown*); that is why WireGuard and OpenVPN prefer UDP.

The experiment drops a share of host a's packets on the underlay (nftables, `numgen random`)
and measures iperf3 and ping, directly and through the tunnel:
"""),
    code("""
loss = lesson.run("loss", lambda: measure.loss_experiment(lesson.lab, losses=(0, 2, 5), seconds=1.5))
plots.loss_curve(loss["throughput"])
"""),
    code('plots.latency(loss["rtts"], title="ping every 10 ms under loss: direct vs. through the tunnel")'),
    md("""
Direct, lost echoes are simply lost (crosses at the top) and the others stay fast. Through the
tunnel, none is lost, but some take tens or hundreds of milliseconds: loss became delay. Our
Python tunnel is slower than the underlay anyway, so its throughput barely moves at these loss
rates, while direct TCP halves: the bottleneck decides what you measure.
"""),
    *exercise("08"),
    *finish(extra="panel.close()\n"),
]


def main(names: list[str]) -> None:
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        print("wrote", write(name, cells))


if __name__ == "__main__":
    main(sys.argv[1:])
