"""Kernel settings (sysctls) per network namespace: read, set, and put back.

``net.*`` sysctls are per namespace: /proc/sys/net shows the values of the namespace of the
thread that opens the file, so these functions read and write from a thread inside the lab's
namespace (``Namespace.run``). They refuse to work without a namespace: the lab never changes
the host's own settings.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Mapping
from pathlib import Path

from tunlab.errors import TunlabError
from tunlab.kernel.netns import Namespace

__all__ = ["get", "parse_assignments", "set", "SysctlChanges"]

_KEY = re.compile(r"^[a-z0-9_]+(\.[A-Za-z0-9_\-]+)+$")


def _path(key: str) -> Path:
    if not _KEY.match(key) or ".." in key:
        raise TunlabError(f"{key!r} is not a sysctl name",
                          "spell it as sysctl does, e.g. net.ipv4.conf.all.rp_filter")
    if not key.startswith("net."):
        raise TunlabError(f"{key} is not a per-namespace (net.*) setting",
                          "the lab only changes net.* settings inside its own namespace")
    return Path("/proc/sys") / key.replace(".", "/")


def _require(ns: Namespace | None) -> Namespace:
    if ns is None:
        raise TunlabError("refusing to change the host's own settings",
                          "pass the lab's namespace (lab.ns)")
    return ns


def get(ns: Namespace, key: str) -> str:
    """The value of ``key`` (as ``sysctl -n`` prints it) inside ``ns``."""
    path = _path(key)

    def read() -> str:
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            raise TunlabError(f"no such sysctl: {key}",
                              "check the spelling; `sysctl -a | grep NAME` lists them") from None

    return _require(ns).run(read)


def _refusal_fix(code: int | None) -> str:
    """What to do about a refused sysctl write, by the kernel's reason."""
    if code == errno.EROFS:
        return ("/proc/sys is mounted read-only here (a container without its own /proc/sys): "
                "run the container with --security-opt unmask=/proc/sys, see "
                "docs/instructor-guide.md")
    if code in (errno.EPERM, errno.EACCES):
        return ("this needs CAP_NET_ADMIN in the lab's namespace: run as root, or in the "
                "no-sudo kernel")
    return "check the allowed values of this setting"


def set(ns: Namespace, key: str, value: str | int) -> str:  # noqa: A001 - mirrors `sysctl -w`
    """Set ``key`` to ``value`` inside ``ns``; return the previous value."""
    path = _path(key)

    def write() -> str:
        try:
            old = path.read_text().strip()
        except FileNotFoundError:
            raise TunlabError(f"no such sysctl: {key}",
                              "check the spelling; `sysctl -a | grep NAME` lists them") from None
        try:
            path.write_text(f"{value}\n")
        except OSError as exc:
            raise TunlabError(f"the kernel refused {key}={value}: {exc.strerror}",
                              _refusal_fix(exc.errno)) from exc
        return old

    return _require(ns).run(write)


class SysctlChanges:
    """Apply several settings in a namespace and put the old values back on exit."""

    def __init__(self, ns: Namespace, settings: Mapping[str, str | int]) -> None:
        self.ns = _require(ns)
        self.settings = dict(settings)
        self.previous: dict[str, str] = {}

    def apply(self) -> SysctlChanges:
        for key in self.settings:
            _path(key)  # validate every name before changing anything
        try:
            for key, value in self.settings.items():
                old = set(self.ns, key, value)
                self.previous.setdefault(key, old)
        except BaseException:
            self.restore()
            raise
        return self

    def restore(self) -> None:
        """Put every changed setting back (idempotent)."""
        for key, value in reversed(list(self.previous.items())):
            set(self.ns, key, value)
        self.previous.clear()

    def __enter__(self) -> SysctlChanges:
        return self.apply()

    def __exit__(self, *exc: object) -> None:
        self.restore()


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """``["net.ipv4.ip_forward=1", ...]`` (as given to ``--set``) as a dict; validated."""
    settings: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not value.strip():
            raise TunlabError(f"{item!r} is not KEY=VALUE", "write e.g. net.ipv4.ip_forward=1")
        _path(key.strip())
        settings[key.strip()] = value.strip()
    return settings
