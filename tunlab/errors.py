"""Errors that carry a fix: every failure a user can meet says what to do about it."""

from __future__ import annotations

__all__ = ["DeviceMissingError", "EnvironmentProblem", "InvalidPacketError", "PrivilegeError",
           "TunlabError"]


class TunlabError(Exception):
    """A failure the user can act on. ``fix`` says how; the CLI exits with code 2."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} ({self.fix})" if self.fix else self.message


class PrivilegeError(TunlabError):
    """The lab needs root or CAP_NET_ADMIN and does not have it."""


class DeviceMissingError(TunlabError):
    """A TUN device the caller wanted to attach to does not exist."""


class EnvironmentProblem(TunlabError):
    """Something the kernel or the machine lacks (no /dev/net/tun, no tracefs, no tool)."""


class InvalidPacketError(TunlabError):
    """A buffer that is not a well-formed IP packet; it is never written to a device."""
