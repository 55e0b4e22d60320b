"""What the browser tests share: JupyterLab started the way ``tunlab lab`` starts it (on
loopback, a free port, a known token, the course's settings) on a working copy of the lessons,
headless Chromium driven by Playwright, and the waits a participant does by eye (kernel
connected and idle, Run All finished).

Clean-up is owned here: :func:`running_jupyterlab` shuts the server down, stops any kernel that
outlives it (by pid: only the server's own children) and checks that the lessons' labs went with
their kernels, also when the test failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunlab.cli.course import lab_command as tunlab_lab_command
from tunlab.kernel import netns
from tunlab.runtime import stop_process

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync",
                 "--disable-quic"]


def chromium_path() -> str | None:
    """Debian's ``chromium-headless-shell`` (or ``chromium``), or None when neither is here."""
    for candidate in ("chromium-headless-shell", "chromium"):
        for path in (shutil.which(candidate), f"/usr/bin/{candidate}",
                     f"/usr/lib/chromium/{candidate}"):
            if path and os.access(path, os.X_OK):
                return path
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lab_command(port: int, token: str, root_dir: Path) -> list[str]:
    """``tunlab lab``'s JupyterLab command line, on a test port with a known token."""
    return [*tunlab_lab_command(root_dir, port), f"--IdentityProvider.token={token}"]


@dataclass
class JupyterLab:
    """A running JupyterLab server (see :func:`running_jupyterlab`)."""

    base: str
    token: str
    root_dir: Path
    log: Path
    process: subprocess.Popen[bytes]
    seen_kernels: set[int] = field(default_factory=set)
    """Kernel pids seen while the server ran (the clean-up checks their labs)."""

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}/{path.lstrip('/')}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET", timeout: float = 10) -> Any:
        request = urllib.request.Request(self.url(f"api/{path}"), method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def session(self, notebook: str) -> dict[str, Any] | None:
        """The server's session of ``notebook`` (with its kernel), or None."""
        for s in self.api("sessions"):
            if s["path"].endswith(notebook) and s.get("kernel"):
                return s
        return None

    def descendants(self) -> set[int]:
        """Pids of every process below the server (its kernels and what they started)."""
        return _descendants(self.process.pid)

    def kernel_pids(self) -> set[int]:
        """Pids of the server's direct children: its kernels."""
        return _children(self.process.pid)


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                found |= {int(p) for p in text.split()}
    return found


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo and len(found) < 10_000:
        for child in _children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def lab_namespaces_of(pids: set[int]) -> list[str]:
    """The tunlab namespaces whose names say one of ``pids`` made them."""
    return [n for n in netns.list_lab_namespaces()
            if any(n.startswith(f"{netns.PREFIX}{pid}-") for pid in pids)]


def wait_gone(pids: set[int], timeout: float) -> list[str]:
    """Wait until no namespace of ``pids`` is left; return those still there."""
    deadline = time.monotonic() + timeout
    while lab_namespaces_of(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return lab_namespaces_of(pids)


@contextlib.contextmanager
def running_jupyterlab(root_dir: Path, tmp: Path) -> Iterator[JupyterLab]:
    """JupyterLab on ``root_dir`` with private settings/runtime folders under ``tmp``.

    On exit (also after a failure): shut the server down, SIGTERM then SIGKILL any kernel that
    outlived it, and raise AssertionError when a lesson's lab outlived its kernel (after
    removing it: its owner is dead, so ``netns.cleanup_stale`` takes it).
    """
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(tmp / "user-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
    env.pop("TUNLAB_PRETEND_UNPRIVILEGED", None)
    env.pop("TUNLAB_PRESENTER", None)
    env.pop("TUNLAB_RECORD", None)
    log_path = tmp / "jupyterlab.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(lab_command(port, token, root_dir), env=env, stdout=log,
                               stderr=subprocess.STDOUT, cwd=tmp)
    lab = JupyterLab(f"http://127.0.0.1:{port}", token, root_dir, log_path, process)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                lab.api("status", timeout=2)
                break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("JupyterLab did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.2)
        yield lab
    finally:
        seen = lab.seen_kernels | (lab.kernel_pids() if process.poll() is None else set())
        everything = lab.descendants() if process.poll() is None else set()
        with contextlib.suppress(OSError):
            lab.api("shutdown", method="POST")
        stop_process(process, 30, first=None)  # the shutdown request above ends it
        log.close()
        _stop_leftovers(seen, everything)
    # The kernels shut down, and with them the lessons' labs.
    left = wait_gone(seen, 15)
    if left:
        netns.cleanup_stale()
        raise AssertionError(f"a lesson's lab outlived its kernel: {left}")


def _stop_leftovers(kernels: set[int], everything: set[int]) -> None:
    """SIGTERM (the kernels' clean-up hook runs), then SIGKILL, what the server left."""
    alive = {p for p in everything if Path(f"/proc/{p}").exists()}
    if not alive:
        return
    for pid in sorted(alive & kernels) or sorted(alive):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in alive):
        time.sleep(0.2)
    for pid in alive:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def chromium_page(viewport: tuple[int, int] = (1360, 1250)) -> Iterator[Any]:
    """A Playwright page in headless Chromium at 100 % zoom (device pixel ratio 1)."""
    with chromium_context(viewport) as context:
        yield context.new_page()


@contextlib.contextmanager
def chromium_context(viewport: tuple[int, int] = (1360, 1250)) -> Iterator[Any]:
    """A Playwright browser context (pages share it) in headless Chromium at 100 % zoom."""
    import pytest

    sync_api = pytest.importorskip("playwright.sync_api")
    executable = chromium_path()
    if executable is None:
        pytest.fail("no chromium: apt-get install chromium-headless-shell (or chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": viewport[0],
                                                    "height": viewport[1]},
                                          device_scale_factor=1)
            yield context
        finally:
            browser.close()


def wait_idle(page: Any, timeout: float = 120_000) -> None:
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=timeout)


def wait_kernel_ready(lab: JupyterLab, notebook: str, timeout: float = 120) -> dict[str, Any]:
    """Until the server reports the notebook's kernel started and idle (REST /api/sessions);
    returns the session.

    The page's execution indicator says "idle" before the kernel is connected; Run All in that
    moment asks which kernel to start (seen on a loaded machine).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session = lab.session(notebook)
        if session is not None and session["kernel"].get("execution_state") == "idle":
            lab.seen_kernels |= lab.kernel_pids()
            return session
        time.sleep(0.5)
    raise AssertionError(f"the kernel of {notebook} did not become idle in {timeout:.0f} s")


def run_all_cells(page: Any) -> None:
    """Run > Run All Cells, the way a participant does it (accepting the kernel JupyterLab
    proposes, should it still ask)."""
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    try:
        dialog.wait_for(timeout=3_000)
    except Exception:  # no dialog: the usual case  # noqa: BLE001
        return
    dialog.locator("button.jp-mod-accept").click()


def copy_lessons(target: Path) -> Path:
    """The lessons copied with ``tunlab notebooks DIR`` (never the shipped files)."""
    venv_tunlab = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "tunlab"
    command = [str(venv_tunlab)] if venv_tunlab.exists() else ["tunlab"]
    subprocess.run([*command, "notebooks", str(target)], check=True, capture_output=True,
                   timeout=60)
    return target
