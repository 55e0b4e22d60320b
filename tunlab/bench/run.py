"""The benchmark: tunlab's tunnel against the bare veth and OpenVPN, side by side in one run.

Everything runs inside two private namespaces (``a`` and ``b``, joined by a veth pair): iperf3
and ping between them, straight over the veth or through a tunnel. Each tunnel endpoint is its
own process, the command users run (``tunlab server`` / ``tunlab client`` in the namespace),
so that the two ends do not share one interpreter lock, and so that the CPU each costs can be
read from ``/proc/<pid>/stat``. The variants all run at once on their own devices and
addresses and are measured in turns (round robin, ``repeats`` times, medians reported), so that
the noise of a shared machine hits them alike:

==========================  ===========  ===========================================
variant                     device       what
==========================  ===========  ===========================================
direct veth                 veth0        the underlay itself, no tunnel
tunlab fast                 tun0         IFF_VNET_HDR + offloads: 64 KiB super-packets
tunlab simple               tun1         one read/frame/write per MTU-sized packet
tunlab fast + psk           tun2         the fast path, every frame sealed (AEAD)
tunlab fast + busy-poll     tun3         the fast path polling ``--busy-poll`` us before sleeping
OpenVPN 2.6                 ovpn0        TCP, no cipher, no auth (the reference config)
OpenVPN 2.6 + TCP_NODELAY   ovpn1        the same with Nagle off, as tunlab runs
wireguard-go                tlwg...      Debian's user-space WireGuard (encrypted, UDP)
==========================  ===========  ===========================================

Also measured: ping round-trip percentiles on an idle tunnel and under load (ping while one
iperf3 stream saturates it), CPU seconds per Gbit and per hour of idle tunnel, throughput
against the link MTU (veth and tun MTU set alike) and against parallel streams
(``iperf3 -P``), and two timings participants meet in the notebooks: one
``tunlab.fate.packet_fate`` verdict and :func:`measure_throughput` on the in-process lab
tunnel. A variant that cannot run here (no wireguard-go, a tunlab without ``--busy-poll``) is
reported as not available, and its targets as not met.

:func:`measure_throughput` is also the small live measurement for notebooks.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunlab.bench.wgpeer import WireGuardPair, niced
from tunlab.errors import EnvironmentProblem, TunlabError
from tunlab.kernel.netns import Namespace
from tunlab.lab import UNDERLAY, TwoHostLab
from tunlab.lab.measure import (
    IPERF_PORT,
    Run,
    iperf3,
    iperf3_server,
    ping_rtts,
    stop_process,
    wait_listening,
)

TARGET_VS_OPENVPN = 10.0
TARGET_VS_VETH = 0.40
TARGET_FATE_S = 1.0          # one `tunlab fate` verdict, wall clock
TARGET_FATE_FIXES_S = 2.0    # ... with its fixes tried
TARGET_SEND_S = 1.0          # the packet builder's Send to its answer
# Latency (issue 14): idle medians against OpenVPN's in the same run, and under load.
TARGET_IDLE_P50_VS_OPENVPN = 1.25
TARGET_BUSY_P50_VS_OPENVPN = 0.75
TARGET_LOADED_P50_MS = 1.0
TARGET_LOADED_P99_MS = 5.0
# Encrypted peers: tunlab with --psk-file against wireguard-go and against its own clear path.
TARGET_PSK_VS_WIREGUARD = 10.0
TARGET_PSK_VS_FAST = 0.8
# Every tunnel daemon of the bench (tunlab's endpoints, OpenVPN, wireguard-go) runs at this
# niceness, as a VPN gateway is run (OpenVPN's --nice): on this machine's two CPUs both ends
# of every tunnel share the CPUs with the load itself (iperf3), and at niceness 0 a ping under
# load waits mostly for a CPU, not in a queue. docs/performance.md has the measurements.
DAEMON_NICE = -10
BUSY_POLL_USEC = 200  # the --busy-poll of the busy-poll variant (`tunlab bench --busy-poll-usec`)
PING_INTERVAL_S = 0.01
OPENVPN = "OpenVPN 2.6"
OPENVPN_NODELAY = "OpenVPN 2.6 + TCP_NODELAY"
VETH = "direct veth"
FAST = "tunlab fast"
SIMPLE = "tunlab simple"
FAST_PSK = "tunlab fast + psk"
BUSY = "tunlab fast + busy-poll"
WIREGUARD = "wireguard-go"
BENCH_KEY = b"tunlab bench pre-shared key, not a secret"
TOOLS = {"iperf3": "iperf3", "openvpn": "openvpn", "ping": "iputils-ping",
         "wireguard-go": "wireguard-go"}
DEFAULT_RESULTS = Path("bench") / "results"  # in the folder `make bench` runs from
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- small measurements -----------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values`` with linear interpolation."""
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * p / 100
    low = int(k)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (k - low)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all its threads together."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


