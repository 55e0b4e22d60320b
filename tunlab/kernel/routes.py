"""Routing tables and route lookups inside a lab namespace, as ``ip route`` shows them.

Uses ``ip -j`` (JSON) rather than pyroute2 here, because the lesson *is* the ``ip`` command:
the text a learner sees in the notebook is exactly what they will type on their own machine.
"""

from __future__ import annotations

import json
from typing import Any

from tunlab.errors import TunlabError
from tunlab.kernel.netns import Namespace
from tunlab.packet.craft import check_ipv4

__all__ = ["describe_lookup", "route_get", "routes", "routes_text", "why_own_address_loops_back"]


def routes(ns: Namespace, table: str = "main") -> list[dict[str, Any]]:
    """The routes of ``table`` (main, local, or a number) in ``ns``, one dict each."""
    found: list[dict[str, Any]] = json.loads(ns.ip("-j", "-4", "route", "show", "table", table)
                                             or "[]")
    return found


def routes_text(ns: Namespace, table: str = "main") -> str:
    """``ip route show table TABLE``, as text."""
    return ns.ip("-4", "route", "show", "table", table)


def route_get(ns: Namespace, dst: str, src: str | None = None, iif: str | None = None,
              oif: str | None = None) -> dict[str, Any]:
    """The kernel's answer to ``ip route get DST [from SRC] [iif DEV] [oif DEV]``.

    With ``iif`` the lookup is done as for a packet *arriving* on that device (forwarding
    and reverse-path rules apply); otherwise as for a packet this host sends. A lookup the
    kernel refuses comes back as ``{"error": "..."}`` rather than an exception, because the
    refusal is the lesson.
    """
    args = ["-j", "route", "get", check_ipv4(dst, "destination")]
    if src:
        args += ["from", check_ipv4(src, "source")]
    if iif:
        args += ["iif", iif]
    if oif:
        args += ["oif", oif]
    result = ns.exec(["ip", *args], check=False)
    if result.returncode != 0:
        return {"dst": dst, "error": result.stderr.strip().removeprefix("Error: ")}
    answer = json.loads(result.stdout or "[]")
    if not answer:
        raise TunlabError(f"ip route get {dst} gave no answer")
    first: dict[str, Any] = answer[0]
    return first


def describe_lookup(answer: dict[str, Any]) -> str:
    """One sentence on what a :func:`route_get` answer means for the packet."""
    if "error" in answer:
        return f"No route: the kernel refuses ({answer['error']})."
    dst, dev = answer.get("dst"), answer.get("dev")
    kind = answer.get("type", "unicast")
    if kind == "local":
        return (f"{dst} is an address of this host: the packet never leaves; it goes through "
                f"{dev} (loopback) to the local stack, not to any TUN device.")
    if kind in ("unreachable", "prohibit", "blackhole"):
        return f"{dst} is {kind}: the kernel drops what it would send there."
    via = f" via {answer['gateway']}" if answer.get("gateway") else ""
    src = f" with source {answer['prefsrc']}" if answer.get("prefsrc") else ""
    return f"{dst} leaves through {dev}{via}{src}."


def why_own_address_loops_back(ns: Namespace, address: str = "10.0.0.1") -> dict[str, Any]:
    """Why ``ping 10.0.0.1`` (the TUN device's own address) never reaches the tunnel.

    Linux consults the *local* table before *main*: adding 10.0.0.1/24 to mytun also added
    ``local 10.0.0.1 dev mytun table local``, so packets to it are delivered to this host
    through ``lo``. Only other addresses of the subnet (10.0.0.2) are routed into mytun.
    """
    local = [r for r in routes(ns, "local") if r.get("dst") == address]
    own = route_get(ns, address)
    other_address = address.rsplit(".", 1)[0] + ".2"
    other = route_get(ns, other_address)
    return {
        "local_route": local[0] if local else None,
        "own_lookup": own,
        "other_lookup": other,
        "explanation": (
            f"`ip route get {address}` says dev {own.get('dev')}, type "
            f"{own.get('type', 'unicast')}: the local table holds `local {address}`, and "
            f"the kernel looks there first, so the ping is answered by this host itself over "
            f"loopback and the vpn-client never sees it. `ip route get {other_address}` says "
            f"dev {other.get('dev')}: that is the address to ping to send a packet into the "
            f"tunnel."),
    }
