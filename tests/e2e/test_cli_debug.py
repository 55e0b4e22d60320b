"""`tunlab fate`, `tunlab doctor`, `tunlab dropwatch` as a user runs them."""

from __future__ import annotations

import json
import subprocess

import pytest


def run(cmd, *args, env=None):
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.usefixtures("root")
def test_fate_json_reports_ip_noproto(tunlab_cmd):
    result = run(tunlab_cmd, "fate", "--src", "200.1.2.3", "--dst", "10.0.2.1",
                 "--proto", "253", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "dropped" and report["drop_reasons"] == ["IP_NOPROTO"]
    assert report["replies"][0]["icmp_type"] == 3 and report["replies"][0]["icmp_code"] == 2


@pytest.mark.usefixtures("root")
def test_fate_in_words_with_settings_and_a_firewall_file(tunlab_cmd, tmp_path):
    rules = tmp_path / "hostfw.nft"
    rules.write_text("table inet hostfw {\n chain forward { type filter hook forward "
                     "priority filter; policy drop; }\n}\n")
    result = run(tunlab_cmd, "fate", "--src", "200.1.2.3", "--dst", "10.0.0.2",
                 "--set", "net.ipv4.ip_forward=1", "--nft-file", str(rules))
    assert result.returncode == 0, result.stderr
    assert "verdict:   DROPPED" in result.stdout
    assert "NETFILTER_DROP in nft_do_chain()" in result.stdout


@pytest.mark.usefixtures("root")
def test_fate_expect_gives_exit_1_when_the_kernel_disagrees(tunlab_cmd):
    ok = run(tunlab_cmd, "fate", "--src", "200.1.2.3", "--dst", "10.0.2.1",
             "--expect", "delivered")
    assert ok.returncode == 0, ok.stderr
    wrong = run(tunlab_cmd, "fate", "--src", "200.1.2.3", "--dst", "10.0.2.1",
                "--expect", "IP_RPFILTER")
    assert wrong.returncode == 1
    assert "expected IP_RPFILTER" in wrong.stderr


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("args, message", [
    (["--src", "200.1.2", "--dst", "10.0.2.1"], "not an IPv4 or IPv6 address"),
    (["--src", "200.1.2.3", "--dst", "10.0.2.1", "--proto", "bogus"], "unknown protocol"),
    (["--src", "200.1.2.3", "--dst", "10.0.2.1", "--set", "ip_forward"], "KEY=VALUE"),
    (["--src", "200.1.2.3", "--dst", "10.0.2.1", "--set", "net.ipv4.nope=1"], "no such sysctl"),
    (["--src", "200.1.2.3", "--dst", "10.0.2.1", "--nft-file", "/nonexistent"], "cannot read"),
    (["--src", "200.1.2.3", "--dst", "10.0.2.1", "--dev", "eth0"], "not a device of the seed"),
])
def test_fate_bad_input_exit_2(tunlab_cmd, args, message):
    result = run(tunlab_cmd, "fate", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_fate_without_privileges(tunlab_cmd):
    import os

    env = {**os.environ, "TUNLAB_PRETEND_UNPRIVILEGED": "1"}
    result = run(tunlab_cmd, "fate", "--src", "200.1.2.3", "--dst", "10.0.2.1", env=env)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "root" in result.stderr


@pytest.mark.usefixtures("root")
def test_doctor_passes_here_and_fails_without_root(tunlab_cmd):
    import os

    result = run(tunlab_cmd, "doctor", "--json")
    assert result.returncode == 0, result.stdout
    checks = json.loads(result.stdout)["checks"]
    assert all(c["ok"] for c in checks if c["required"])
    env = {**os.environ, "TUNLAB_PRETEND_UNPRIVILEGED": "1"}
    result = run(tunlab_cmd, "doctor", env=env)
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "sudo make lab" in result.stdout


@pytest.mark.usefixtures("root")
def test_dropwatch_counts_the_seed_drops(tunlab_cmd):
    result = run(tunlab_cmd, "dropwatch", "--seconds", "0.5", "--seed-traffic", "--json")
    assert result.returncode == 0, result.stderr
    reasons = {row["reason"] for row in json.loads(result.stdout)}
    assert "IP_NOPROTO" in reasons and "IP_INADDRERRORS" in reasons
