"""Lesson 00's doctor panel: what runs here and what needs root, re-run with a button."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as w

from .base import LabPanel


def _basic_checks() -> list[dict[str, Any]]:
    import os
    import shutil

    from ...privileges import is_privileged

    checks = [{"name": "root / CAP_NET_ADMIN", "ok": is_privileged(),
               "detail": "needed for namespaces, TUN devices, routes",
               "fix": "start the lab with `sudo make lab`"},
              {"name": "/dev/net/tun", "ok": os.path.exists("/dev/net/tun"),
               "detail": "the TUN driver", "fix": "sudo modprobe tun"},
              {"name": "tracefs", "ok": os.path.isdir("/sys/kernel/tracing"),
               "detail": "kernel drop tracing (skb:kfree_skb)",
               "fix": "sudo mount -t tracefs nodev /sys/kernel/tracing"}]
    for tool, pkg in (("ip", "iproute2"), ("ping", "iputils-ping"), ("nft", "nftables"),
                      ("tcpdump", "tcpdump"), ("iperf3", "iperf3"), ("nstat", "iproute2")):
        checks.append({"name": f"{tool} installed", "ok": shutil.which(tool) is not None,
                       "detail": "", "fix": f"apt-get install {pkg}"})
    return checks


def normalize_check(check: Any) -> dict[str, Any]:
    """A doctor check (object or dict) as ``{"name", "ok", "detail", "fix"}``."""
    if isinstance(check, Mapping):
        get = check.get
    else:
        def get(key: str, default: Any = None) -> Any:
            return getattr(check, key, default)
    ok = get("ok")
    if ok is None:
        status = str(get("status", "")).lower()
        ok = status in ("ok", "pass", "passed", "true")
    return {"name": str(get("name", "") or get("title", "")), "ok": bool(ok),
            "detail": str(get("detail", "") or get("message", "") or ""),
            "fix": str(get("fix", "") or "")}


def run_doctor() -> list[dict[str, Any]]:
    """:func:`tunlab.doctor.run_checks` when available (else a basic set), normalised."""
    try:
        from ...doctor import run_checks
    except ImportError:
        return _basic_checks()
    result = run_checks()
    if isinstance(result, Mapping) and "checks" in result:
        result = result["checks"]
    return [normalize_check(c) for c in result]


class DoctorPanel(LabPanel, w.VBox):
    """Lesson 00: the doctor's checks as a table, re-run with a button.

    Headless: ``panel.rerun.click()``, then ``panel.last_checks``.
    """

    def __init__(self, checks_fn: Callable[[], list[dict[str, Any]]] | None = None,
                 lesson: Any = None) -> None:
        self.checks_fn = checks_fn or run_doctor
        self.last_checks: list[dict[str, Any]] = []
        self.rerun = w.Button(description="run the checks again", icon="refresh")
        self.table = w.HTML()
        self._setup_panel(lesson)
        self.rerun.on_click(self.guarded(lambda _b: self.run()))
        super().__init__([self.rerun, self.table, self.bar])
        self.run()

    def lab_rebuilt(self) -> None:
        """The checks do not depend on the lab."""

    def reset_view(self) -> None:
        self.run()

    def run(self) -> list[dict[str, Any]]:
        """Run the checks and show them."""
        self.last_checks = self.checks_fn()
        rows = []
        for c in self.last_checks:
            mark = ('<span style="color:#2ca02c">✔</span>' if c["ok"] else
                    '<span style="color:#d62728">✘</span>')
            fix = "" if c["ok"] else html.escape(c["fix"])
            rows.append(f"<tr><td>{mark}</td><td>{html.escape(c['name'])}</td>"
                        f"<td>{html.escape(c['detail'])}</td><td><code>{fix}</code></td></tr>")
        ok = sum(c["ok"] for c in self.last_checks)
        self.table.value = (f"<p><b>{ok} of {len(self.last_checks)} checks pass</b></p>"
                            '<table><tr><th></th><th>check</th><th>what for</th><th>fix</th></tr>'
                            + "".join(rows) + "</table>")
        return self.last_checks
