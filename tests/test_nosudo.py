"""The "tunlab (no sudo)" kernel, for real: the user ``nobody`` installs the kernel spec, starts
a kernel with it (a user, network and mount namespace) and runs fate and lesson 05 live in it.

Root is needed only to set up, as scripts/test-nonroot.sh does: a world-readable copy of the
tree and a venv from Debian's /usr/bin/python3 in /tmp (the checkout's .venv may live in /root,
which ``nobody`` cannot enter). One copy and venv serve every test of this module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tunlab import doctor, kernelspec

ROOT = Path(__file__).resolve().parent.parent
PY = "/usr/bin/python3"
USER = "nobody"
SETUP_SECONDS = 600
RUN_SECONDS = 240

# Runs as nobody: start the no-sudo kernel (IPC transport: it has its own network namespace),
# then run code (stdin) or a notebook in it; print one JSON object.
DRIVER = r'''
import json, os, sys, tempfile, time
import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient


def manager():
    km = KernelManager(kernel_name="tunlab-nosudo", transport="ipc")
    km.ip = os.path.join(tempfile.mkdtemp(dir=os.environ["HOME"]), "kernel")
    return km


if sys.argv[1] == "code":
    km = manager()
    km.start_kernel()
    kc = km.client()
    try:
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        out = []
        def hook(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))
        reply = kc.execute_interactive(sys.stdin.read(), timeout=200, output_hook=hook)
        print(json.dumps({"status": reply["content"]["status"], "output": "".join(out)}))
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
else:
    path, answer = sys.argv[2], sys.argv[3]
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if "answer" in cell.get("metadata", {}).get("tags", []):
            cell.source = "answer = " + answer
    km = manager()
    client = NotebookClient(nb, km=km, timeout=200, allow_errors=True,
                            resources={"metadata": {"path": os.path.dirname(path)}})
    started = time.monotonic()
    try:
        client.execute()
    finally:  # nbclient leaves a kernel it was given running
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    cells = [{"tags": c.get("metadata", {}).get("tags", []), "outputs": c.get("outputs", [])}
             for c in nb.cells if c.cell_type == "code"]
    state = nb.metadata.get("widgets", {}).get(
        "application/vnd.jupyter.widget-state+json", {}).get("state", {})
    widgets = [m["state"]["value"] for m in state.values()
               if isinstance(m.get("state", {}).get("value"), str)]
    print(json.dumps({"cells": cells, "widgets": widgets,
                      "seconds": round(time.monotonic() - started, 1)}))
'''


@dataclass(frozen=True)
class Setup:
    """The copy for nobody: ``work`` holds src/, venv/, home/ (nobody's HOME)."""

    work: Path

    @property
    def home(self) -> Path:
        return self.work / "home"

    def run(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as nobody with the copy's venv, in nobody's HOME."""
        env = [f"HOME={self.home}", f"TUNLAB_NOSUDO_TUN={self.work / 'tun'}",
               "PYTHONDONTWRITEBYTECODE=1", f"MPLCONFIGDIR={self.home}",
               f"PATH={self.work / 'venv/bin'}:/usr/sbin:/usr/bin:/sbin:/bin"]
        return subprocess.run(["runuser", "-u", USER, "--", "env", "-i", *env, *argv],
                              input=stdin, capture_output=True, text=True, cwd=self.home,
                              timeout=RUN_SECONDS)

    def python(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.work / "venv/bin/python"), *argv, stdin=stdin)


def _userns_allowed() -> str | None:
    """None when nobody may create a user namespace here, else why not."""
    probe = subprocess.run(["runuser", "-u", USER, "--", *kernelspec.UNSHARE, "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode == 0:
        return None
    blocker = doctor.userns_blocker()
    why = blocker[0] if blocker else probe.stderr.strip()
    return f"unprivileged user namespaces are not allowed here: {why}"


@pytest.fixture(scope="module")
def nosudo() -> Iterator[Setup]:
    if shutil.which("runuser") is None or not Path(PY).exists():
        pytest.skip(f"needs runuser and {PY} (Debian's python3-venv)")
    reason = _userns_allowed()
    if reason:
        pytest.skip(reason)
    work = Path(tempfile.mkdtemp(prefix="tunlab-nosudo."))
    try:
        (work / "home").mkdir()
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                "--exclude-standard"], cwd=ROOT, capture_output=True,
                               check=True).stdout.split(b"\0")
        for name in filter(None, files):
            source, target = ROOT / name.decode(), work / "src" / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_symlink():  # like `cp -P`: tunlab/data/scripts links to scripts/
                target.symlink_to(os.readlink(source))
            elif source.is_file():
                shutil.copy2(source, target)
        subprocess.run([PY, "-m", "venv", str(work / "venv")], check=True, timeout=120)
        subprocess.run([str(work / "venv/bin/pip"), "install", "-q", f"{work / 'src'}[lab]"],
                       check=True, timeout=SETUP_SECONDS, capture_output=True)
        (work / "home/driver.py").write_text(DRIVER)
        # This machine's /dev/net/tun may be 0600: nobody gets a node of its own (same device
        # numbers) instead of a change to the host's.
        tun = Path("/dev/net/tun").stat().st_rdev
        subprocess.run(["mknod", "-m", "0600", str(work / "tun"), "c", str(os.major(tun)),
                        str(os.minor(tun))], check=True)
        shutil.copytree(work / "src/notebooks", work / "home/notebooks")
        subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
        subprocess.run(["chown", "-R", USER, str(work / "home"), str(work / "tun")], check=True)
        setup = Setup(work)
        installed = setup.run("tunlab", "kernelspec", "install", "--user")
        assert installed.returncode == 0, installed.stderr
        yield setup
    finally:
        shutil.rmtree(work, ignore_errors=True)


pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_nobody_installs_the_kernel_spec(nosudo):
    spec = nosudo.home / ".local/share/jupyter/kernels/tunlab-nosudo/kernel.json"
    data = json.loads(spec.read_text())
    assert data["display_name"] == "tunlab (no sudo)"
    assert data["argv"][:len(kernelspec.UNSHARE)] == kernelspec.UNSHARE
    assert data["argv"][-2:] == ["-f", "{connection_file}"]
    listed = nosudo.run("jupyter", "kernelspec", "list", "--json")
    assert "tunlab-nosudo" in json.loads(listed.stdout)["kernelspecs"]


def test_doctor_tells_nobody_to_use_the_user_namespace(nosudo):
    result = nosudo.run("tunlab", "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    mode = checks["lab mode"]
    assert mode["ok"] and mode["detail"].startswith("user namespace: not root"), mode
    assert "tunlab kernelspec install" in mode["fix"]
    assert not checks["root / CAP_NET_ADMIN"]["ok"]


def test_the_kernel_is_root_of_its_own_user_namespace(nosudo):
    code = ("import json, os\nfrom tunlab import doctor, privileges\n"
            "print(json.dumps({'uid': os.geteuid(), 'privileged': privileges.is_privileged(),"
            " 'mode': doctor.lab_mode().mode.value,"
            " 'checks': {c.name: c.ok for c in doctor.run_checks()},"
            " 'uid_map': open('/proc/self/uid_map').read().split()}))\n")
    result = nosudo.python(str(nosudo.home / "driver.py"), "code", stdin=code)
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["status"] == "ok", reply["output"]
    inside = json.loads(reply["output"])
    assert inside["uid"] == 0 and inside["privileged"] is True
    assert inside["uid_map"][0] == "0" and inside["uid_map"][1] != "0"  # nobody outside
    assert inside["mode"] == "user namespace"
    assert inside["checks"]["network namespaces"] is True  # `ip netns add` works
    assert inside["checks"]["tracefs drop reasons"] is False


def test_fate_in_the_kernel_says_dropped_from_the_counters(nosudo):
    code = ("import json\nfrom tunlab.fate import packet_fate\n"
            "r = packet_fate('200.1.2.3', '10.0.2.1', proto=253, verify_fixes=False)\n"
            "print(json.dumps(r.to_dict()))\n")
    result = nosudo.python(str(nosudo.home / "driver.py"), "code", stdin=code)
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["status"] == "ok", reply["output"]
    report = json.loads(reply["output"])
    assert report["verdict"] == "dropped", report
    assert "tracefs" not in report["evidence"] and "counters" in report["evidence"]
    assert "tracefs" in report["missing_evidence"]
    assert report["counters"].get("IpInUnknownProtos", 0) >= 1, report["counters"]
    assert report["drop_reasons"] == []


@pytest.mark.xfail(reason="open: lesson 05 in the no-sudo kernel does not finish within the "
                   "driver's 240 s (its earlier cell error, missing fix words without tracefs, "
                   "is fixed; the hang is not yet understood)", strict=False)
def test_lesson_05_runs_live_in_the_kernel(nosudo):
    path = nosudo.home / "notebooks/05-martians-and-rp_filter.ipynb"
    result = nosudo.python(str(nosudo.home / "driver.py"), "notebook", str(path),
                           '"10.0.2.33"')
    assert result.returncode == 0, result.stderr[-3000:]
    cells = json.loads(result.stdout)

    def text(outputs: list[dict]) -> str:
        parts = [o.get("text", "") for o in outputs]
        parts += [o.get("data", {}).get(m, "") for o in outputs for m in ("text/html",
                                                                           "text/plain")]
        return "\n".join(parts)

    every = [o for c in cells for o in c["outputs"]]
    assert not [o for o in every if o.get("output_type") == "error"]
    assert "running with the privileges" in text(every)
    assert "read-only mode" not in text(every)
    (check,) = [c for c in cells if "check" in c["tags"]]
    assert "✔ Correct" in text(check["outputs"]), text(check["outputs"])


@pytest.mark.pure
def test_a_tcp_client_hears_why_it_cannot_reach_the_kernel(tmp_path):
    connection = tmp_path / "kernel.json"
    connection.write_text(json.dumps({"transport": "tcp", "ip": "127.0.0.1"}))
    result = subprocess.run([sys.executable, "-m", "tunlab.kernelspec", "-f", str(connection)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "KernelManager.transport=ipc" in result.stderr


@pytest.mark.pure
def test_doctor_names_ubuntus_apparmor_restriction_and_its_ways_out(tmp_path, monkeypatch):
    # the knobs under test are the fake /proc's; /dev/net/tun is taken as usable (it is 0600
    # on some machines, which lab_mode reports separately)
    monkeypatch.setattr(doctor.os, "access", lambda path, mode: True)
    (tmp_path / "sys/user").mkdir(parents=True)
    (tmp_path / "sys/kernel").mkdir()
    (tmp_path / "sys/user/max_user_namespaces").write_text("63000\n")
    allowed = doctor.lab_mode(tmp_path, privileged=False)
    assert allowed.mode is doctor.Mode.USER_NAMESPACE
    (tmp_path / "sys/kernel/apparmor_restrict_unprivileged_userns").write_text("1\n")
    ubuntu = doctor.lab_mode(tmp_path, privileged=False)
    assert ubuntu.mode is doctor.Mode.RECORDINGS and "AppArmor" in ubuntu.why
    assert "apparmor_restrict_unprivileged_userns=0" in ubuntu.fix and "userns," in ubuntu.fix
    (tmp_path / "sys/kernel/apparmor_restrict_unprivileged_userns").write_text("0\n")
    (tmp_path / "sys/kernel/unprivileged_userns_clone").write_text("0\n")
    debian = doctor.lab_mode(tmp_path, privileged=False)
    assert debian.mode is doctor.Mode.RECORDINGS and "unprivileged_userns_clone" in debian.why
    (tmp_path / "sys/kernel/unprivileged_userns_clone").write_text("1\n")
    (tmp_path / "sys/user/max_user_namespaces").write_text("0\n")
    assert doctor.lab_mode(tmp_path, privileged=False).mode is doctor.Mode.RECORDINGS
    assert doctor.lab_mode(tmp_path, privileged=True).mode is doctor.Mode.ROOT
