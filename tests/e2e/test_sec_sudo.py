"""``sudo tunlab fate`` reads no file for the user who ran sudo that they could not read
themselves (issue 23, item 2): ``--nft-file`` is opened with SUDO_UID's rights, and ``include``,
``;`` and newlines are refused in ``--nft-cmd`` and ``--nft-rule``. The root tests run the real
command as root with SUDO_UID set to nobody, against a file only root may read whose lines nft
would echo; a control shows nft does echo them when handed the include."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tunlab.errors import TunlabError
from tunlab.fate import nftinput
from tunlab.fate.request import parse_args

ROOT = Path(__file__).resolve().parents[2]
SECRET = "tunlab_secret_line_4711 is what only root may read"
BASE = ["--src", "200.1.2.3", "--dst", "10.0.0.2"]
HOSTFW = ("table inet hostfw {\n chain forward { type filter hook forward priority filter; "
          "policy drop; }\n}\n")


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file only root may read, in a folder only root may enter."""
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)
    path = private / "secret.nft"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def nobody_dir():
    """A folder of nobody's in /tmp (what the sudo user can reach), removed afterwards."""
    result = subprocess.run(["mktemp", "-d", "/tmp/tunlab-sec.XXXXXX"], user="nobody",
                            group="nogroup", capture_output=True, text=True, check=True)
    folder = Path(result.stdout.strip())
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _fate_as_sudo_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), SUDO_UID="65534", SUDO_GID="65534",
               SUDO_USER="nobody")
    return subprocess.run([sys.executable, "-m", "tunlab", "fate", *BASE, *args],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("option, value, what", [
    ("--nft-cmd", 'add table inet x; include "/etc/shadow"', "holds a `;`"),
    ("--nft-cmd", 'add table inet x\ninclude "/etc/shadow"', "holds a newline"),
    ("--nft-cmd", 'add table inet x\rflush ruleset', "carriage return"),
    ("--nft-cmd", 'include "/etc/shadow"', "`include` is refused"),
    ("--nft-rule", 'forward accept\ninclude "/etc/shadow"', "holds a newline"),
    ("--nft-rule", 'forward accept; include "/etc/shadow"', "holds a `;`"),
    ("--nft-rule", 'forward accept } include "/etc/shadow" table inet y { chain c {',
     "`include` is refused"),
    ("--nft-rule", 'forward meta mark 1 comment "INCLUDE me" accept', "`include` is refused"),
    ("--nft-ruleset-text", 'table inet t { include "/etc/shadow" }', "`include` is refused"),
])
def test_a_second_command_or_an_include_is_refused(option, value, what):
    with pytest.raises(TunlabError) as error:
        parse_args([*BASE, option, value])
    assert what in str(error.value) and error.value.fix


def test_one_command_and_a_ruleset_with_semicolons_pass():
    request = parse_args([*BASE, "--nft-cmd", 'add rule inet hostfw forward iifname "mytun2" '
                          "accept", "--nft-rule", "forward ip saddr 200.1.2.3 drop",
                          "--nft-ruleset-text", HOSTFW])
    assert request.nft_ruleset == HOSTFW and len(request.nft_commands) == 1
    assert nftinput.check_command("insert rule inet t c position 2 accept", "--nft-cmd")


def test_an_include_in_a_ruleset_file_is_refused(tmp_path):
    rules = tmp_path / "fw.nft"
    rules.write_text(HOSTFW + 'include "/etc/nftables.conf"\n')
    with pytest.raises(TunlabError, match="include"):
        parse_args([*BASE, "--nft-file", str(rules)])


@pytest.mark.usefixtures("root")
def test_control_nft_echoes_an_included_files_lines(secret):
    """What the refusals prevent: nft run as root prints the included file's lines."""
    result = subprocess.run(["unshare", "--net", "nft", "-c", "-f", "-"],
                            input=f'include "{secret}"\n', capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0
    assert SECRET in result.stderr


@pytest.mark.usefixtures("root")
def test_sudo_fate_does_not_read_a_root_only_nft_file(secret):
    result = _fate_as_sudo_nobody("--nft-file", str(secret), "--json")
    assert result.returncode == 2
    assert "read as nobody, the user who ran sudo" in result.stderr
    assert "Permission denied" in result.stderr
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("option, template", [
    ("--nft-cmd", 'add table inet x; include "{}"'),
    ("--nft-cmd", 'add table inet x\ninclude "{}"'),
    ("--nft-rule", 'forward accept\ninclude "{}"'),
    ("--nft-rule", 'forward accept }} include "{}" table inet y {{ chain c {{'),
])
def test_sudo_fate_does_not_include_a_root_only_file(secret, option, template):
    result = _fate_as_sudo_nobody(option, template.format(secret), "--no-verify")
    assert result.returncode == 2
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.usefixtures("root")
def test_sudo_fate_reads_the_sudo_users_own_file_and_runs(nobody_dir):
    """The same option still works for a file the user may read: the firewall drops."""
    rules = nobody_dir / "hostfw.nft"
    rules.write_text(HOSTFW)
    rules.chmod(0o644)
    result = _fate_as_sudo_nobody("--set", "net.ipv4.ip_forward=1", "--nft-file", str(rules),
                                  "--no-verify", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "dropped"
    assert "hostfw" in json.dumps(report.get("firewall"))


@pytest.mark.usefixtures("root")
def test_read_as_the_sudo_user_follows_their_rights_not_roots(secret, nobody_dir, monkeypatch):
    from tunlab.safefiles import read_as_invoker

    mine = nobody_dir / "mine"
    mine.write_text("nobody may read this\n")
    mine.chmod(0o644)
    fifo = nobody_dir / "fifo"
    os.mkfifo(fifo)
    monkeypatch.setenv("SUDO_UID", "65534")
    assert read_as_invoker(mine) == b"nobody may read this\n"
    with pytest.raises(TunlabError, match="Permission denied"):
        read_as_invoker(secret)
    with pytest.raises(TunlabError, match="not a regular file"):
        read_as_invoker(fifo)  # and never blocks on it
    monkeypatch.delenv("SUDO_UID")
    assert read_as_invoker(secret) == (SECRET + "\n").encode()  # root by itself is root
