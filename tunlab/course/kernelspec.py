"""The "tunlab (no sudo)" Jupyter kernel: ipykernel inside a user, network and mount namespace.

Where the kernel allows unprivileged user namespaces, ``unshare --user --map-root-user --net
--mount`` gives an ordinary user a "root" that holds CAP_NET_ADMIN and CAP_SYS_ADMIN over
namespaces it creates itself: TUN devices, veth pairs, ``ip netns add``, nft rules and
per-namespace sysctls work, and nothing of the host's network can be touched. What stays out of
reach is global to the host: tracefs (drop reasons) and the kernel log (martian lines).

The kernel runs in its own network namespace, so its loopback is not the client's: the client
must use IPC transport (Unix sockets in the shared file system), e.g. ``jupyter lab
--KernelManager.transport=ipc`` or ``KernelManager(kernel_name=..., transport="ipc")``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tunlab.errors import TunlabError

__all__ = ["DISPLAY_NAME", "install", "IPC_HINT", "kernel_argv", "kernel_json", "KERNEL_NAME",
           "main", "NETNS_DIR", "TUN_DEVICE", "TUN_ENV", "UNSHARE"]

KERNEL_NAME = "tunlab-nosudo"
DISPLAY_NAME = "tunlab (no sudo)"
# No --fork: unshare(1) enters the namespaces and execs the kernel in its own process, so the
# kernel stays the child of the Jupyter client that launched it. ipykernel then notices when
# that client dies (JPY_PARENT_PID is its parent) and exits with it, and the client's signals
# (interrupt, terminate, kill) reach the kernel itself. With --fork, an unshare process that
# ignores SIGTERM sat in between: a kernel whose client died ran on, holding its lab and the
# client's stdout and stderr.
UNSHARE = ["unshare", "--user", "--map-root-user", "--net", "--mount"]
NETNS_DIR = Path("/run/netns")
TUN_DEVICE = Path("/dev/net/tun")
TUN_ENV = "TUNLAB_NOSUDO_TUN"
"""Where /dev/net/tun is 0600 (root only), an admin may give a user a node of their own
(``mknod FILE c 10 200; chown USER FILE``) and name it here; the kernel binds it over
/dev/net/tun in its private mount namespace."""
IPC_HINT = ("start the client with IPC transport: `jupyter lab --KernelManager.transport=ipc`, "
            "or KernelManager(kernel_name=\"tunlab-nosudo\", transport=\"ipc\")")


def kernel_argv(python: str | None = None) -> list[str]:
    """The kernel spec's argv: unshare, then this module's ``inside`` step, then ipykernel."""
    python = python or sys.executable
    return [*UNSHARE, "--", python, "-m", "tunlab.kernelspec", "-f", "{connection_file}"]


def kernel_json(python: str | None = None) -> dict[str, object]:
    """The kernel.json contents (a JSON edge, hence a dict)."""
    return {"argv": kernel_argv(python), "display_name": DISPLAY_NAME, "language": "python",
            "metadata": {"debugger": False, "tunlab": {"mode": "user namespace"}},
            "env": {"TUNLAB_NOSUDO": "1"}}


def install(user: bool = False, sys_prefix: bool = False, prefix: str | None = None,
            python: str | None = None) -> Path:
    """Install the kernel spec; return the directory it went to.

    Default like ``jupyter kernelspec install``: the system-wide data dir; ``user`` for
    ~/.local/share/jupyter, ``sys_prefix`` for this environment (sys.prefix), ``prefix`` for
    any other. Refuses, changing nothing, when two locations are asked for at once.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    if sum((user, sys_prefix, prefix is not None)) > 1:
        raise TunlabError("--user, --sys-prefix and --prefix exclude each other",
                          "choose one place for the kernel spec")
    if sys_prefix:
        prefix = sys.prefix
    with tempfile.TemporaryDirectory() as tmp:
        # the spec directory is copied with its mode: 0700 (mkdtemp's) would hide a
        # system-wide spec from every user but its installer
        Path(tmp).chmod(0o755)
        (Path(tmp) / "kernel.json").write_text(json.dumps(kernel_json(python), indent=1))
        try:
            where = KernelSpecManager().install_kernel_spec(
                tmp, KERNEL_NAME, user=user, prefix=prefix)
        except PermissionError as exc:
            raise TunlabError(f"cannot write the kernel spec: {exc}",
                              "use `tunlab kernelspec install --user` (or --sys-prefix in a "
                              "venv you own)") from exc
    return Path(where)


def _outer_uid() -> str | None:
    """This user's uid outside the user namespace (the uid map's second column)."""
    try:
        fields = Path("/proc/self/uid_map").read_text().split()
    except OSError:
        return None
    return fields[1] if len(fields) >= 3 else None


def _mount(*argv: str) -> None:
    subprocess.run(["mount", *argv], check=True, timeout=10)


def _private_run() -> None:
    """A private tmpfs on /run, so ``ip netns add`` (/run/netns) and tunlab's ownership records
    (/run/tunlab) are writable for this "root"; only this kernel sees it. The user's own
    /run/user/UID (Jupyter's runtime dir on some systems) is bound back in."""
    uid = _outer_uid()
    user_dir = Path(f"/run/user/{uid}") if uid else None
    keep: Path | None = None
    if user_dir is not None and user_dir.is_dir():
        keep = Path(tempfile.mkdtemp(prefix="tunlab-run-"))
        _mount("--bind", str(user_dir), str(keep))
    _mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", "/run")
    NETNS_DIR.mkdir(exist_ok=True)
    if keep is not None and user_dir is not None:
        user_dir.mkdir(parents=True)
        _mount("--move", str(keep), str(user_dir))
        keep.rmdir()
    own_tun = os.environ.get(TUN_ENV)
    if own_tun:
        _mount("--bind", own_tun, str(TUN_DEVICE))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False, timeout=10)


def _inside(connection_file: str) -> None:
    """Inside the namespaces: check the transport, prepare /run/netns, become ipykernel (same
    process, so the client that launched unshare stays the kernel's parent)."""
    transport = json.loads(Path(connection_file).read_text()).get("transport", "tcp")
    if transport != "ipc":
        print(f"tunlab (no sudo): this kernel has its own network namespace, so a {transport} "
              f"connection from the client cannot reach it; {IPC_HINT}", file=sys.stderr)
        raise SystemExit(2)
    _private_run()
    os.environ["TUNLAB_NOSUDO"] = "1"
    os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", "-f",
                              connection_file])


def main(argv: list[str]) -> int:
    """The kernel spec's argv after ``python -m tunlab.kernelspec``, already inside the
    namespaces: ``-f CONNECTION_FILE``."""
    if len(argv) != 2 or argv[0] != "-f":
        print("usage: python -m tunlab.kernelspec -f CONNECTION_FILE (started by the "
              "'tunlab (no sudo)' kernel spec inside unshare)", file=sys.stderr)
        return 2
    _inside(argv[1])
    return 0
