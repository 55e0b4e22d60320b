"""Helpers for tests/test_hub.py: participant accounts, a JupyterHub on 127.0.0.1, and a
Jupyter kernel driven through the server's REST API and websocket, as a browser would.

Everything here is bounded in time and removes what it made: accounts (with their homes and
processes, found by uid and killed by pid), the hub's process group and its proxy.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import websocket
from jupyter_server.services.kernels.connection.base import deserialize_binary_message

HTTP_SECONDS = 30
SPAWN_SECONDS = 180
EXECUTE_SECONDS = 240


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pids_of(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if entry.stat().st_uid == uid:
                pids.append(int(entry.name))
    return pids


def kill_pids(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM each pid, wait up to ``grace`` seconds, then SIGKILL what is left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.2)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def accounts(names: list[str]) -> Iterator[list[pwd.struct_passwd]]:
    """Create Unix accounts ``names`` (with homes); on exit kill every process they own (by
    pid) and remove them with their homes, also when the body fails."""
    made: list[str] = []
    try:
        for name in names:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--comment",
                            "tunlab hub test participant", name],
                           check=True, capture_output=True, timeout=30)
            made.append(name)
        yield [pwd.getpwnam(name) for name in names]
    finally:
        for name in made:
            with contextlib.suppress(KeyError):
                uid = pwd.getpwnam(name).pw_uid
                for _ in range(3):  # a dying server may still fork once
                    pids = _pids_of(uid)
                    if not pids:
                        break
                    kill_pids(pids)
            subprocess.run(["userdel", "--remove", name], capture_output=True, timeout=30)


@dataclass
class Hub:
    """A running JupyterHub: its URL, the test service's token, its process."""

    url: str
    token: str
    process: subprocess.Popen[bytes]
    workdir: Path
    log: Path

    def api(self, method: str, path: str, token: str | None = None,
            **kwargs: object) -> requests.Response:
        """Call the hub's REST API (``path`` after /hub/api/) with a token."""
        headers = {"Authorization": f"token {token or self.token}"}
        return requests.request(method, f"{self.url}hub/api/{path}", headers=headers,
                                timeout=HTTP_SECONDS, **kwargs)  # type: ignore[arg-type]

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the hub's log (for assertion messages)."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no hub log)"

    def stop(self) -> None:
        """Stop the hub (it stops the user servers and its proxy), then kill its process
        group and the proxy if they outlive the grace time."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        proxy_pid = self.workdir / "jupyterhub-proxy.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(proxy_pid.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"configurable-http-proxy" in cmdline:
                kill_pids([pid])


def start_hub(config: Path, workdir: Path, url: str, token: str, env: dict[str, str],
              jupyterhub: str, seconds: float = 90) -> Hub:
    """Start ``jupyterhub -f config`` in its own process group; return once its API answers."""
    log = workdir / "hub.log"
    with log.open("wb") as out:
        process = subprocess.Popen([jupyterhub, "-f", str(config)], cwd=workdir, env=env,
                                   stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    hub = Hub(url, token, process, workdir, log)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            hub.stop()
            raise RuntimeError(f"jupyterhub exited with {process.returncode}:\n{hub.log_tail()}")
        with contextlib.suppress(requests.RequestException):
            if hub.api("GET", "").status_code == 200:
                return hub
        time.sleep(0.5)
    hub.stop()
    raise RuntimeError(f"jupyterhub did not answer within {seconds} s:\n{hub.log_tail()}")


def log_in(hub_url: str, name: str, password: str) -> requests.Session:
    """Log in through the hub's login form (as a browser does): a session with its cookie."""
    session = requests.Session()
    session.get(f"{hub_url}hub/login", timeout=HTTP_SECONDS).raise_for_status()
    xsrf = session.cookies.get("_xsrf", "")
    reply = session.post(f"{hub_url}hub/login", timeout=HTTP_SECONDS, allow_redirects=False,
                         data={"username": name, "password": password, "_xsrf": xsrf})
    if reply.status_code != 302:
        raise RuntimeError(f"login of {name} failed: HTTP {reply.status_code}")
    return session


def token_for(session: requests.Session, hub_url: str, name: str) -> str:
    """A new API token of the logged-in user ``name``, requested with the session's cookie."""
    xsrf = session.cookies.get("_xsrf", "")
    reply = session.post(f"{hub_url}hub/api/users/{name}/tokens", timeout=HTTP_SECONDS,
                         headers={"X-XSRFToken": xsrf, "Referer": f"{hub_url}hub/token"},
                         json={"note": "tunlab hub test", "expires_in": 3600})
    reply.raise_for_status()
    return str(reply.json()["token"])


