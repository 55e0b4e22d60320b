"""The bench's rig: two namespaces joined by a veth, every tunnel variant started on its own
devices (tunlab's endpoints as processes, OpenVPN, wireguard-go), and the measurements one
variant takes (throughput, round trips, under load, CPU).

Each tunnel endpoint is its own process, the command users run (``tunlab server`` / ``tunlab
client`` in the namespace), so that the two ends do not share one interpreter lock, and so that
the CPU each costs can be read from ``/proc/<pid>/stat``. :func:`measure_throughput` is also
the small live measurement for notebooks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
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
    wait_listening,
)
from tunlab.runtime import stop_process

__all__ = ["BENCH_KEY", "BenchLab", "BUSY", "BUSY_POLL_USEC", "DAEMON_NICE", "DeviceQueue",
           "ensure_tools", "FAST", "FAST_PSK", "Loaded", "measure_throughput", "OPENVPN",
           "OPENVPN_NODELAY", "percentile", "PING_INTERVAL_S", "process_cpu_seconds",
           "queue_summary", "SIMPLE", "Throughput", "TOOLS", "tunlab_has_option", "Variant",
           "VETH", "WIREGUARD"]

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
            stop_process(stream, first=signal.SIGKILL)
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