# -- the live measurement for notebooks --------------------------------------------------------
@dataclass
class Throughput:
    """What :func:`measure_throughput` saw."""

    mbps: float
    seconds: float
    tool: str
    path: str
    packets: int = 0            # packets the tunnel client read from its device meanwhile
    average_packet: float = 0.0  # their mean size: ~1,500 simple, up to 64 KiB with offloads

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for JSON and plots)."""
        return asdict(self)


def measure_throughput(lab: TwoHostLab, seconds: float = 1.0, *, path: str = "tunnel",
                       streams: int = 1) -> Throughput:
    """Measure TCP throughput from host ``a`` to host ``b`` of a :class:`TwoHostLab`, live.

    ``path="tunnel"`` goes through tun0 (start a tunnel first, e.g. ``lab.start_tunnel()``),
    ``path="underlay"`` straight over the veth. Uses iperf3 when installed, else a Python
    sender and receiver (slower: they compete with the in-process tunnel for the interpreter).
    Small scale on purpose: a notebook can call it every few seconds.
    """
    if path not in ("tunnel", "underlay"):
        raise ValueError("path is 'tunnel' or 'underlay'")
    address = "10.9.0.2" if path == "tunnel" else UNDERLAY[1]
    client = lab.client if path == "tunnel" else None
    before = client.stats.snapshot() if client is not None else None
    if shutil.which("iperf3"):
        with iperf3_server(lab.b, IPERF_PORT + 7):
            run = iperf3(lab.a, address, seconds, streams, port=IPERF_PORT + 7)
        mbps, tool = run.mbps, "iperf3"
    else:
        mbps, tool = _python_throughput(lab, address, seconds), "python"
    result = Throughput(mbps=mbps, seconds=seconds, tool=tool, path=path)
    if client is not None and before is not None:
        after = client.stats.snapshot()
        result.packets = after["read_packets"] - before["read_packets"]
        nbytes = after["read_bytes"] - before["read_bytes"]
        result.average_packet = nbytes / result.packets if result.packets else 0.0
    return result


def _python_throughput(lab: TwoHostLab, address: str, seconds: float) -> float:
    port = IPERF_PORT + 8
    listener = lab.b.run(lambda: socket.create_server((address, port)))
    received = [0]
    started = [0.0, 0.0]

    def receive() -> None:
        listener.settimeout(seconds + 10)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(seconds + 10)
            started[0] = time.monotonic()
            while chunk := conn.recv(1 << 18):
                received[0] += len(chunk)
            started[1] = time.monotonic()

    def send() -> None:
        block = bytes(1 << 18)
        with socket.create_connection((address, port), timeout=5) as conn:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                conn.sendall(block)

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    try:
        lab.a.run(send, timeout=seconds + 15)
        thread.join(seconds + 10)
    finally:
        listener.close()
    elapsed = max(started[1] - started[0], 1e-6)
    return received[0] * 8 / elapsed / 1e6


def time_fate_verdict(repeats: int = 5) -> dict[str, Any]:
    """Median wall-clock time of the ``tunlab fate`` command, as a participant runs it.

    The whole command is timed (interpreter start, imports, crafting, the lab, teardown), once
    for the verdict alone (``--no-verify``) and once with its fixes tried in fresh labs.
    """
    tunlab = shutil.which("tunlab", path=str(Path(sys.executable).parent)) or "tunlab"
    args = [tunlab, "fate", "--src", "10.0.0.1", "--dst", "10.0.0.2", "--set",
            "net.ipv4.ip_forward=1", "--json"]
    out: dict[str, Any] = {"available": True, "call": " ".join(args[1:])}
    for key, extra in (("verdict", ["--no-verify"]), ("with_fixes", [])):
        times, verdict, fixes = [], None, None
        for _ in range(repeats):
            started = time.monotonic()
            result = subprocess.run([*args, *extra], capture_output=True, text=True,
                                    timeout=60)
            times.append(time.monotonic() - started)
            if result.returncode != 0:
                return {"available": False, "note": result.stderr.strip()[-300:]}
            answer = json.loads(result.stdout)
            verdict, fixes = answer["verdict"], len(answer.get("fixes", []))
        out[key] = {"median_s": statistics.median(times), "runs_s": times,
                    "verdict": verdict, "fixes_tried": fixes}
    out["median_s"] = out["verdict"]["median_s"]
    return out


def participant_targets(participant: dict[str, Any]) -> list[dict[str, Any]]:
    """The speed goals participants feel: a verdict within 1 s, with its fixes within 2 s,
    the packet builder's answer within 1 s."""
    targets = []
    fate = participant.get("fate_verdict") or {}
    for key, goal in (("verdict", TARGET_FATE_S), ("with_fixes", TARGET_FATE_FIXES_S)):
        if fate.get("available"):
            value = fate[key]["median_s"]
            targets.append({"target": f"tunlab fate ({key.replace('_', ' ')}) median <= "
                                      f"{goal:g} s", "value": value, "goal": goal,
                            "met": value <= goal})
    send = participant.get("widget_send") or {}
    if send.get("available"):
        targets.append({"target": f"packet builder answer median <= {TARGET_SEND_S:g} s",
                        "value": send["median_s"], "goal": TARGET_SEND_S,
                        "met": send["median_s"] <= TARGET_SEND_S})
    return targets


def time_widget_send(repeats: int = 3) -> dict[str, Any]:
    """Median wall time from the packet builder's Send to its rendered answer (headless)."""
    try:
        from tunlab.course.panels.packet_builder import PacketBuilder
    except ImportError as exc:
        return {"available": False, "note": f"the lab extra is not installed: {exc}"}
    builder = PacketBuilder(src="200.1.2.3", ip_forward=True, rp_filter=1)
    times = []
    for _ in range(repeats):
        started = time.monotonic()
        builder.send.click()
        times.append(time.monotonic() - started)
    report = builder.last_report or {}
    return {"available": True, "median_s": statistics.median(times), "runs_s": times,
            "answer": report.get("drop_reasons")}


def time_notebooks(directory: Path | None = None) -> dict[str, Any]:
    """Execute every lesson notebook top to bottom (nbclient), as a participant would."""
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError as exc:
        return {"available": False, "note": f"the test extra is not installed: {exc}"}
    from tunlab import resources

    paths = (sorted(directory.glob("[0-9][0-9]-*.ipynb")) if directory else
             [resources.on_disk(lesson.notebook) for lesson in resources.lessons()])
    seconds: dict[str, float] = {}
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        started = time.monotonic()
        client.execute()
        seconds[path.stem] = time.monotonic() - started
    return {"available": bool(seconds), "total_s": sum(seconds.values()),
            "per_notebook_s": seconds}


# -- processes ---------------------------------------------------------------------------------
def _wait_ping(ns: Namespace, address: str, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ns.exec(["ping", "-n", "-c1", "-W1", address], check=False).returncode == 0:
            return True
        time.sleep(0.1)
    return False


def tunlab_has_option(option: str, command: str = "server") -> bool:
    """True when ``tunlab COMMAND --help`` lists ``option`` (for example ``--busy-poll``).

    The bench runs the command users run, so it asks that command, not the Python API.
    """
    result = subprocess.run([sys.executable, "-m", "tunlab", command, "--help"],
                            capture_output=True, text=True, timeout=60, check=False)
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", result.stdout) is not None


def ensure_tools(install: bool = True, log: Callable[[str], None] = print) -> dict[str, str]:
    """Check for iperf3, openvpn, wireguard-go and ping; ``apt-get install`` the missing ones
    if allowed.

    Returns ``{tool: version line}``; raises :class:`EnvironmentProblem` if iperf3 or ping stay
    missing (OpenVPN or wireguard-go missing only drops their rows).
    """
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing and install and shutil.which("apt-get"):
        packages = [TOOLS[tool] for tool in missing]
        log(f"installing {', '.join(packages)} with apt-get (the bench's own set-up)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", *packages], env=env,
                       capture_output=True, timeout=600)
    for tool in ("iperf3", "ping"):
        if shutil.which(tool) is None:
            raise EnvironmentProblem(f"{tool} is not installed",
                                     f"apt-get install {TOOLS[tool]}")
    versions = {}
    for tool in ("iperf3", "openvpn", "wireguard-go"):
        argv = [tool, "--version"]
        if shutil.which(tool):
            result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            versions[tool] = (result.stdout or result.stderr).splitlines()[0].strip()
    return versions


