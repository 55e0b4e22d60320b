"""`tunlab server` / `tunlab client` refuse bad environments and input with exit code 2 and one
clear error line (plus, where there is one, a line with the fix), never a traceback.

Each command runs as a real process inside a lab namespace (`ip netns exec`), where tun0 and the
underlay address 198.18.0.2 exist.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from tunlab.lab import UNDERLAY, TwoHostLab

pytestmark = pytest.mark.usefixtures("root")

PYTHON = [sys.executable, "-m", "tunlab"]


@pytest.fixture(scope="module")
def lab():
    with TwoHostLab() as two_hosts:
        yield two_hosts


@pytest.fixture
def key_file(tmp_path: Path):
    def make(content: bytes = b"a good key for the cli tests 0123", mode: int = 0o600) -> str:
        path = tmp_path / "psk"
        path.write_bytes(content)
        path.chmod(mode)
        return str(path)
    return make


def run(lab: TwoHostLab, *argv: str, env: dict[str, str] | None = None):
    prefix = ["env", *(f"{k}={v}" for k, v in (env or {}).items())] if env else []
    return lab.b.exec([*prefix, *PYTHON, *argv], check=False, timeout=20)


def assert_clear_error(result, *phrases: str) -> str:
    """Exit 2, exactly one `error:` line holding every phrase, at most a `fix:` line besides
    (log lines of the endpoint aside), and no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not line.startswith("tunlab ")]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert set(lines) - set(errors) <= {line for line in lines if line.startswith("fix:")}, lines
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr)
    return result.stderr


SERVER = ["server", "--dev", "tun0", "--listen", f"{UNDERLAY[1]}:5950"]
CLIENT = ["client", "--dev", "tun0", "--server", f"{UNDERLAY[1]}:5950"]


@pytest.mark.parametrize("argv", [SERVER, CLIENT, ["demo"], ["cleanup"]],
                         ids=["server", "client", "demo", "cleanup"])
def test_not_root(lab, argv):
    result = run(lab, *argv, env={"TUNLAB_PRETEND_UNPRIVILEGED": "1"})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "root" in result.stderr and "CAP_NET_ADMIN" in result.stderr


@pytest.mark.parametrize("role", ["server", "client"])
def test_no_such_device(lab, role):
    argv = (SERVER if role == "server" else CLIENT).copy()
    argv[2] = "nosuchtun"
    out = assert_clear_error(run(lab, *argv), "nosuchtun", "does not exist")
    assert "create_named_tuntap_devices.sh" in out and "ip tuntap add nosuchtun" in out


def test_port_in_use(lab, key_file):
    listener = lab.b.run(socket.create_server, (UNDERLAY[1], 5951))
    try:
        result = run(lab, "server", "--dev", "tun0", "--listen", f"{UNDERLAY[1]}:5951",
                     "--psk-file", key_file())
        assert_clear_error(result, "port 5951", "already in use")
    finally:
        listener.close()


@pytest.mark.parametrize("address", ["no-port", "198.18.0.2:99999", ":5555", "host:abc",
                                     "198.18.0.2:", "1.2.3.4:-1"])
@pytest.mark.parametrize("role", ["server", "client"])
def test_bad_host_port(lab, role, address):
    option = "--listen" if role == "server" else "--server"
    result = run(lab, role, "--dev", "tun0", option, address)
    assert_clear_error(result, "is not HOST:PORT", repr(address))


def test_listen_address_not_on_this_host(lab, key_file):
    result = run(lab, "server", "--dev", "tun0", "--listen", "203.0.113.7:5952",
                 "--psk-file", key_file())
    assert_clear_error(result, "cannot listen on 203.0.113.7:5952")


@pytest.mark.parametrize("case, phrases", [
    ("missing", ["does not exist", "urandom"]),
    ("insecure", ["accessible by group or others", "0644", "fix: chmod 600"]),
    ("empty", ["is empty"]),
    ("short", ["too short"]),
    ("directory", ["directory"]),
])
@pytest.mark.parametrize("role", ["server", "client"])
def test_bad_or_insecure_psk_file(lab, key_file, tmp_path, role, case, phrases):
    path = {"missing": lambda: str(tmp_path / "absent.key"),
            "insecure": lambda: key_file(mode=0o644),
            "empty": lambda: key_file(b""),
            "short": lambda: key_file(b"tooshort"),
            "directory": lambda: str(tmp_path)}[case]()
    argv = (SERVER if role == "server" else CLIENT)
    out = assert_clear_error(run(lab, *argv, "--psk-file", path), *phrases)
    assert path in out
    if case == "insecure":
        assert f"chmod 600 {path}" in out
