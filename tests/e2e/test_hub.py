"""Three participants share one JupyterHub without disturbing each other.

A JupyterHub on 127.0.0.1 (SharedPasswordAuthenticator: one workshop password;
LocalProcessSpawner: each participant's server runs as their own Unix user), the "tunlab (no
sudo)" kernel spec installed for everybody with deploy/tljh's server settings (default
kernel, IPC transport), and three participant accounts made by the test. Each participant logs
in through the login form, gets a token, starts their server, starts a "tunlab (no sudo)"
kernel through the Jupyter server's REST API and, over the kernel's websocket, sends lesson
05's seed martian with the lesson's own packet builder. The kernel's verdict must be the root
lab's (dropped), from the counters.

Then one participant resets their lab and runs ``tunlab cleanup`` (in their kernel, and as
their Unix user in a shell); the other two keep their namespaces and ownership records (seen
from outside, through /proc/PID/root) and their next packet still gets the kernel's verdict.

Only the builder call runs, not lesson 05 top to bottom (see test_nosudo: the whole lesson
does not yet finish in time in the no-sudo kernel).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hubtools import (
    Hub,
    KernelSession,
    accounts,
    free_port,
    log_in,
    new_secret,
    start_hub,
    token_for,
    wait_for_server,
)

from tunlab import course
from tunlab.course import kernelspec
from tunlab.kernel import doctor

ROOT = Path(__file__).resolve().parents[2]
CHP = ROOT / ".hub/node_modules/.bin/configurable-http-proxy"
SERVER_CONFIG = ROOT / "deploy/tljh/jupyter_server_config.json"
HUB_SNIPPET = ROOT / "deploy/tljh/tunlab.py"
VENV = Path(sys.prefix)
PARTICIPANTS = 3
SETUP_SECONDS = 600


# Lesson 05's packet builder with the seed's martian typed in: 10.0.0.1 -> 10.0.2.33 written
# into mytun, forwarding and martian logging on (the lesson's first experiment).
SEED_MARTIAN = {"src": "10.0.0.1", "dst": "10.0.2.33", "dev": "mytun",
                "sysctls": {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.log_martians": 1}}
SETUP_CODE = """
import json, os
from tunlab import course
lesson = course.start("05-martians-and-rp_filter", lab="seed")
builder = course.PacketBuilder(src="10.0.0.1", dst="10.0.2.33", dev="mytun", rp_filter=0,
                                ip_forward=True, log_martians=True, lesson=lesson)
"""
SEND_CODE = """
report = builder.run()
print(json.dumps({"report": report.to_dict() if report else None,
                  "error": builder.last_error, "pid": os.getpid(),
                  "live": lesson.live, "lab_ready": lesson.lab_ready,
                  "namespaces": sorted(ns.name for ns in lesson.lab.namespaces)}))
"""
RESET_AND_CLEANUP_CODE = """
import subprocess, sys
before = sorted(ns.name for ns in lesson.lab.namespaces)
lesson.reset()
cleanup = subprocess.run([sys.executable, "-m", "tunlab", "cleanup"], capture_output=True,
                         text=True, timeout=120)
print(json.dumps({"before": before, "after": sorted(ns.name for ns in lesson.lab.namespaces),
                  "cleanup_rc": cleanup.returncode,
                  "cleanup_out": cleanup.stdout + cleanup.stderr}))
"""


@dataclass
class Participant:
    """One participant: Unix account, hub token, and their kernel."""

    name: str
    uid: int
    token: str
    kernel: KernelSession
    kernel_pid: int = 0


def _participant_python(name: str) -> str | None:
    """The checkout's interpreter when a participant can run it with tunlab and jupyterhub,
    else None (e.g. a checkout under /root)."""
    probe = subprocess.run(["runuser", "-u", name, "--", sys.executable, "-c",
                            "import tunlab, jupyterhub, ipykernel"],
                           capture_output=True, text=True, timeout=120, cwd="/")
    return sys.executable if probe.returncode == 0 else None


def _world_readable_venv(work: Path) -> Path:
    """A venv in ``work`` with tunlab[lab,hub], for checkouts participants cannot read."""
    venv = work / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin/pip"), "install", "-q", f"{ROOT}[lab,hub]"],
                   check=True, timeout=SETUP_SECONDS, capture_output=True)
    subprocess.run(["chmod", "-R", "a+rX", str(venv)], check=True)
    return venv / "bin/python"


def _hub_config(work: Path, port: int, token: str, password: str, names: list[str],
                python: str, env: dict[str, dict[str, str]]) -> Path:
    bindir = Path(python).parent
    config = f"""
