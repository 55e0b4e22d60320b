"""The bench's targets, each judged from one run's results: ratios against OpenVPN, the veth and
wireguard-go measured side by side, latency idle and under load, and the participants' timings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunlab.bench.rig import BUSY, FAST, FAST_PSK, OPENVPN, OPENVPN_NODELAY, SIMPLE, VETH, WIREGUARD

__all__ = ["describe_target", "participant_targets", "TARGET_BUSY_P50_VS_OPENVPN",
           "TARGET_FATE_FIXES_S", "TARGET_FATE_S", "TARGET_IDLE_P50_VS_OPENVPN",
           "TARGET_LOADED_P50_MS", "TARGET_LOADED_P99_MS", "TARGET_PSK_VS_FAST",
           "TARGET_PSK_VS_WIREGUARD", "TARGET_SEND_S", "TARGET_VS_OPENVPN", "TARGET_VS_VETH"]

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
