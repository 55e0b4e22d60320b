"""The host as the lab finds it: privileges (checked up front, so a user without root hears what
to do before anything changes) and user namespaces (are we in one, may we make one)."""

from __future__ import annotations

import os
from pathlib import Path

from tunlab.errors import PrivilegeError

__all__ = ["AA_RESTRICT", "AA_WAYS_OUT", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "FIX", "has_capability",
           "in_user_namespace", "is_privileged", "PROC", "require_privileges", "userns_blocker"]

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


PROC = Path("/proc")


AA_RESTRICT = "sys/kernel/apparmor_restrict_unprivileged_userns"


AA_WAYS_OUT = ("Ubuntu 23.10+/24.04 restrict unprivileged user namespaces with AppArmor; an "
               "admin can allow them for the lab with an AppArmor profile for /usr/bin/unshare "
               "that has `userns,` (see docs/no-sudo.md), or for everyone with `sudo sysctl "
               "kernel.apparmor_restrict_unprivileged_userns=0`")


def _read(proc: Path, name: str) -> str | None:
    try:
        return (proc / name).read_text().strip()
    except OSError:
        return None


def in_user_namespace(proc: Path = PROC) -> bool:
    """True inside a user namespace other than the host's (its uid map is not the identity)."""
    uid_map = _read(proc, "self/uid_map")
    return uid_map is not None and uid_map.split() != ["0", "0", "4294967295"]


def userns_blocker(proc: Path = PROC) -> tuple[str, str] | None:
    """Why an unprivileged user may not create a user namespace here (reason, fix), or None.

    Reads the knobs the kernel and distributions document: Debian's
    ``kernel.unprivileged_userns_clone`` (where it exists), ``user.max_user_namespaces`` and
    Ubuntu's ``kernel.apparmor_restrict_unprivileged_userns``.
    """
    clone = _read(proc, "sys/kernel/unprivileged_userns_clone")
    if clone == "0":
        return ("kernel.unprivileged_userns_clone is 0",
                "an admin runs `sudo sysctl kernel.unprivileged_userns_clone=1`")
    limit = _read(proc, "sys/user/max_user_namespaces")
    if limit is None:
        return ("this kernel has no user namespaces (no /proc/sys/user/max_user_namespaces)",
                "a kernel built with CONFIG_USER_NS (every distribution kernel)")
    if limit == "0":
        return ("user.max_user_namespaces is 0",
                "an admin runs `sudo sysctl user.max_user_namespaces=15000`")
    if _read(proc, AA_RESTRICT) == "1":
        return ("kernel.apparmor_restrict_unprivileged_userns is 1 (Ubuntu's AppArmor "
                "restriction)", AA_WAYS_OUT)
    return None
