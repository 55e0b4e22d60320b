"""scripts/create_named_tuntap_devices.sh: creates the seed's devices, idempotent, --delete."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tunlab.kernel import netns
from tunlab.lab import script_path

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture
def ns():
    with netns.create("script") as namespace:
        yield namespace


def _addresses(ns: netns.Namespace) -> dict[str, list[str]]:
    links = json.loads(ns.ip("-j", "addr"))
    return {link["ifname"]: [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"]
                             if a["family"] == "inet"] for link in links}


def test_creates_both_devices_with_addresses_and_up(ns):
    result = ns.exec(["bash", str(script_path())])
    assert "mytun: created" in result.stdout
    addrs = _addresses(ns)
    assert addrs["mytun"] == ["10.0.0.1/24"]
    assert addrs["mytun2"] == ["10.0.2.1/24"]
    for dev in ("mytun", "mytun2"):
        details = json.loads(ns.ip("-j", "-d", "link", "show", dev))[0]
        assert details["linkinfo"]["info_kind"] == "tun"
        assert "UP" in details["flags"]


def test_second_run_changes_nothing(ns):
    ns.exec(["bash", str(script_path())])
    before = ns.ip("-d", "addr")
    second = ns.exec(["bash", str(script_path())])
    assert "created" not in second.stdout and "added" not in second.stdout
    assert ns.ip("-d", "addr") == before


def test_delete_removes_both(ns):
    ns.exec(["bash", str(script_path())])
    out = ns.exec(["bash", str(script_path()), "--delete"]).stdout
    assert "deleted mytun" in out and "deleted mytun2" in out
    names = [link["ifname"] for link in json.loads(ns.ip("-j", "link"))]
    assert names == ["lo"]


def test_refuses_a_non_tun_device_of_the_same_name(ns):
    ns.ip("link", "add", "mytun", "type", "veth", "peer", "name", "mypeer")
    result = ns.exec(["bash", str(script_path())], check=False)
    assert result.returncode == 1
    assert "not a TUN device" in result.stderr


def test_without_root_says_what_to_do():
    nobody = subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True)
    if nobody.returncode != 0:
        pytest.skip("no 'nobody' user on this machine")
    result = subprocess.run(
        ["setpriv", f"--reuid={nobody.stdout.strip()}", "--regid=65534", "--clear-groups",
         "bash", str(script_path())], capture_output=True, text=True,
        env={"PATH": os.environ["PATH"]})
    assert result.returncode == 2
    assert "needs root" in result.stderr and "sudo" in result.stderr


def test_unknown_argument_is_a_usage_error(ns):
    result = ns.exec(["bash", str(script_path()), "--bogus"], check=False)
    assert result.returncode == 2 and "usage" in result.stderr