# -- the bench lab -----------------------------------------------------------------------------
@dataclass
class Variant:
    """One way across: a name, the address iperf3 and ping aim at, the processes behind it."""

    name: str
    address: str
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)
    note: str = ""

    def cpu_seconds(self) -> float | None:
        """CPU so far of this variant's endpoint processes (None without any)."""
        if not self.processes:
            return None
        try:
            return sum(process_cpu_seconds(p.pid) for p in self.processes)
        except OSError:
            return None


@dataclass
class Loaded:
    """One run under load: the saturating stream, and the round trips measured during it."""

    run: Run
    rtts: list[float]
    lost: int


@dataclass(frozen=True)
class DeviceQueue:
    """The queue in front of one TUN device of the bench lab, read back from the kernel."""

    host: str        # "a" or "b"
    device: str
    txqueuelen: int  # also the size of the TUN device's ring of packets for its reader
    qdisc: str


def queue_summary(queues: Sequence[DeviceQueue]) -> str:
    """One line for the report: the distinct queue settings and how many devices had each."""
    counts: dict[tuple[int, str], int] = {}
    for queue in queues:
        key = (queue.txqueuelen, queue.qdisc)
        counts[key] = counts.get(key, 0) + 1
    return "; ".join(f"txqueuelen {length}, qdisc {qdisc} ({count} devices)"
                     for (length, qdisc), count in sorted(counts.items())) or "none"


def _iperf3_run(stdout: str, stderr: str, address: str) -> Run:
    try:
        doc = json.loads(stdout)
    except ValueError:
        doc = {"error": stderr.strip() or stdout[:200]}
    if "error" in doc:
        raise TunlabError(f"iperf3 to {address} failed: {doc['error']}")
    end = doc["end"]
    return Run(mbps=end["sum_received"]["bits_per_second"] / 1e6,
               retransmits=int(end.get("sum_sent", {}).get("retransmits", 0)),
               seconds=float(end["sum_received"].get("seconds", 0.0)))