c = get_config()  # noqa: F821
# deploy/tljh's snippet as TLJH loads it (its Spawner.cmd copies the course into each home);
# its SystemdSpawner settings do not apply to LocalProcessSpawner.
load_subconfig({str(HUB_SNIPPET)!r})  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {free_port()}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
c.ConfigurableHTTPProxy.command = [{str(CHP)!r}]
c.JupyterHub.db_url = "sqlite:///{work}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{work}/jupyterhub_cookie_secret"
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = {password!r}
c.Authenticator.allowed_users = set({names!r})
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 180
c.Spawner.environment = {{
    "JUPYTER_PATH": "{work}/jupyter/share/jupyter",
    "JUPYTER_CONFIG_PATH": "{work}/jupyter/etc/jupyter",
    "PATH": "{bindir}:/usr/sbin:/usr/bin:/sbin:/bin",
    "TUNLAB_NOSUDO_TUN": lambda spawner: {env!r}[spawner.user.name].get("tun", ""),
}}
c.JupyterHub.services = [{{"name": "tunlab-test", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "tunlab-test", "services": ["tunlab-test"],
                             "scopes": ["admin:users", "admin:servers", "list:users"]}}]
c.JupyterHub.cleanup_servers = True
"""
    path = work / "jupyterhub_config.py"
    path.write_text(config)
    return path


def _userns_allowed(name: str) -> str | None:
    probe = subprocess.run(["runuser", "-u", name, "--", *kernelspec.UNSHARE, "true"],
                           capture_output=True, text=True, timeout=30, cwd="/")
    if probe.returncode == 0:
        return None
    blocker = doctor.userns_blocker()
    return "unprivileged user namespaces are not allowed here: " + \
        (blocker[0] if blocker else probe.stderr.strip())


def _inside(pid: int, path: str) -> list[str]:
    """The entries of ``path`` as the process ``pid`` sees it (its own mount namespace)."""
    where = Path(f"/proc/{pid}/root") / path.lstrip("/")
    return sorted(p.name for p in where.iterdir()) if where.is_dir() else []


@dataclass
class Room:
    hub: Hub
    participants: list[Participant]
    python: str


@pytest.fixture(scope="module")
def room(hub: None) -> Iterator[Room]:
    jupyterhub = VENV / "bin/jupyterhub"
    tag = f"{os.getpid() % 100000:05d}"
    names = [f"tlhub{tag}{letter}" for letter in "abc"[:PARTICIPANTS]]
    work = Path(tempfile.mkdtemp(prefix="tunlab-hub."))
    try:
        work.chmod(0o755)
        with accounts(names) as users:  # removed last: after the hub and its servers
            reason = _userns_allowed(names[0])
            if reason:
                pytest.skip(reason)
            python = _participant_python(names[0]) or str(_world_readable_venv(work))
            env = _prepare(work, users, python)
            port = free_port()
            token, password = new_secret(), new_secret()
            config = _hub_config(work, port, token, password, names, python, env)
            hub_env = {"PATH": f"{VENV / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin",
                       "HOME": str(work), "LANG": "C.UTF-8"}
            hub = start_hub(config, work, f"http://127.0.0.1:{port}/", token, hub_env,
                            str(jupyterhub))
            participants: list[Participant] = []
            try:
                for user in users:
                    session = log_in(hub.url, user.pw_name, password)
                    user_token = token_for(session, hub.url, user.pw_name)
                    server = wait_for_server(hub, user.pw_name, user_token)
                    participants.append(Participant(
                        user.pw_name, user.pw_uid, user_token,
                        KernelSession(server, user_token, kernelspec.KERNEL_NAME)))
                yield Room(hub, participants, python)
            finally:
                for participant in participants:
                    participant.kernel.close()
                hub.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _prepare(work: Path, users: list[pwd.struct_passwd],
             python: str) -> dict[str, dict[str, str]]:
    """The kernel spec for everybody (a prefix the hub's users read, like TLJH's user
    environment) and deploy/tljh's server settings, both found through the spawner's
    JUPYTER_PATH / JUPYTER_CONFIG_PATH; a TUN node per participant where /dev/net/tun is
    not usable by all. Returns each participant's extra settings."""
    kernelspec.install(prefix=str(work / "jupyter"), python=python)
    config_dir = work / "jupyter/etc/jupyter"
    config_dir.mkdir(parents=True)
    shutil.copy(SERVER_CONFIG, config_dir / "jupyter_server_config.json")
    env: dict[str, dict[str, str]] = {user.pw_name: {} for user in users}
    tun = Path("/dev/net/tun")
    if tun.stat().st_mode & 0o006 != 0o006:
        # 0600 here: each participant gets a node of their own (same device numbers), as
        # docs/no-sudo.md describes, instead of a change to the host's
        rdev = tun.stat().st_rdev
        for user in users:
            node = work / f"tun-{user.pw_name}"
            subprocess.run(["mknod", "-m", "0600", str(node), "c", str(os.major(rdev)),
                            str(os.minor(rdev))], check=True)
            os.chown(node, user.pw_uid, user.pw_gid)
            env[user.pw_name]["tun"] = str(node)
    return env


def _send(participant: Participant) -> dict:
    reply = participant.kernel.execute(SEND_CODE)
    assert reply.status == "ok", reply.error
    return reply.json()


