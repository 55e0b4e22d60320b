"""tracefs drop tracing, the martian log and counters (tunlab.kernel.tracefs, .martians,
.counters)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from tunlab.kernel import counters, martians, tracefs
from tunlab.lab import SeedLab
from tunlab.packet.craft import craft

SAMPLE = ("          python-1234    [001] ..s1.  5123.456789: kfree_skb: skbaddr=00000000a1b2c3d4 "
          "rx_sk=0000000000000000 protocol=2048 location=ip_rcv_finish_core+0x2f1/0x4a0 "
          "reason: IP_RPFILTER")


@pytest.mark.usefixtures("root")
def test_reason_names_come_from_the_kernels_format_file():
    names = tracefs.reason_names(tracefs.ensure_tracefs())
    assert "NOT_SPECIFIED" in names.values()
    assert {"IP_NOPROTO", "NETFILTER_DROP", "IP_RPFILTER"} <= set(names.values())
    assert all(isinstance(number, int) for number in names)


def test_parse_a_trace_line():
    drop = tracefs.parse_trace_line(SAMPLE)
    assert isinstance(drop, tracefs.Drop)
    assert (drop.reason, drop.location, drop.pid, drop.is_ipv4) == (
        "IP_RPFILTER", "ip_rcv_finish_core", 1234, True)
    assert tracefs.parse_trace_line("# tracer: nop") is None


def test_numeric_reasons_are_named_from_the_format_file():
    line = SAMPLE.replace("reason: IP_RPFILTER", "reason: 16")
    assert tracefs.parse_trace_line(line, {16: "IP_RPFILTER"}).reason == "IP_RPFILTER"


@pytest.mark.usefixtures("root")
def test_tracer_sees_only_the_writing_threads_drops_and_removes_its_instance():
    with SeedLab() as lab:
        device = lab.device("mytun2")
        tid = lab.ns.run(threading.get_native_id)
        with tracefs.DropTracer(pid=tid, track_receives=True) as tracer:
            name = tracer.name
            assert name in tracefs.list_instances()
            lab.ns.run(device.write, craft("200.1.2.3", "10.0.2.1", 253))
            # The same kind of drop from another thread must not show up.
            other = lab.device("mytun")
            threading.Thread(target=lambda: os.write(
                other.fileno(), craft("200.1.2.3", "10.0.0.1", 253))).start()
        assert name not in tracefs.list_instances()
    assert [d.reason for d in tracer.drops] == ["IP_NOPROTO"]
    assert {d.pid for d in tracer.drops} == {tid}
    receives = [e for e in tracer.events if isinstance(e, tracefs.Receive)]
    assert receives and receives[0].dev == "mytun2"


@pytest.mark.usefixtures("root")
def test_instance_is_removed_when_the_body_raises():
    with pytest.raises(RuntimeError), tracefs.DropTracer() as tracer:
        name = tracer.name
        raise RuntimeError("boom")
    assert name not in tracefs.list_instances()


@pytest.mark.usefixtures("root")
def test_instance_of_a_killed_run_is_removed_by_the_next_run():
    code = ("from tunlab.kernel.tracefs import DropTracer; import time\n"
            "t = DropTracer().start(); print(t.name, flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    name = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert name in tracefs.list_instances()
    assert name in tracefs.cleanup_stale_instances()
    assert name not in tracefs.list_instances()


def test_attribution_separates_our_packet_from_the_reply_in_reused_memory():
    events = [tracefs.Receive("mytun", "aaaa", 34, 1, 1.0),
              tracefs.Receive("lo", "bbbb", 34, 1, 1.1),
              tracefs.Drop("NO_SOCKET", "ping_rcv", 0x800, 1, 1.2, skbaddr="bbbb"),
              tracefs.Receive("lo", "aaaa", 34, 1, 1.3),  # memory of our skb, reused
              tracefs.Drop("NO_SOCKET", "ping_rcv", 0x800, 1, 1.4, skbaddr="aaaa")]
    ours, others = tracefs.attribute_drops(events, "mytun", 34)
    assert ours == [] and len(others) == 2
    events.append(tracefs.Drop("IP_INHDR", "ip_forward", 0x800, 1, 1.5, skbaddr="cccc"))
    events.insert(1, tracefs.Drop("IP_RPFILTER", "ip_rcv_finish_core", 0x800, 1, 1.05,
                                skbaddr="aaaa"))
    ours, _ = tracefs.attribute_drops(events, "mytun", 34)
    assert [d.reason for d in ours] == ["IP_RPFILTER"]


def test_counter_delta_keeps_only_changes():
    assert counters.counter_delta({"a": 1, "b": 2}, {"a": 1, "b": 5, "c": 1}) == {"b": 3, "c": 1}


@pytest.mark.usefixtures("root")
def test_counters_see_a_packet_arrive():
    with SeedLab() as lab:
        device = lab.device("mytun2")
        before = counters.snapshot_counters(lab.ns)
        lab.ns.run(device.write, craft("200.1.2.3", "10.0.2.1", 253))
        delta = counters.counter_delta(before, counters.snapshot_counters(lab.ns))
    assert delta["mytun2.rx_packets"] == 1
    assert delta["IpInUnknownProtos"] == 1


def test_martian_lines_are_matched_by_address_and_device():
    lines = ["martian source 10.0.0.2 from 10.0.0.1, on dev mytun2",
             "martian source 10.0.0.9 from 10.0.0.1, on dev mytun2",
             "martian source 10.0.0.2 from 10.0.0.1, on dev eth0"]
    assert martians.matching_martians(lines, "10.0.0.1", "10.0.0.2", ["mytun2"]) == lines[:1]


@pytest.mark.usefixtures("root")
def test_watch_drops_counts_reasons_and_locations():
    with SeedLab() as lab:
        device = lab.device("mytun2")

        def traffic():
            for _ in range(3):
                lab.ns.run(device.write, craft("200.1.2.3", "10.0.2.1", 253))

        rows = tracefs.watch_drops(lab.ns, 0.3, traffic)
    assert ("IP_NOPROTO", "ip_local_deliver_finish") in {(r, loc) for r, loc, n in rows
                                                         if n >= 3}