class BenchLab:
    """A :class:`TwoHostLab` with one device and endpoint pair per variant, all running at once.

    tunlab variant ``i`` uses ``tun<i>`` with 10.9.<i>.1/24 in ``a`` and .2 in ``b``; OpenVPN
    creates ``ovpn<j>`` with 10.8.<j>.1 and .2 itself; wireguard-go (``wireguard=True``) runs
    10.7.0.1 and .2 on uniquely named devices. An iperf3 server listens in ``b``. Variants that
    cannot run here are left out of :attr:`variants` and listed, with the reason, in
    :attr:`unavailable`.

    ``txqueuelen`` (None: the kernel's default, 500) is set on every TUN device of the lab,
    tunlab's, OpenVPN's and wireguard-go's alike, so that a comparison stays fair;
    :meth:`device_queues` reads back what the devices carry.
    """

    def __init__(self, mtu: int = 1500, *,
                 tunlab: Sequence[str] = (FAST, SIMPLE, FAST_PSK, BUSY),
                 openvpn: Sequence[str] = (OPENVPN, OPENVPN_NODELAY), wireguard: bool = False,
                 busy_poll_usec: int = BUSY_POLL_USEC, txqueuelen: int | None = None,
                 nice: int = DAEMON_NICE, log: Callable[[str], None] = print) -> None:
        if not -20 <= nice <= 19:
            raise TunlabError(f"niceness {nice!r} is outside -20..19", "for example -10")
        if txqueuelen is not None and not 1 <= txqueuelen <= 100_000:
            raise TunlabError(f"txqueuelen {txqueuelen!r} is outside 1-100000",
                              "leave it out for the kernel's default (500)")
        self.mtu = mtu
        self.txqueuelen = txqueuelen
        self.nice = nice
        self.log = log
        self.busy_poll_usec = busy_poll_usec
        self.lab = TwoHostLab(mtu=mtu, tun_mtu=mtu, label="bench")
        self.variants: dict[str, Variant] = {VETH: Variant(VETH, UNDERLAY[1])}
        self.unavailable: dict[str, str] = {}
        self.notes: list[str] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="tunlab-bench-")
        self._iperf: subprocess.Popen[Any] | None = None
        self._wireguard: WireGuardPair | None = None
        self._logs: list[Any] = []
        try:
            self._start(list(tunlab), list(openvpn), wireguard)
        except BaseException:
            self.close()
            raise

    def _start(self, tunlab: list[str], openvpn: list[str], wireguard: bool) -> None:
        lab = self.lab
        self._iperf = lab.b.popen(["iperf3", "-s", "-p", str(IPERF_PORT)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        key = Path(self._tmp.name) / "psk"
        key.write_bytes(BENCH_KEY)
        key.chmod(0o600)
        for index, name in enumerate(tunlab):
            dev = f"tun{index}"
            if name == BUSY and not tunlab_has_option("--busy-poll"):
                self.unavailable[name] = ("not available: `tunlab server --help` has no "
                                          "--busy-poll option in this version")
                continue
            if index:
                for ns, host in ((lab.a, 1), (lab.b, 2)):
                    ns.ip("tuntap", "add", "dev", dev, "mode", "tun")
                    ns.ip("link", "set", dev, "mtu", str(self.mtu), "up")
                    ns.ip("addr", "add", f"10.9.{index}.{host}/24", "dev", dev)
            port = 5555 + index
            extra = ["--simple"] if name == SIMPLE else []
            if name == FAST_PSK:
                extra += ["--psk-file", str(key)]
            if name == BUSY:
                extra += ["--busy-poll", str(self.busy_poll_usec)]
            server = self._endpoint(lab.b, "server", dev, f"{UNDERLAY[1]}:{port}", extra)
            client = self._endpoint(lab.a, "client", dev, f"{UNDERLAY[1]}:{port}", extra)
            self.variants[name] = Variant(name, f"10.9.{index}.2", [server, client])
        if openvpn and shutil.which("openvpn") is None:
            self.notes.append("openvpn is not installed: its rows are missing")
            openvpn = []
        for index, name in enumerate(openvpn):
            self.variants[name] = self._openvpn(name, index, nodelay=name == OPENVPN_NODELAY)
        if wireguard and shutil.which("wireguard-go") is None:
            self.unavailable[WIREGUARD] = ("not available: wireguard-go is not installed "
                                           "(apt-get install wireguard-go)")
        elif wireguard:
            self._wireguard = WireGuardPair(lab.a, lab.b, UNDERLAY, nice=self.nice,
                                            log=self._log_file("wireguard-go.log")).start()
            self.variants[WIREGUARD] = Variant(WIREGUARD, self._wireguard.address,
                                               self._wireguard.processes)
        for variant in self.variants.values():
            if not _wait_ping(lab.a, variant.address):
                raise TunlabError(f"{variant.name}: no ping through to {variant.address}",
                                  f"see the logs in {self._tmp.name}")
        if self.txqueuelen is not None:
            for ns in (lab.a, lab.b):
                for dev in self._tun_devices(ns):
                    ns.ip("link", "set", "dev", dev, "txqueuelen", str(self.txqueuelen))
        wait_listening(lab.b, IPERF_PORT)

    @staticmethod
    def _links(ns: Namespace) -> list[dict[str, Any]]:
        links: list[dict[str, Any]] = json.loads(ns.exec(["ip", "-d", "-j", "link", "show"]).stdout)
        return links

    def _tun_devices(self, ns: Namespace) -> list[str]:
        return [link["ifname"] for link in self._links(ns)
                if link.get("linkinfo", {}).get("info_kind") == "tun"]

    def device_queues(self) -> list[DeviceQueue]:
        """The TUN devices in both hosts (every variant's) with their queue settings, as
        ``ip -d link`` reports them."""
        return [DeviceQueue(host, link["ifname"], int(link.get("txqlen", 0)),
                            str(link.get("qdisc", "?")))
                for host, ns in (("a", self.lab.a), ("b", self.lab.b))
                for link in self._links(ns)
                if link.get("linkinfo", {}).get("info_kind") == "tun"]

    def _log_file(self, name: str) -> Any:
        handle = open(Path(self._tmp.name) / name, "w")  # noqa: SIM115 - closed in close()
        self._logs.append(handle)
        return handle

    def _endpoint(self, ns: Namespace, role: str, dev: str, address: str,
                  extra: list[str]) -> subprocess.Popen[Any]:
        # The command users run: what is measured is `tunlab server` / `tunlab client`.
        where = "--listen" if role == "server" else "--server"
        argv = [*niced(self.nice), sys.executable, "-m", "tunlab", role, "--dev", dev, where,
                address, *extra]
        return ns.popen(argv, stdout=subprocess.DEVNULL,
                        stderr=self._log_file(f"{role}-{dev}.log"))

    def _openvpn(self, name: str, index: int, nodelay: bool) -> Variant:
        lab = self.lab
        dev, port = f"ovpn{index}", 1194 + index
        common = [*niced(self.nice), "openvpn", "--dev", dev, "--dev-type", "tun", "--cipher",
                  "none", "--auth",
                  "none", "--data-ciphers", "none", "--disable-dco", "--tun-mtu",
                  str(self.mtu), "--verb", "3"]
        if nodelay:
            common += ["--socket-flags", "TCP_NODELAY"]
        server = lab.b.popen([*common, "--proto", "tcp-server", "--local", UNDERLAY[1],
                              "--lport", str(port), "--ifconfig", f"10.8.{index}.2",
                              f"10.8.{index}.1"], stdout=self._log_file(f"openvpn-{dev}-b.log"),
                             stderr=subprocess.STDOUT)
        client = lab.a.popen([*common, "--proto", "tcp-client", "--remote", UNDERLAY[1],
                              str(port), "--ifconfig", f"10.8.{index}.1", f"10.8.{index}.2",
                              "--connect-retry", "1"],
                             stdout=self._log_file(f"openvpn-{dev}-a.log"),
                             stderr=subprocess.STDOUT)
        return Variant(name, f"10.8.{index}.2", [server, client])

    def throughput(self, name: str, seconds: float, streams: int = 1) -> Run:
        """One iperf3 run a -> b across variant ``name``, with the endpoints' CPU."""
        variant = self.variants[name]
        before = variant.cpu_seconds()
        run = iperf3(self.lab.a, variant.address, seconds, streams)
        after = variant.cpu_seconds()
        if before is not None and after is not None:
            run.cpu_seconds = after - before
        return run

    def rtts(self, name: str, count: int) -> list[float]:
        """Ping round-trip times (ms) across variant ``name``; lost echoes left out."""
        rtts = ping_rtts(self.lab.a, self.variants[name].address, count, PING_INTERVAL_S)
        return [rtt for rtt in rtts if rtt is not None]

    def loaded(self, name: str, seconds: float) -> Loaded:
        """Ping across variant ``name`` while one iperf3 TCP stream a -> b saturates it.

        The stream gets a quarter of ``seconds`` (at most 1 s) to leave slow start; then ping
        sends an echo every 10 ms until shortly before the stream ends. An echo still missing
        0.5 s after the last one was sent counts as lost.
        """
        variant = self.variants[name]
        ramp = min(1.0, seconds / 4)
        count = max(10, int((seconds - ramp - 0.3) / PING_INTERVAL_S))
        argv = ["iperf3", "-c", variant.address, "-p", str(IPERF_PORT), "-t", f"{seconds:g}",
                "-J", "--connect-timeout", "3000"]
        before = variant.cpu_seconds()
        stream = self.lab.a.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        try:
            time.sleep(ramp)
            rtts = ping_rtts(self.lab.a, variant.address, count, PING_INTERVAL_S, linger=0.5)
            out, err = stream.communicate(timeout=seconds + 30)
        finally:
            if stream.poll() is None:
                stream.kill()
                stream.wait()
        run = _iperf3_run(out, err, variant.address)
        after = variant.cpu_seconds()
        if before is not None and after is not None:
            run.cpu_seconds = after - before
        return Loaded(run, [rtt for rtt in rtts if rtt is not None],
                      sum(rtt is None for rtt in rtts))

    def cpu_per_hour(self, seconds: float) -> dict[str, float]:
        """CPU seconds per wall-clock hour of each variant's endpoints (both ends together)
        while nothing crosses any tunnel for ``seconds``."""
        before = {name: v.cpu_seconds() for name, v in self.variants.items()}
        started = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - started
        rates = {}
        for name, variant in self.variants.items():
            first, now = before[name], variant.cpu_seconds()
            if first is not None and now is not None:
                rates[name] = (now - first) / wall * 3600
        return rates

    def close(self) -> None:
        """Stop every process, remove the namespaces, sockets and temporary files."""
        if self._wireguard is not None:
            self._wireguard.close()
        for variant in self.variants.values():
            for proc in variant.processes:
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    stop_process(proc)
        if self._iperf is not None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                stop_process(self._iperf)
        self.lab.close()
        for handle in self._logs:
            handle.close()
        self._tmp.cleanup()

    def __enter__(self) -> BenchLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the whole benchmark -----------------------------------------------------------------------
@dataclass
class BenchConfig:
    """How long and how much: ``quick`` is for tests (short runs, one repeat)."""

    seconds: float = 5.0
    repeats: int = 3
    ping_count: int = 600
    idle_seconds: float = 30.0
    busy_poll_usec: int = BUSY_POLL_USEC
    nice: int = DAEMON_NICE
    wireguard: bool = True
    loaded: bool = True
    mtus: tuple[int, ...] = (1280, 1500, 9000)
    streams: tuple[int, ...] = (1, 2, 4)
    install: bool = True
    participant: bool = True
    notebooks: bool = True

    @classmethod
    def quick(cls) -> BenchConfig:
        """Short runs for tests: the same shape, seconds instead of minutes."""
        return cls(seconds=1.0, repeats=1, ping_count=40, idle_seconds=2.0, notebooks=False)


def _median_run(runs: list[Run]) -> dict[str, Any]:
    cpu = [r.cpu_per_gbit for r in runs if r.cpu_per_gbit is not None]
    return {"mbps": statistics.median(r.mbps for r in runs),
            "runs_mbps": [round(r.mbps, 1) for r in runs],
            "retransmits": int(statistics.median(r.retransmits for r in runs)),
            "cpu_s_per_gbit": statistics.median(cpu) if cpu else None}


def _rtt_summary(rounds: list[list[float]]) -> dict[str, Any]:
    """Percentiles over all round trips, and the median of each interleaved round: how much
    the machine moved during the run shows in the spread of the rounds."""
    values = [v for r in rounds for v in r]
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50_ms": percentile(values, 50), "p90_ms": percentile(values, 90),
            "p99_ms": percentile(values, 99), "min_ms": min(values),
            "rounds_p50_ms": [round(percentile(r, 50), 4) if r else None for r in rounds]}


def _loaded_summary(name: str, samples: list[Loaded]) -> dict[str, Any]:
    """Median throughput of the loaded runs and percentiles of all their round trips."""
    return {"name": name, **_median_run([s.run for s in samples]),
            "rtt": _rtt_summary([s.rtts for s in samples]),
            "lost": sum(s.lost for s in samples)}


def run_bench(config: BenchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run everything; return the JSON-ready result (also holding the verdict on the targets)."""
    from tunlab.kernel.host import require_privileges

    require_privileges("tunlab bench")
    started = time.monotonic()
    versions = ensure_tools(config.install, log)
    report: dict[str, Any] = {
        "meta": {"date": _dt.datetime.now().isoformat(timespec="seconds"),
                 "kernel": platform.release(), "cpus": os.cpu_count(),
                 "python": platform.python_version(), "tools": versions,
                 "seconds": config.seconds, "repeats": config.repeats,
                 "ping_count": config.ping_count, "underlay": "veth, MTU 1500",
                 "loadavg_before": os.getloadavg()[0]},
        "notes": []}
    with BenchLab(1500, wireguard=config.wireguard, busy_poll_usec=config.busy_poll_usec,
                  nice=config.nice, log=log) as bench:
        report["notes"] += bench.notes
        report["unavailable"] = dict(bench.unavailable)
        report["meta"]["busy_poll_usec"] = config.busy_poll_usec
        report["meta"]["daemon_nice"] = config.nice
        report["meta"]["device_queues"] = queue_summary(bench.device_queues())
        names = list(bench.variants)
        runs: dict[str, list[Run]] = {name: [] for name in names}
        for rep in range(config.repeats):
            for name in names:
                log(f"[{rep + 1}/{config.repeats}] iperf3 {config.seconds:g} s: {name}")
                runs[name].append(bench.throughput(name, config.seconds))
        log(f"idle: {config.idle_seconds:g} s with no traffic, CPU of every endpoint")
        idle_cpu = bench.cpu_per_hour(config.idle_seconds)
        rtts: dict[str, list[list[float]]] = {name: [] for name in names}
        pinged_cpu = {name: [0.0, 0.0] for name in names}  # CPU seconds, wall seconds
        # Many short rounds, variants interleaved: slow drifts of the machine hit all alike.
        chunk = max(10, config.ping_count // 10)
        for _ in range(max(1, config.ping_count // chunk)):
            for name in names:
                variant = bench.variants[name]
                cpu_before, started = variant.cpu_seconds(), time.monotonic()
                rtts[name].append(bench.rtts(name, chunk))
                cpu_after = variant.cpu_seconds()
                if cpu_before is not None and cpu_after is not None:
                    pinged_cpu[name][0] += cpu_after - cpu_before
                    pinged_cpu[name][1] += time.monotonic() - started
        log("ping done")
        loaded: dict[str, list[Loaded]] = {}
        loaded_names = [n for n in (FAST, BUSY, OPENVPN) if n in bench.variants]
        if config.loaded:
            for rep in range(config.repeats):
                for name in loaded_names:
                    log(f"[{rep + 1}/{config.repeats}] under load ({config.seconds:g} s "
                        f"iperf3 + ping): {name}")
                    loaded.setdefault(name, []).append(bench.loaded(name, config.seconds))
        else:
            report["notes"].append("the latency under load was skipped")
        streams: dict[str, dict[int, float]] = {}
        stream_names = [n for n in (VETH, FAST, SIMPLE, OPENVPN) if n in bench.variants]
        for count in config.streams:
            for name in stream_names:
                if count == 1:
                    mbps = statistics.median(r.mbps for r in runs[name])
                else:
                    log(f"iperf3 -P {count}: {name}")
                    mbps = bench.throughput(name, config.seconds, count).mbps
                streams.setdefault(name, {})[count] = mbps
        participant: dict[str, Any] = {}
        if config.participant:
            participant["fate_verdict"] = time_fate_verdict(1 if config.repeats == 1 else 5)
            participant["widget_send"] = time_widget_send(1 if config.repeats == 1 else 3)
    results = []
    for name in names:
        item = {"name": name, **_median_run(runs[name]), "rtt": _rtt_summary(rtts[name])}
        if name in idle_cpu:
            item["cpu_s_per_hour_idle"] = idle_cpu[name]
        cpu, wall = pinged_cpu[name]
        if wall > 0:
            item["cpu_s_per_hour_pinged"] = cpu / wall * 3600
        results.append(item)
    report["results"] = results
    report["loaded"] = [_loaded_summary(name, samples) for name, samples in loaded.items()]
    mtu_rows: dict[str, dict[int, float]] = {
        n: {1500: statistics.median(r.mbps for r in runs[n])}
        for n in (VETH, FAST, SIMPLE) if n in runs}
    for mtu in config.mtus:
        if mtu == 1500:
            continue
        log(f"MTU {mtu}: a fresh lab with veth and tun MTU {mtu}")
        with BenchLab(mtu, tunlab=(FAST, SIMPLE), openvpn=(), nice=config.nice,
                      log=log) as bench:
            for name in mtu_rows:
                mtu_rows[name][mtu] = bench.throughput(name, config.seconds).mbps
    report["mtu_sweep"] = {n: {str(m): v for m, v in sorted(d.items())}
                           for n, d in mtu_rows.items()}
    report["streams_sweep"] = {n: {str(c): v for c, v in d.items()} for n, d in streams.items()}
    if config.participant:
        participant["measure_throughput"] = _participant_throughput(config)
        if config.notebooks:
            log("executing every notebook, as a participant would")
            participant["notebooks"] = time_notebooks()
    report["participant"] = participant
    report["ratios"], report["targets"] = _verdict(results, report["loaded"],
                                                   report["unavailable"])
    report["targets"] += participant_targets(participant)
    report["meta"]["elapsed_s"] = time.monotonic() - started
    report["meta"]["loadavg_after"] = os.getloadavg()[0]
    return report


def _participant_throughput(config: BenchConfig) -> dict[str, Any]:
    """What notebook 08 shows live: measure_throughput on the in-process lab tunnel."""
    seconds = min(config.seconds, 2.0)
    with TwoHostLab(label="benchnb") as lab:
        lab.start_tunnel()
        result = measure_throughput(lab, seconds)
    return {"call": f"measure_throughput(lab, {seconds:g})", "note": "TwoHostLab defaults: "
            "simple path, both endpoints in the notebook's process, tun MTU 1400",
            **result.to_dict()}


def _target(target: str, value: float, goal: float, met: bool, **extra: Any) -> dict[str, Any]:
    return {"target": target, "value": value, "goal": goal, "met": met, **extra}


def _unmeasured(target: str, why: str) -> dict[str, Any]:
    # A target that could not be measured is not met: say so instead of passing quietly.
    return {"target": target, "value": None, "goal": None, "met": False, "note": why}


def _rtt(item: dict[str, Any] | None) -> dict[str, Any] | None:
    """The RTT summary of a result, or None when it holds no round trip."""
    if item is None or not item.get("rtt", {}).get("n"):
        return None
    rtt: dict[str, Any] = item["rtt"]
    return rtt


def _rounds_within(mine: dict[str, Any], theirs: dict[str, Any], factor: float
                   ) -> dict[str, int]:
    """In how many interleaved rounds ``mine``'s median was within ``factor`` x ``theirs``'."""
    pairs = [(a, b) for a, b in zip(mine.get("rounds_p50_ms", []),
                                     theirs.get("rounds_p50_ms", []), strict=False)
             if a is not None and b is not None]
    if not pairs:
        return {}
    return {"rounds_won": sum(a <= factor * b for a, b in pairs), "rounds": len(pairs)}


def _verdict(results: list[dict[str, Any]], loaded: Sequence[dict[str, Any]] = (),
             unavailable: dict[str, str] | None = None,
             ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Ratios and targets from the results (pure: the tests feed it made-up numbers).

    Every target of the issue appears, measured or not; one whose inputs are missing is not
    met, and its note says which variant was missing and why.
    """
    by_name = {r["name"]: r for r in results}
    under_load = {r["name"]: r for r in loaded}
    unavailable = unavailable or {}
    ratios: dict[str, float] = {}
    targets: list[dict[str, Any]] = []
    fast = by_name.get(FAST)
    if fast is None:
        return ratios, targets

    def why(*names: str, rtt: bool = False) -> str:
        problems = []
        for name in names:
            if name not in by_name:
                problems.append(f"{name}: {unavailable.get(name, 'was not measured')}")
            elif rtt and _rtt(by_name[name]) is None:
                problems.append(f"{name}: no echo came back")
        return "; ".join(problems) or "no throughput to compare"

    for name, key in ((OPENVPN, "fast_vs_openvpn"), (OPENVPN_NODELAY, "fast_vs_openvpn_nodelay"),
                      (VETH, "fast_vs_veth"), (SIMPLE, "fast_vs_simple"),
                      (FAST_PSK, "psk_vs_fast")):
        other = by_name.get(name)
        if other and other["mbps"] > 0:
            ratios[key] = (other["mbps"] / fast["mbps"] if key == "psk_vs_fast"
                           else fast["mbps"] / other["mbps"])
    psk, wireguard = by_name.get(FAST_PSK), by_name.get(WIREGUARD)
    if psk and wireguard and wireguard["mbps"] > 0:
        ratios["psk_vs_wireguard"] = psk["mbps"] / wireguard["mbps"]

    # Throughput.
    name = f"{FAST} >= {TARGET_VS_OPENVPN:g}x {OPENVPN}"
    if "fast_vs_openvpn" in ratios:
        value = ratios["fast_vs_openvpn"]
        targets.append(_target(name, value, TARGET_VS_OPENVPN, value >= TARGET_VS_OPENVPN))
    else:
        targets.append(_unmeasured(name, why(OPENVPN)))
    if "fast_vs_veth" in ratios:
        targets.append(_target(f"{FAST} >= {TARGET_VS_VETH:.2f} of {VETH}",
                               ratios["fast_vs_veth"], TARGET_VS_VETH,
                               ratios["fast_vs_veth"] >= TARGET_VS_VETH))

    # Idle latency, against OpenVPN's in the same run (ms).
    ovpn_rtt, fast_rtt = _rtt(by_name.get(OPENVPN)), _rtt(fast)
    for key, goal_factor, label in (("p50_ms", TARGET_IDLE_P50_VS_OPENVPN,
                                     f"<= {TARGET_IDLE_P50_VS_OPENVPN:g}x {OPENVPN}'s"),
                                    ("p99_ms", 1.0, f"<= {OPENVPN}'s")):
        name = f"{FAST} idle RTT {key[:3]} {label}"
        if ovpn_rtt is None or fast_rtt is None:
            targets.append(_unmeasured(name, why(OPENVPN, FAST, rtt=True)))
            continue
        value, goal = fast_rtt[key], goal_factor * ovpn_rtt[key]
        extra = _rounds_within(fast_rtt, ovpn_rtt, goal_factor) if key == "p50_ms" else {}
        targets.append(_target(name, value, goal, value <= goal, unit="ms",
                               detail=f"{value / ovpn_rtt[key]:.2f}x", **extra))
    name = f"{BUSY} idle RTT p50 <= {TARGET_BUSY_P50_VS_OPENVPN:g}x {OPENVPN}'s"
    busy = by_name.get(BUSY)
    busy_rtt = _rtt(busy)
    if ovpn_rtt is None or busy is None or busy_rtt is None:
        targets.append(_unmeasured(name, why(OPENVPN, BUSY, rtt=True)))
    else:
        value, goal = busy_rtt["p50_ms"], TARGET_BUSY_P50_VS_OPENVPN * ovpn_rtt["p50_ms"]
        detail = f"{value / ovpn_rtt['p50_ms']:.2f}x"
        cost = [f"{busy[key]:,.1f} CPU s per hour {what}" for key, what in
                (("cpu_s_per_hour_idle", "idle"),
                 ("cpu_s_per_hour_pinged", "with a ping every 10 ms"))
                if busy.get(key) is not None]
        if cost:
            detail += "; both ends: " + ", ".join(cost)
        targets.append(_target(name, value, goal, value <= goal, unit="ms", detail=detail,
                               **_rounds_within(busy_rtt, ovpn_rtt,
                                                TARGET_BUSY_P50_VS_OPENVPN)))

    # Under load: ping while one iperf3 stream saturates the tunnel.
    fast_loaded, ovpn_loaded = under_load.get(FAST), under_load.get(OPENVPN)
    loaded_rtt = _rtt(fast_loaded)
    for key, goal in (("p50_ms", TARGET_LOADED_P50_MS), ("p99_ms", TARGET_LOADED_P99_MS)):
        name = f"{FAST} under load RTT {key[:3]} <= {goal:g} ms"
        if fast_loaded is None or loaded_rtt is None:
            targets.append(_unmeasured(name, f"{FAST} under load was not measured"))
            continue
        value = loaded_rtt[key]
        targets.append(_target(name, value, goal, value <= goal, unit="ms",
                               detail=f"{fast_loaded.get('lost', 0)} echoes lost"))
    name = f"{FAST} under load >= {TARGET_VS_OPENVPN:g}x {OPENVPN}'s throughput"
    if fast_loaded and ovpn_loaded and ovpn_loaded["mbps"] > 0:
        value = fast_loaded["mbps"] / ovpn_loaded["mbps"]
        ratios["loaded_fast_vs_openvpn"] = value
        targets.append(_target(name, value, TARGET_VS_OPENVPN, value >= TARGET_VS_OPENVPN,
                               unit="x", detail=f"{fast_loaded['mbps']:,.0f} vs "
                               f"{ovpn_loaded['mbps']:,.0f} Mbit/s"))
    else:
        targets.append(_unmeasured(name, f"{FAST} or {OPENVPN} under load was not measured"))

    # Encrypted peers.
    name = f"{FAST_PSK} >= {TARGET_PSK_VS_WIREGUARD:g}x {WIREGUARD}"
    if "psk_vs_wireguard" in ratios:
        value = ratios["psk_vs_wireguard"]
        targets.append(_target(name, value, TARGET_PSK_VS_WIREGUARD,
                               value >= TARGET_PSK_VS_WIREGUARD, unit="x"))
    else:
        targets.append(_unmeasured(name, why(FAST_PSK, WIREGUARD)))
    name = f"{FAST_PSK} >= {TARGET_PSK_VS_FAST:.2f} of {FAST}"
    if "psk_vs_fast" in ratios:
        value = ratios["psk_vs_fast"]
        targets.append(_target(name, value, TARGET_PSK_VS_FAST, value >= TARGET_PSK_VS_FAST))
    else:
        targets.append(_unmeasured(name, why(FAST_PSK)))
    return ratios, targets


# -- output ------------------------------------------------------------------------------------
def describe_target(target: dict[str, Any]) -> str:
    """One line: met or MISSED, the target, the measured value and the goal."""
    mark = "met   " if target["met"] else "MISSED"
    if target.get("value") is None:
        return f"{mark} {target['target']}: {target.get('note', 'not measured')}"
    unit = target.get("unit", "")
    unit = f" {unit}" if unit == "ms" else unit
    line = (f"{mark} {target['target']}: {target['value']:.3f}{unit} "
            f"(goal {target['goal']:.3f}{unit})")
    if target.get("detail"):
        line += f", {target['detail']}"
    if target.get("rounds"):
        line += (f", within the goal in {target['rounds_won']} of {target['rounds']} "
                 "interleaved rounds")
    return line


def _loaded_lines(loaded: list[dict[str, Any]]) -> list[str]:
    if not loaded:
        return []
    lines = ["", f"{'under load (iperf3 + ping)':<27}{'Mbit/s':>9}{'RTT p50':>9}{'p90':>7}"
                 f"{'p99':>7} ms{'lost':>6}"]
    for r in loaded:
        rtt = r["rtt"]
        lat = (f"{rtt['p50_ms']:9.3f}{rtt['p90_ms']:7.3f}{rtt['p99_ms']:7.3f}" if rtt.get("n")
               else f"{'-':>9}{'-':>7}{'-':>7}")
        lines.append(f"{r['name']:<27}{r['mbps']:>9,.0f}{lat}   {r.get('lost', 0):>6}")
    return lines


def _cpu_hour_lines(results: list[dict[str, Any]]) -> list[str]:
    rows = [r for r in results if r.get("cpu_s_per_hour_idle") is not None
            or r.get("cpu_s_per_hour_pinged") is not None]
    if not rows:
        return []
    lines = ["", f"{'CPU s per hour, both ends':<27}{'idle':>9}{'ping every 10 ms':>18}"]
    for r in rows:
        cells = [f"{r[k]:,.1f}" if r.get(k) is not None else "-"
                 for k in ("cpu_s_per_hour_idle", "cpu_s_per_hour_pinged")]
        lines.append(f"{r['name']:<27}{cells[0]:>9}{cells[1]:>18}")
    return lines


def format_table(report: dict[str, Any]) -> str:
    """The results as a plain-text table, the sweeps and the targets below it."""
    lines = [f"{'path':<27}{'Mbit/s':>9}{'runs':>22}{'CPU s/Gbit':>11}{'RTT p50':>9}"
             f"{'p90':>7}{'p99':>7} ms"]
    for r in report["results"]:
        cpu = f"{r['cpu_s_per_gbit']:.3f}" if r.get("cpu_s_per_gbit") is not None else "-"
        rtt = r["rtt"]
        runs = "/".join(f"{v:.0f}" for v in r["runs_mbps"])
        if rtt.get("n"):
            lat = f"{rtt['p50_ms']:9.3f}{rtt['p90_ms']:7.3f}{rtt['p99_ms']:7.3f}"
        else:
            lat = f"{'-':>9}{'-':>7}{'-':>7}"
        lines.append(f"{r['name']:<27}{r['mbps']:>9,.0f}{runs:>22}{cpu:>11}{lat}")
    for name, why in (report.get("unavailable") or {}).items():
        lines.append(f"{name:<27}{why}")
    lines += _loaded_lines(report.get("loaded") or [])
    lines += _cpu_hour_lines(report["results"])
    for title, key, unit in (("link MTU (veth = tun)", "mtu_sweep", "MTU"),
                             ("parallel streams (iperf3 -P)", "streams_sweep", "P")):
        sweep = report.get(key) or {}
        if not sweep:
            continue
        columns = sorted({c for row in sweep.values() for c in row}, key=int)
        lines.append("")
        lines.append(f"{title:<27}" + "".join(f"{unit + ' ' + c:>12}" for c in columns))
        for name, row in sweep.items():
            lines.append(f"{name:<27}" + "".join(
                f"{row[c]:>12,.0f}" if c in row else f"{'-':>12}" for c in columns))
    if report.get("ratios"):
        lines.append("")
        lines.append("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in report["ratios"].items()))
    participant = report.get("participant") or {}
    fate = participant.get("fate_verdict")
    if fate:
        lines.append("tunlab fate, wall clock: " + (
            f"{fate['verdict']['median_s']:.2f} s verdict, {fate['with_fixes']['median_s']:.2f} s"
            f" with {fate['with_fixes']['fixes_tried']} fixes tried"
            if fate.get("available") else fate.get("note", "n/a")))
    send = participant.get("widget_send")
    if send and send.get("available"):
        lines.append(f"packet builder Send to answer: {send['median_s']:.2f} s")
    books = participant.get("notebooks")
    if books and books.get("available"):
        lines.append(f"all {len(books['per_notebook_s'])} notebooks top to bottom: "
                     f"{books['total_s']:.0f} s")
    live = participant.get("measure_throughput")
    if live:
        lines.append(f"measure_throughput(lab, {live['seconds']:g}) in-process: "
                     f"{live['mbps']:,.0f} Mbit/s, mean packet {live['average_packet']:,.0f} B")
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    meta = report.get("meta") or {}
    if meta.get("device_queues"):
        lines.append(f"TUN devices' queues (every variant's): {meta['device_queues']}")
    if "loadavg_before" in meta:
        lines.append(f"load average (1 min): {meta['loadavg_before']:.2f} before, "
                     f"{meta.get('loadavg_after', float('nan')):.2f} after, "
                     f"on {meta.get('cpus')} CPUs")
    lines.append("")
    for target in report.get("targets", []):
        lines.append(describe_target(target))
    return "\n".join(lines)


def _rtt_bars(axis: Any, rows: list[dict[str, Any]], title: str) -> None:
    """p50 and p99 round trip per variant, horizontal bars on a log scale (ms)."""
    rows = [r for r in rows if r.get("rtt", {}).get("n")][::-1]
    positions = range(len(rows))
    for offset, key, color in ((-0.2, "p50_ms", "#4c78a8"), (0.2, "p99_ms", "#f58518")):
        axis.barh([y + offset for y in positions], [r["rtt"][key] for r in rows], 0.4,
                  color=color, label=key[:3])
    axis.set_yticks(list(positions))
    axis.set_yticklabels([r["name"] for r in rows], fontsize=8)
    if rows:
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        axis.set_xscale("log")
        values = [r["rtt"][k] for r in rows for k in ("p50_ms", "p99_ms") if r["rtt"][k] > 0]
        axis.set_xlim(min(values, default=0.01) / 3, max(values, default=1) * 1.5)
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.legend(fontsize=8)
    axis.set_xlabel("ms (ping, log scale)")
    axis.set_title(title, loc="left", fontsize=10)


def write_chart(report: dict[str, Any], path: Path) -> None:
    """Bar charts of the results, the MTU and the streams sweeps and the round trips (idle and
    under load), into a PNG (Agg, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 11))
    canvas = FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, 2)
    ax = fig.add_subplot(grid[0, :])
    names = [r["name"] for r in report["results"]][::-1]
    values = [r["mbps"] for r in report["results"]][::-1]
    colors = ["#e45756" if "OpenVPN" in n else "#999999" if n == VETH else
              "#54a24b" if n == WIREGUARD else "#4c78a8" for n in names]
    bars = ax.barh(names, values, color=colors)
    for bar, value in zip(bars, values, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:,.0f}",
                va="center", fontsize=9)
    ax.set_xlim(0, max(values, default=1) * 1.18)
    ax.set_xlabel("Mbit/s (iperf3, median)")
    meta = report["meta"]
    ax.set_title(f"Throughput a -> b, veth MTU 1500, {meta['seconds']:g} s x "
                 f"{meta['repeats']} (kernel {meta['kernel']}, {meta['cpus']} CPUs)",
                 loc="left", fontsize=11, fontweight="bold")
    for position, (key, label) in enumerate((("mtu_sweep", "link MTU"),
                                             ("streams_sweep", "parallel streams"))):
        sweep = report.get(key) or {}
        axis = fig.add_subplot(grid[1, position])
        columns = sorted({c for row in sweep.values() for c in row}, key=int)
        width = 0.8 / max(len(sweep), 1)
        for i, (name, row) in enumerate(sweep.items()):
            xs = [j + i * width for j in range(len(columns))]
            axis.bar(xs, [row.get(c, 0) for c in columns], width, label=name)
        axis.set_xticks([j + width * (len(sweep) - 1) / 2 for j in range(len(columns))])
        axis.set_xticklabels(columns)
        axis.set_xlabel(label)
        axis.set_ylabel("Mbit/s")
        axis.legend(fontsize=8)
        axis.set_title(f"Throughput by {label}", loc="left", fontsize=10)
    for position, (rows, title) in enumerate((
            ([r for r in report["results"] if r["name"] != VETH], "Round trip, idle"),
            (report.get("loaded") or [], "Round trip under load (one iperf3 stream)"))):
        _rtt_bars(fig.add_subplot(grid[2, position]), rows, title)
    for axis in fig.axes:
        for side in ("top", "right"):
            axis.spines[side].set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.print_png(str(path))


def write_results(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """Write ``bench.json`` and ``bench.png`` into ``directory``; return both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, png_path = directory / "bench.json", directory / "bench.png"
    json_path.write_text(json.dumps(report, indent=1, default=float) + "\n")
    write_chart(report, png_path)
    return json_path, png_path
