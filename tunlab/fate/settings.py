"""The settings the kernel actually applies to a packet arriving on one device.

Several ``net.ipv4.conf`` switches exist for ``all`` and for each device, and the kernel
combines them differently (include/linux/inetdevice.h): rp_filter takes the larger of the two
(``IN_DEV_MAXCONF``), log_martians and accept_local are on when either is (``IN_DEV_ORCONF``),
and forwarding is the arriving device's own value (``IN_DEV_FORWARD``; writing
``net.ipv4.ip_forward`` sets it on every device). Explaining a drop with the ``all`` value
alone is how a tool ends up telling a participant something false.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunlab.kernel.netns import Namespace

__all__ = ["Combined", "EffectiveSettings", "read_effective"]

_CONF = Path("/proc/sys/net/ipv4/conf")


@dataclass(frozen=True)
class Combined:
    """One setting as the kernel applies it: the value, and the inputs it came from."""

    value: int
    all: int
    device: int
    rule: str   # "max", "or", "device"

    def describe(self, key: str, dev: str) -> str:
        """``rp_filter=1 (max of all=0 and mytun2=1)``."""
        if self.rule == "device":
            return f"{key}={self.value} (the value of {dev})"
        words = {"max": "the larger of", "or": "on if either of"}[self.rule]
        return (f"{key}={self.value} ({words} net.ipv4.conf.all.{key}={self.all} and "
                f"net.ipv4.conf.{dev}.{key}={self.device})")


@dataclass(frozen=True)
class EffectiveSettings:
    """What the kernel applies to a packet that arrives on ``device``."""

    device: str
    ip_forward: int
    forwarding: Combined        # the arriving device's own value
    rp_filter: Combined         # max(all, device)
    log_martians: Combined      # all OR device
    accept_local: Combined      # all OR device
    route_localnet: Combined    # all OR device
    icmp_echo_ignore_broadcasts: int
    ipv6_forwarding: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"device": self.device, "ip_forward": self.ip_forward,
                               "icmp_echo_ignore_broadcasts": self.icmp_echo_ignore_broadcasts}
        for key in ("forwarding", "rp_filter", "log_martians", "accept_local",
                    "route_localnet"):
            combined: Combined = getattr(self, key)
            out[key] = combined.value
            out.setdefault("sources", {})[key] = combined.describe(key, self.device)
            out.setdefault("inputs", {})[key] = {"all": combined.all,
                                                 self.device: combined.device}
        if self.ipv6_forwarding is not None:
            out["ipv6_forwarding"] = self.ipv6_forwarding
        return out


def _read_int(path: Path, default: int = 0) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def _combine(key: str, dev: str, rule: str) -> Combined:
    all_value = _read_int(_CONF / "all" / key)
    dev_value = _read_int(_CONF / dev / key)
    if rule == "max":
        value = max(all_value, dev_value)
    elif rule == "or":
        value = int(bool(all_value or dev_value))
    else:
        value = dev_value
    return Combined(value=value, all=all_value, device=dev_value, rule=rule)


def read_effective(ns: Namespace, dev: str) -> EffectiveSettings:
    """The settings applied to a packet arriving on ``dev`` inside ``ns``."""

    def read() -> EffectiveSettings:
        return EffectiveSettings(
            device=dev,
            ip_forward=_read_int(Path("/proc/sys/net/ipv4/ip_forward")),
            forwarding=_combine("forwarding", dev, "device"),
            rp_filter=_combine("rp_filter", dev, "max"),
            log_martians=_combine("log_martians", dev, "or"),
            accept_local=_combine("accept_local", dev, "or"),
            route_localnet=_combine("route_localnet", dev, "or"),
            icmp_echo_ignore_broadcasts=_read_int(
                Path("/proc/sys/net/ipv4/icmp_echo_ignore_broadcasts"), 1),
            # IPv6 forwards when all.forwarding is on, or (6.17+) the arrival device has
            # force_forwarding; a device's own `forwarding` only picks host or router behaviour.
            ipv6_forwarding=int(bool(
                _read_int(Path("/proc/sys/net/ipv6/conf/all/forwarding"), 0)
                or _read_int(Path(f"/proc/sys/net/ipv6/conf/{dev}/force_forwarding"), 0))),
        )

    return ns.run(read)
