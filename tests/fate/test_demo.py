"""`tunlab demo`: the seed's example goal end to end, in a fresh namespace."""

from __future__ import annotations

import json
import subprocess

import pytest

from tunlab.kernel import netns

pytestmark = pytest.mark.usefixtures("root")


def test_demo_json_reports_the_released_packet_equal_to_the_one_sent(tunlab_cmd):
    result = subprocess.run([*tunlab_cmd, "demo", "--json"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    sent, released = report["sent"], report["released"]
    assert (sent["src"], sent["dst"], sent["proto"]) == ("10.0.0.1", "10.0.0.2", "icmp")
    assert (released["src"], released["dst"], released["proto"]) == (
        "10.0.0.1", "10.0.0.2", "icmp")
    assert released["hex"] == sent["hex"]
    assert report["client"]["read"] >= 1 and report["client"]["frames_sent"] >= 1
    client = report["client"]
    assert client["read"] == client["frames_sent"] + client["dropped_no_peer"]
    assert report["client"]["bytes"] >= 8 + len(bytes.fromhex(sent["hex"]))
    assert report["server"]["frames_received"] >= 1 and report["server"]["written"] >= 1
    frame = bytes.fromhex(report["frame_hex"])
    assert frame[:2] == b"TL" and frame[8:] == bytes.fromhex(sent["hex"])
    # The demo's namespace is gone afterwards (other labs may be running at the same time).
    assert not [name for name in netns.list_lab_namespaces() if name.endswith("-demo")]
    fate = report["fate"]
    assert fate["verdict"] == "dropped" and fate["drop_reasons"] == ["IP_INADDRERRORS"]
    assert "ip_forward" in fate["explanation"]


def test_demo_in_words_names_each_hop(tunlab_cmd):
    result = subprocess.run([*tunlab_cmd, "demo"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "create_named_tuntap_devices.sh" in out
    assert "ping 10.0.0.2 -c1" in out
    assert "vpn-client read" in out and "wrote" in out and "mytun2" in out
    assert "the very packet that was sent" in out


def test_demo_traces_the_released_packet_inside_a_pid_namespace(tunlab_cmd):
    """In a container the server's writer thread id is not the host PID tracefs records; the
    demo matches that thread by its unique name, as fate does (found in the container image:
    drop_reasons were empty there)."""
    import json
    import subprocess

    result = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", *tunlab_cmd, "demo",
                             "--json"], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    fate = json.loads(result.stdout)["fate"]
    assert fate["drop_reasons"] == ["IP_INADDRERRORS"]
    assert "tracefs" in fate["evidence"]
