"""The benchmark run: every variant measured in turns (round robin, ``repeats`` times, medians
reported), so that the noise of a shared machine hits them alike, plus the timings participants
meet in the notebooks.

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
``tunlab.fate.packet_fate`` verdict and the packet builder's Send. A variant that cannot run
here (no wireguard-go, a tunlab without ``--busy-poll``) is reported as not available, and its
targets as not met.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunlab.bench.rig import (
    BUSY,
    BUSY_POLL_USEC,
    DAEMON_NICE,
    FAST,
    OPENVPN,
    SIMPLE,
    VETH,
    BenchLab,
    Loaded,
    ensure_tools,
    measure_throughput,
    percentile,
    queue_summary,
)
from tunlab.bench.targets import _verdict, participant_targets
from tunlab.lab import TwoHostLab
from tunlab.lab.measure import (
    Run,
)

__all__ = ["BenchConfig", "DEFAULT_RESULTS", "run_bench", "time_fate_verdict", "time_notebooks",
           "time_widget_send"]

DEFAULT_RESULTS = Path("bench") / "results"  # in the folder `make bench` runs from


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
    report = builder.last_report
    return {"available": True, "median_s": statistics.median(times), "runs_s": times,
            "answer": report.drop_reasons if report is not None else None}


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