def wait_for_server(hub: Hub, name: str, token: str, seconds: float = SPAWN_SECONDS) -> str:
    """Ask the hub to start ``name``'s server; return its URL (through the proxy) once ready."""
    reply = hub.api("POST", f"users/{name}/server", token=token)
    if reply.status_code not in (201, 202, 400):  # 400: already running
        raise RuntimeError(f"spawn of {name}: HTTP {reply.status_code} {reply.text}")
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        model = hub.api("GET", f"users/{name}", token=token).json()
        server = model.get("servers", {}).get("")
        if server and server.get("ready"):
            return hub.url.rstrip("/") + server["url"]
        if not server and model.get("pending") is None and time.monotonic() - started > 5:
            raise RuntimeError(f"{name}'s server stopped while starting:\n{hub.log_tail()}")
        time.sleep(1)
    raise RuntimeError(f"{name}'s server was not ready within {seconds} s:\n{hub.log_tail()}")


def decode_message(frame: str | bytes) -> dict[str, Any]:
    """A Jupyter websocket message: JSON text, or binary for messages with buffers (widget
    comms), in the server's own framing."""
    if isinstance(frame, bytes):
        return dict(deserialize_binary_message(frame))
    return dict(json.loads(frame))


@dataclass
class Reply:
    """What one execute request produced: status, stdout text, error traceback."""

    status: str
    stdout: str
    error: str = ""

    def json(self) -> dict[str, object]:
        """The last line of stdout, parsed (the test code prints one JSON object last)."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        if not lines:
            raise AssertionError(f"no output (status {self.status}): {self.error}")
        return dict(json.loads(lines[-1]))


@dataclass
class KernelSession:
    """A kernel of one user's Jupyter server, started and driven through the REST API and the
    kernel's websocket (the channels a browser's notebook uses)."""

    server_url: str
    token: str
    kernel_name: str
    kernel_id: str = ""
    session: str = field(default_factory=lambda: uuid.uuid4().hex)
    ws: websocket.WebSocket | None = None

    def _http(self, method: str, path: str, **kwargs: object) -> requests.Response:
        return requests.request(method, f"{self.server_url}api/{path}", timeout=HTTP_SECONDS,
                                headers={"Authorization": f"token {self.token}"},
                                **kwargs)  # type: ignore[arg-type]

    def kernelspecs(self) -> dict[str, object]:
        """GET api/kernelspecs: the default kernel and every spec the server sees."""
        reply = self._http("GET", "kernelspecs")
        reply.raise_for_status()
        return dict(reply.json())

    def start(self) -> KernelSession:
        """POST api/kernels, then connect to its channels websocket."""
        reply = self._http("POST", "kernels", json={"name": self.kernel_name})
        reply.raise_for_status()
        self.kernel_id = reply.json()["id"]
        ws_url = self.server_url.replace("http://", "ws://", 1)
        self.ws = websocket.create_connection(
            f"{ws_url}api/kernels/{self.kernel_id}/channels?session_id={self.session}",
            header=[f"Authorization: token {self.token}"], timeout=HTTP_SECONDS)
        return self

    def execute(self, code: str, seconds: float = EXECUTE_SECONDS) -> Reply:
        """Run ``code`` in the kernel; collect stdout and errors until the kernel is idle."""
        assert self.ws is not None, "start() first"
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": self.session,
                       "msg_type": "execute_request", "version": "5.3",
                       "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
        out: list[str] = []
        error = ""
        status = ""
        idle = False
        deadline = time.monotonic() + seconds
        while not (status and idle):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply within {seconds} s; output so far: {''.join(out)}")
            self.ws.settimeout(min(left, 30))
            try:
                msg = decode_message(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content.get("name") == "stdout":
                out.append(content["text"])
            elif kind == "error":
                error = "\n".join(content.get("traceback", [])) or content.get("evalue", "")
            elif kind == "execute_reply":
                status = content["status"]
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
        return Reply(status, "".join(out), error)

    def close(self) -> None:
        """Close the websocket and shut the kernel down (errors ignored: teardown)."""
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self.ws.close()
            self.ws = None
        if self.kernel_id:
            with contextlib.suppress(requests.RequestException):
                self._http("DELETE", f"kernels/{self.kernel_id}")


def new_secret() -> str:
    """A random token or password for this test run."""
    return secrets.token_hex(16)
