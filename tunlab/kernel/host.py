"""Up-front privilege checks: a user without root hears what to do before anything changes."""

from __future__ import annotations

import os

from tunlab.errors import PrivilegeError

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21

FIX = "run it as root, for example `sudo make lab` or `sudo .venv/bin/tunlab ...`"


def _effective_capabilities() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def has_capability(cap: int) -> bool:
    """True when this process holds capability number ``cap`` in its effective set."""
    if os.environ.get("TUNLAB_PRETEND_UNPRIVILEGED") == "1":
        return False
    return bool(_effective_capabilities() >> cap & 1)


def is_privileged() -> bool:
    """True when the lab can create namespaces and devices (CAP_NET_ADMIN and CAP_SYS_ADMIN)."""
    return has_capability(CAP_NET_ADMIN) and has_capability(CAP_SYS_ADMIN)


def require_privileges(what: str = "this") -> None:
    """Raise :class:`PrivilegeError` naming ``what`` when the process may not configure networks.

    ``TUNLAB_PRETEND_UNPRIVILEGED=1`` makes a root process behave as an unprivileged one, so the
    refusal path can be tested and demonstrated without a second user account.
    """
    if not has_capability(CAP_NET_ADMIN):
        raise PrivilegeError(f"{what} needs root or CAP_NET_ADMIN", FIX)
