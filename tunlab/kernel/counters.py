"""The kernel's packet counters, one reader for each file: ``ip -s link`` (/proc/net/dev),
``nstat`` (/proc/net/snmp, netstat, snmp6) and /proc/net/stat/rt_cache; and their deltas.

Present on every kernel, also those without drop reasons or tracefs. Read from a thread inside
the lab's namespace through /proc/thread-self/net.
"""

from __future__ import annotations

from pathlib import Path

from tunlab.kernel.netns import Namespace

__all__ = ["counter_delta", "link_counters", "rt_cache_counters", "snapshot_counters",
           "snmp6_counters", "snmp_counters"]

_DEV_FIELDS = {"rx": ("bytes", "packets", "errors", "dropped", "over_errors", "frame_errors",
                      "compressed", "multicast"),
               "tx": ("bytes", "packets", "errors", "dropped", "fifo_errors", "collisions",
                      "carrier_errors", "compressed")}


def _parse_dev(text: str) -> dict[str, int]:
    """/proc/net/dev as ``DEV.rx_dropped``... (the names ``ip -s -j link`` uses)."""
    counters: dict[str, int] = {}
    for line in text.splitlines()[2:]:
        name, _, numbers = line.partition(":")
        values = numbers.split()
        if len(values) < 16:
            continue
        for i, key in enumerate(_DEV_FIELDS["rx"]):
            counters[f"{name.strip()}.rx_{key}"] = int(values[i])
        for i, key in enumerate(_DEV_FIELDS["tx"]):
            counters[f"{name.strip()}.tx_{key}"] = int(values[8 + i])
    return counters


def _parse_snmp(text: str) -> dict[str, int]:
    """/proc/net/snmp or netstat (header line, value line per group) as nstat names them."""
    counters: dict[str, int] = {}
    lines = text.splitlines()
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        group, _, names = header.partition(":")
        for name, value in zip(names.split(), values.partition(":")[2].split(), strict=False):
            if value.lstrip("-").isdigit():
                counters[group + name] = int(value)
    return counters


def _read_proc_net(ns: Namespace, files: tuple[str, ...]) -> dict[str, str]:
    # /proc/net is /proc/self/net, the namespace of the process's main thread; a thread inside
    # the lab's namespace sees its own through /proc/thread-self/net.
    def read() -> dict[str, str]:
        texts = {}
        for name in files:
            try:
                texts[name] = (Path("/proc/thread-self/net") / name).read_text()
            except OSError:
                texts[name] = ""
        return texts

    return ns.run(read)


def link_counters(ns: Namespace) -> dict[str, int]:
    """``ip -s link`` for every device in ``ns``: ``DEV.rx_dropped``, ``DEV.tx_packets``..."""
    return _parse_dev(_read_proc_net(ns, ("dev",))["dev"])


def snmp_counters(ns: Namespace, netstat: bool = True) -> dict[str, int]:
    """``nstat``: the namespace's SNMP counters (IpInAddrErrors, UdpInDatagrams...) and, unless
    ``netstat=False``, its netstat ones (TcpExt...)."""
    files = ("snmp", "netstat") if netstat else ("snmp",)
    texts = _read_proc_net(ns, files)
    return {k: v for name in files for k, v in _parse_snmp(texts[name]).items()}


def _parse_snmp6(text: str, prefix: str = "") -> dict[str, int]:
    counters = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counters[prefix + parts[0]] = int(parts[1])
    return counters


def snmp6_counters(ns: Namespace, per_device: bool = False) -> dict[str, int]:
    """/proc/net/snmp6 of ``ns``: Ip6InNoRoutes, Icmp6OutPktTooBigs, Udp6NoPorts...

    With ``per_device`` also each device's own counters (/proc/net/dev_snmp6) as
    ``DEV.Ip6InReceives``. Read from a thread inside ``ns`` through /proc/thread-self:
    /proc/net is /proc/self/net, which shows the namespace of the process's main thread, not
    of the thread reading it.
    """
    def read() -> dict[str, int]:
        base = Path("/proc/thread-self/net")
        try:
            counters = _parse_snmp6((base / "snmp6").read_text())
        except OSError:  # IPv6 disabled in this kernel
            return {}
        try:
            devices = sorted((base / "dev_snmp6").iterdir()) if per_device else []
        except OSError:
            devices = []
        for device in devices:
            try:
                counters.update(_parse_snmp6(device.read_text(), f"{device.name}."))
            except OSError:  # the device went away meanwhile
                continue
        return counters

    return ns.run(read)


def rt_cache_counters() -> dict[str, int]:
    """/proc/net/stat/rt_cache summed over CPUs (in_martian_src, in_no_route...).

    These counters are global to the machine, not per namespace.
    """
    try:
        lines = Path("/proc/net/stat/rt_cache").read_text().split("\n")
    except OSError:
        return {}
    header = lines[0].split()
    totals = dict.fromkeys(header, 0)
    for line in lines[1:]:
        for key, value in zip(header, line.split(), strict=False):
            totals[key] += int(value, 16)
    totals.pop("entries", None)
    return {f"rt_cache.{k}": v for k, v in totals.items()}


def snapshot_counters(ns: Namespace) -> dict[str, int]:
    """Every counter we know of, for the namespace ``ns``."""
    return {**link_counters(ns), **snmp_counters(ns), **snmp6_counters(ns),
            **rt_cache_counters()}


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Counters that changed, with their change (only non-zero deltas)."""
    return {k: after[k] - before.get(k, 0) for k in sorted(after)
            if after[k] - before.get(k, 0) != 0}
