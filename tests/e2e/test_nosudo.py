"""The "tunlab (no sudo)" kernel, for real: the user ``nobody`` installs the kernel spec, starts
a kernel with it (a user, network and mount namespace) and runs fate and lesson 05 live in it.

Root is needed only to set up, as scripts/test-nonroot.sh does: a world-readable copy of the
tree and a venv from Debian's /usr/bin/python3 in /tmp (the checkout's .venv may live in /root,
which ``nobody`` cannot enter). One copy and venv serve every test of this module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_notebooks import ANSWERS

from tunlab.course import kernelspec
from tunlab.fate.report import FateReport
from tunlab.kernel import doctor

ROOT = Path(__file__).resolve().parents[2]
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
LESSONS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))


@pytest.mark.usefixtures("root")
def test_nobody_installs_the_kernel_spec(nosudo):
    spec = nosudo.home / ".local/share/jupyter/kernels/tunlab-nosudo/kernel.json"
    data = json.loads(spec.read_text())
    assert data["display_name"] == "tunlab (no sudo)"
    assert data["argv"][:len(kernelspec.UNSHARE)] == kernelspec.UNSHARE
    assert data["argv"][-2:] == ["-f", "{connection_file}"]
    listed = nosudo.run("jupyter", "kernelspec", "list", "--json")
    assert "tunlab-nosudo" in json.loads(listed.stdout)["kernelspecs"]


@pytest.mark.usefixtures("root")
def test_doctor_tells_nobody_to_use_the_user_namespace(nosudo):
    result = nosudo.run("tunlab", "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    mode = checks["lab mode"]
    assert mode["ok"] and mode["detail"].startswith("user namespace: not root"), mode
    assert "tunlab kernelspec install" in mode["fix"]
    assert not checks["root / CAP_NET_ADMIN"]["ok"]


@pytest.mark.usefixtures("root")
def test_the_kernel_is_root_of_its_own_user_namespace(nosudo):
    code = ("import json, os\nfrom tunlab.kernel import doctor, host\n"
            "print(json.dumps({'uid': os.geteuid(), 'privileged': host.is_privileged(),"
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


@pytest.mark.usefixtures("root")
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


@dataclass(frozen=True)
class LessonRun:
    """One lesson executed top to bottom in the no-sudo kernel (errors kept, not raised)."""

    cells: list[dict]
    widgets: list[str]      # the final value of every widget with a text value (HTML panels)
    seconds: float

    def outputs(self, tag: str | None = None) -> list[dict]:
        return [o for c in self.cells if tag is None or tag in c["tags"] for o in c["outputs"]]

    def text(self, tag: str | None = None) -> str:
        outputs = self.outputs(tag)
        parts = [o.get("text", "") for o in outputs]
        parts += [o.get("data", {}).get(m, "") for o in outputs
                  for m in ("text/html", "text/plain")]
        return "\n".join("".join(p) if isinstance(p, list) else p for p in parts)

    @property
    def errors(self) -> list[str]:
        return [f"{o['ename']}: {o['evalue']}" for o in self.outputs()
                if o.get("output_type") == "error"]


_runs: dict[str, LessonRun] = {}


def _lesson(nosudo: Setup, stem: str) -> LessonRun:
    """Run lesson ``stem`` once per module (later tests look at the same run)."""
    if stem not in _runs:
        path = nosudo.home / "notebooks" / f"{stem}.ipynb"
        result = nosudo.python(str(nosudo.home / "driver.py"), "notebook", str(path),
                               ANSWERS[stem[:2]])
        assert result.returncode == 0, result.stderr[-3000:]
        _runs[stem] = LessonRun(**json.loads(result.stdout))
    return _runs[stem]


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("stem", LESSONS)
def test_every_lesson_runs_live_in_the_kernel(nosudo, stem):
    run = _lesson(nosudo, stem)
    assert not run.errors, run.errors
    text = run.text()
    assert "lab ready" in text or "running with the privileges" in text
    assert "read-only mode" not in text and "recorded example" not in text
    assert "✔ Correct" in run.text("check"), run.text("check")
    print(f"{stem}: {run.seconds:.1f} s in the no-sudo kernel")  # a bench figure, not a test


@pytest.mark.usefixtures("root")
def test_lesson_05_says_which_evidence_is_recorded(nosudo):
    run = _lesson(nosudo, "05-martians-and-rp_filter")
    claims = run.text("claims")
    # verdicts and counters are checked live; reasons and martian lines against a root run,
    # and the check says so
    assert "dropped; IP_LOCAL_SOURCE (recorded on a root run: not traceable here)" in claims
    assert "TcpExtIPReversePathFilter +1" in claims
    assert "the kernel traced" not in claims
    explanation = "".join(o.get("text", "") for o in run.outputs() if o.get("name") == "stdout")
    assert "Dropped, say the counters. The counters say: IpInAddrErrors +1" in explanation, \
        explanation
    assert "Recorded, not seen here: a root run of this same packet traced the drop reason " \
        "IP_INADDRERRORS" in explanation
    assert "Dropped (IP_INADDRERRORS" not in explanation  # no reason named as if seen
    tables = [v for v in run.widgets if "tunlab-fate-table" in v]
    assert any("IP_RPFILTER (recorded)" in t for t in tables), tables


@pytest.mark.usefixtures("root")
def test_lesson_03_captures_the_tunnel_in_the_kernel(nosudo):
    run = _lesson(nosudo, "03-encapsulation")
    assert not run.errors, run.errors
    (table,) = [v for v in run.widgets if v.startswith("<table><tr><th>TCP direction")]
    # both HELLOs and the two pings the lesson sends, each a DATA frame carrying the ICMP echo
    assert table.count("<b>HELLO</b>") == 2, table
    assert table.count("<b>DATA</b></td><td>84</td><td>10.0.0.1 → 10.0.0.2 (proto 1)") == 2, \
        table
    (explored,) = [v for v in run.widgets if "frame(s) in the capture" in v]
    assert re.search(r"DATA\s+len=84\s+10\.0\.0\.1 -&gt; 10\.0\.0\.2", explored), explored


def test_a_tcp_client_hears_why_it_cannot_reach_the_kernel(tmp_path):
    connection = tmp_path / "kernel.json"
    connection.write_text(json.dumps({"transport": "tcp", "ip": "127.0.0.1"}))
    result = subprocess.run([sys.executable, "-m", "tunlab.kernelspec", "-f", str(connection)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "KernelManager.transport=ipc" in result.stderr


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


# -- the pieces, without the nobody set-up ------------------------------------------------------

@pytest.mark.usefixtures("root")
def test_pcapture_captures_what_the_filter_selects_once(monkeypatch):
    """The stand-in the no-sudo kernel uses where tcpdump cannot run (setgroups denied), made to
    run here as root: one pcap with the filtered packets, each once (lo shows them twice)."""
    import socket

    from tunlab.kernel import netns
    from tunlab.lab import capture

    monkeypatch.setattr(capture, "in_user_namespace", lambda: True)
    monkeypatch.setattr(capture, "_setgroups_denied", lambda: True)
    assert capture.capture_command("lo", "x.pcap", "udp port 9999")[1:3] == \
        ["-m", "tunlab.kernel.capture"]

    def send(port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(f"to {port}".encode(), ("127.0.0.1", port))

    with netns.create("pcap") as ns, \
            capture.capture(ns, "lo", "udp port 9999", timeout=20) as cap:
        for port in (9999, 9998, 9999):
            ns.run(send, port)
    packets = cap.packets()
    cap.path.unlink()
    payloads = [bytes(p["UDP"].payload) for p in packets]
    assert payloads == [b"to 9999", b"to 9999"], payloads
    assert "listening on lo" in cap.stderr or "2 packets captured" in cap.stderr, cap.stderr


def test_the_capture_command_fits_the_privileges(monkeypatch):
    from tunlab.lab import capture

    def command(userns: bool, denied: bool) -> list[str]:
        monkeypatch.setattr(capture, "in_user_namespace", lambda: userns)
        monkeypatch.setattr(capture, "_setgroups_denied", lambda: denied)
        return capture.capture_command("lo", "f.pcap", "tcp port 5")

    assert command(False, False)[0] == "tcpdump" and "-Z" not in command(False, False)
    assert command(True, False)[:3] == ["tcpdump", "-Z", "root"]
    assert command(True, True)[:3] == [sys.executable, "-m", "tunlab.kernel.capture"]
    for argv in (command(False, False), command(True, False), command(True, True)):
        assert argv[-7:] == ["-i", "lo", "-w", "f.pcap", "tcp", "port", "5"]


def _report(verdict: str, **extra: object) -> FateReport:
    return FateReport.from_dict({
        "verdict": verdict, "drop_reasons": [], "martian_log": [], "replies": [],
        "counters": {}, "explanation": "Dropped, say the counters.", "settings": {},
        "missing_evidence": {"tracefs": "the host's", "kernel log": "the host's"}, **extra})


def test_a_root_recording_stands_beside_a_run_without_tracing():
    from tunlab.course import evidence as rec

    root = _report("dropped", drop_reasons=["IP_RPFILTER"], missing_evidence={},
                   martian_log=["martian source 10.0.0.2 from 200.1.2.3, on dev mytun2"])
    live = _report("dropped")
    out = rec.with_recorded_evidence(live, None, lambda settings: root)
    assert out.drop_reasons == [] and out.martian_log == []  # live facts untouched
    assert out.recorded_drop_reasons == ["IP_RPFILTER"]
    assert out.recorded_martian_log == root.martian_log
    assert out.explanation.endswith("Recorded, not seen here: a root run of this same packet "
                                       "traced the drop reason IP_RPFILTER and logged 'martian "
                                       "source 10.0.0.2 from 200.1.2.3, on dev mytun2'.")
    # a second pass adds nothing (course.live_fate, then Lesson.run)
    assert rec.with_recorded_evidence(out, None, lambda settings: root) == out
    # a recording that disagrees with the live verdict says nothing about this run
    assert rec.with_recorded_evidence(_report("forwarded"), None, lambda s: root) == \
        _report("forwarded")
    # with tracing, nothing is added
    traced = _report("dropped", drop_reasons=["IP_RPFILTER"], missing_evidence={})
    assert rec.with_recorded_evidence(traced, None, lambda s: root) == traced


def test_the_recording_is_found_under_the_settings_the_lab_really_had():
    from tunlab.course import evidence as rec

    asked = []
    full = {"net.ipv4.ip_forward": "0", "net.ipv4.conf.all.rp_filter": "0"}

    def lookup(settings: dict) -> FateReport | None:
        asked.append(settings)
        return _report("dropped", drop_reasons=["IP_INADDRERRORS"], missing_evidence={}) \
            if settings == full else None

    live = _report("dropped", settings=full)
    out = rec.with_recorded_evidence(live, {"net.ipv4.ip_forward": 0}, lookup)
    assert asked == [{"net.ipv4.ip_forward": "0"}, full]
    assert out.recorded_drop_reasons == ["IP_INADDRERRORS"]


def test_a_sweep_is_matched_to_its_recording_by_label():
    from tunlab.course import evidence as rec

    recording = [["a", _report("dropped", drop_reasons=["IP_RPFILTER"], missing_evidence={})],
                 ["b", _report("forwarded", missing_evidence={})]]
    live = [("b", _report("forwarded")), ("a", _report("dropped")), ("c", _report("dropped"))]
    out = dict(rec.beside(live, recording))
    assert out["a"].recorded_drop_reasons == ["IP_RPFILTER"]
    assert not out["b"].recorded_drop_reasons and not out["c"].recorded_drop_reasons
    assert rec.beside("text", recording) == "text"


def test_claims_check_recorded_reasons_labelled_and_live_verdicts():
    from tunlab.course import claims
    from tunlab.course import evidence as rec

    report = _report("dropped", **{rec.REASONS_KEY: ["IP_LOCAL_SOURCE"],
                                   rec.MARTIANS_KEY: ["martian source X"]})
    checked = claims.expect(report, verdict="dropped", reasons=["IP_LOCAL_SOURCE"],
                            martian="martian source X")
    assert "IP_LOCAL_SOURCE (recorded on a root run: not traceable here)" in repr(checked)
    with pytest.raises(claims.ClaimMismatch, match="a recorded root run traced"):
        claims.expect(report, reasons=["IP_RPFILTER"])
    with pytest.raises(claims.ClaimMismatch, match="the kernel said dropped"):
        claims.expect(report, verdict="forwarded")  # the verdict is always the live one
    with pytest.raises(claims.ClaimMismatch, match="a recorded root run traced"):
        claims.expect(_report("dropped"), reasons=["IP_LOCAL_SOURCE"])  # nothing recorded
    # with tracing, the live reasons are what counts, as before
    traced = _report("dropped", drop_reasons=["IP_RPFILTER"], missing_evidence={})
    with pytest.raises(claims.ClaimMismatch, match="the kernel traced"):
        claims.expect(traced, reasons=["IP_LOCAL_SOURCE"])


def test_a_run_with_its_own_tracing_passes_through_unchanged():
    from tunlab.course import evidence as rec

    traced = [["a", _report("dropped", drop_reasons=["IP_RPFILTER"], missing_evidence={})],
              [1, 2]]
    assert rec.beside(traced, [["a", _report("dropped", missing_evidence={})]]) is traced
