"""Per-namespace sysctls and routing lookups (tunlab.kernel.sysctl, tunlab.kernel.routes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunlab.errors import TunlabError
from tunlab.kernel import routes as routing
from tunlab.kernel import sysctl
from tunlab.lab import SeedLab


@pytest.fixture(scope="module")
def lab():
    with SeedLab() as seed:
        yield seed


@pytest.mark.usefixtures("root")
def test_set_and_restore_only_inside_the_namespace(lab):
    host_before = Path("/proc/sys/net/ipv4/conf/all/rp_filter").read_text()
    with sysctl.SysctlChanges(lab.ns, {"net.ipv4.conf.all.rp_filter": 2,
                                       "net.ipv4.ip_forward": 1}):
        assert sysctl.get(lab.ns, "net.ipv4.conf.all.rp_filter") == "2"
        assert sysctl.get(lab.ns, "net.ipv4.ip_forward") == "1"
        assert Path("/proc/sys/net/ipv4/conf/all/rp_filter").read_text() == host_before
    assert sysctl.get(lab.ns, "net.ipv4.conf.all.rp_filter") == "0"
    assert sysctl.get(lab.ns, "net.ipv4.ip_forward") == "0"


@pytest.mark.usefixtures("root")
def test_restore_after_an_exception(lab):
    with pytest.raises(RuntimeError), sysctl.SysctlChanges(lab.ns, {"net.ipv4.ip_forward": 1}):
        raise RuntimeError("boom")
    assert sysctl.get(lab.ns, "net.ipv4.ip_forward") == "0"


@pytest.mark.usefixtures("root")
def test_a_bad_name_changes_nothing(lab):
    with pytest.raises(TunlabError, match="no such sysctl"):
        sysctl.SysctlChanges(lab.ns, {"net.ipv4.ip_forward": 1,
                                      "net.ipv4.conf.all.nonsense": 1}).apply()
    assert sysctl.get(lab.ns, "net.ipv4.ip_forward") == "0"


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("key", ["kernel.hostname", "net/ipv4/../../etc", "rp_filter"])
def test_refuses_names_outside_net(lab, key):
    with pytest.raises(TunlabError):
        sysctl.get(lab.ns, key)


def test_refuses_the_host_namespace():
    with pytest.raises(TunlabError, match="host"):
        sysctl.set(None, "net.ipv4.ip_forward", 1)  # type: ignore[arg-type]


def test_parse_assignments():
    assert sysctl.parse_assignments(["net.ipv4.ip_forward=1"]) == {"net.ipv4.ip_forward": "1"}
    with pytest.raises(TunlabError, match="KEY=VALUE"):
        sysctl.parse_assignments(["net.ipv4.ip_forward"])


@pytest.mark.usefixtures("root")
def test_local_table_holds_the_tun_addresses(lab):
    local = {(r["type"], r["dst"], r["dev"]) for r in routing.routes(lab.ns, "local")}
    assert ("local", "10.0.0.1", "mytun") in local
    assert ("local", "10.0.2.1", "mytun2") in local
    assert "10.0.0.0/24 dev mytun" in routing.routes_text(lab.ns, "main")


@pytest.mark.usefixtures("root")
def test_route_get_own_address_goes_to_loopback_and_the_neighbour_to_mytun(lab):
    own = routing.route_get(lab.ns, "10.0.0.1")
    assert own["dev"] == "lo" and own["type"] == "local"
    other = routing.route_get(lab.ns, "10.0.0.2")
    assert other["dev"] == "mytun" and other["prefsrc"] == "10.0.0.1"
    assert "loopback" in routing.describe_lookup(own)
    why = routing.why_own_address_loops_back(lab.ns)
    assert why["local_route"]["dev"] == "mytun"
    assert "local table" in why["explanation"]


@pytest.mark.usefixtures("root")
def test_route_get_for_an_arriving_packet_reports_the_refusal(lab):
    answer = routing.route_get(lab.ns, "10.0.0.2", src="200.1.2.3", iif="mytun2")
    assert "error" in answer  # forwarding is off in a new namespace
    assert routing.describe_lookup(answer).startswith("No route")


def test_a_refused_write_says_why_by_the_kernels_reason() -> None:
    import errno

    from tunlab.kernel.sysctl import _refusal_fix

    assert "unmask=/proc/sys" in _refusal_fix(errno.EROFS)
    assert "CAP_NET_ADMIN" in _refusal_fix(errno.EPERM)
    assert "allowed values" in _refusal_fix(errno.EINVAL)