def _expected_verdict() -> str:
    """The root lab's verdict for the seed's martian (recorded by `make record`)."""
    return str(course.recorded_fate(**SEED_MARTIAN).verdict)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_each_participant_gets_the_kernels_verdict_through_the_hub(room):
    labs = []
    for participant in room.participants:
        specs = participant.kernel.kernelspecs()
        assert specs["default"] == kernelspec.KERNEL_NAME, specs["default"]
        assert list(specs["kernelspecs"]) == [kernelspec.KERNEL_NAME], specs["kernelspecs"]
        home = Path(pwd.getpwnam(participant.name).pw_dir)
        assert (home / "tunlab-notebooks/05-martians-and-rp_filter.ipynb").is_file()
        assert specs["kernelspecs"][kernelspec.KERNEL_NAME]["spec"]["display_name"] == \
            kernelspec.DISPLAY_NAME
        participant.kernel.start()
        ready = participant.kernel.execute(SETUP_CODE)
        assert ready.status == "ok", ready.error
        sent = _send(participant)
        participant.kernel_pid = int(sent["pid"])
        labs.append(sent["namespaces"])
        report = sent["report"]
        assert sent["error"] is None and report is not None, sent
        assert sent["live"] is True and sent["lab_ready"] is True, sent
        # the kernel's own verdict, as the root lab gives it (lesson 05: dropped) ...
        assert report["verdict"] == "dropped" == _expected_verdict(), report
        # ... from the counters, without tracefs (a user namespace cannot read it)
        assert "counters" in report["evidence"] and "tracefs" not in report["evidence"], report
        assert "tracefs" in report["missing_evidence"], report
        assert report["drop_reasons"] == []
        assert any(v > 0 for v in report["counters"].values()), report["counters"]
        # the kernel runs as the participant, in their own user namespace
        status = Path(f"/proc/{participant.kernel_pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1] == str(participant.uid), uid_line
        assert os.readlink(f"/proc/{participant.kernel_pid}/ns/user") != \
            os.readlink("/proc/self/ns/user")
    # three kernels, three private labs: each /run/netns holds its own lab and nothing else,
    # and none of them appears on the host
    for participant, names in zip(room.participants, labs, strict=True):
        assert _inside(participant.kernel_pid, "/run/netns") == names, participant.name
    host = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    assert not host & {n for names in labs for n in names}, "a lab namespace is on the host"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_one_participants_reset_and_cleanup_leave_the_others_alone(room):
    if not all(p.kernel_pid for p in room.participants):
        pytest.skip("the kernels did not start (see the test before)")
    first, *others = room.participants
    before = {p.name: (_inside(p.kernel_pid, "/run/netns"),
                       _inside(p.kernel_pid, "/run/tunlab/owners")) for p in others}
    for p in others:
        netns_names, records = before[p.name]
        assert netns_names and any(r.startswith("netns.") for r in records), before[p.name]

    # the first participant resets their lab and runs `tunlab cleanup` in their kernel ...
    reply = first.kernel.execute(RESET_AND_CLEANUP_CODE)
    assert reply.status == "ok", reply.error
    done = reply.json()
    assert done["cleanup_rc"] == 0, done["cleanup_out"]
    assert done["after"] and done["after"] != done["before"], done
    # ... and in a shell, as their Unix user: refused (no root), nothing changed
    shell = subprocess.run(["runuser", "-u", first.name, "--", str(Path(room.python).parent /
                            "tunlab"), "cleanup"], capture_output=True, text=True, timeout=120,
                           cwd="/")
    assert shell.returncode == 2, shell.stdout + shell.stderr

    for p in others:
        assert (_inside(p.kernel_pid, "/run/netns"),
                _inside(p.kernel_pid, "/run/tunlab/owners")) == before[p.name], p.name
    for p in [*others, first]:
        sent = _send(p)
        assert sent["error"] is None and sent["report"]["verdict"] == "dropped", sent
        assert sent["lab_ready"] is True, sent
    for p in others:
        assert _inside(p.kernel_pid, "/run/netns") == before[p.name][0], p.name


def test_the_deploy_files_name_the_no_sudo_kernel_and_files_that_exist():
    import yaml

    server = json.loads(SERVER_CONFIG.read_text())
    assert server["MultiKernelManager"]["default_kernel_name"] == kernelspec.KERNEL_NAME
    assert server["KernelSpecManager"]["allowed_kernelspecs"] == [kernelspec.KERNEL_NAME]
    assert server["KernelManager"]["transport"] == "ipc"
    values = yaml.safe_load((ROOT / "deploy/z2jh/values.yaml").read_text())
    context = values["hub"]["config"]["KubeSpawner"]["container_security_context"]
    assert context["capabilities"] == {"drop": ["ALL"]} and context["runAsNonRoot"] is True
    assert values["singleuser"]["uid"] == 1000
    containerfile = (ROOT / "Containerfile").read_text()
    for line in containerfile.splitlines():
        if line.startswith("COPY ") and "--from" not in line and not line.startswith("COPY . "):
            assert (ROOT / line.split()[1]).exists(), line
    assert "tunlab kernelspec install --sys-prefix" in containerfile
