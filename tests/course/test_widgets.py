"""tunlab.course (its lesson, exercises and panels), driven headless the way a browser drives them
(``Button.click()``, ``.value = ...``), asserting on what the kernel really did."""

from __future__ import annotations

import json

import pytest
from labtools import wait_for

from tunlab import course
from tunlab.course import checkers, cleanup, exercises, plots, recording, reports, style, tables
from tunlab.course.panels import doctor_panel, fix_panel, route_view, tunnel_panel
from tunlab.fate.report import FateReport, Verdict
from tunlab.kernel import netns
from tunlab.kernel.doctor import Check
from tunlab.lab import measure
from tunlab.lab import vpn as vpn_lab


@pytest.fixture
def seed_lesson():
    lesson = course.Lesson("test-seed", lab="seed", quiet=True)
    assert lesson.live
    yield lesson
    lesson.close()


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("TUNLAB_PRETEND_UNPRIVILEGED", "1")


# -- the packet builder, with the kernel's own verdicts ---------------------------------------

@pytest.fixture
def fate_module():
    from tunlab import fate

    return fate


def test_packet_builder_shows_the_kernels_rp_filter_drop(fate_module):
    builder = course.PacketBuilder()
    builder.src.value = "200.1.2.3"
    builder.ip_forward.value = True
    builder.rp_filter.value = 1
    builder.send.click()  # how fast the answer shows is measured by `make bench`
    report = builder.last_report
    assert builder.last_error is None, builder.last_error
    assert report.verdict == "dropped"
    assert "IP_RPFILTER" in report.drop_reasons
    assert "dropped" in builder.result.value and "IP_RPFILTER" in builder.result.value
    assert bytes(builder.path.value).startswith(b"\x89PNG")
    assert builder.last_params["sysctls"]["net.ipv4.conf.all.rp_filter"] == 1


@pytest.mark.usefixtures("root")
def test_packet_builder_own_source_is_a_martian_with_a_log_line(fate_module):
    builder = course.PacketBuilder(src="10.0.0.1", ip_forward=True, log_martians=True)
    builder.send.click()
    report = builder.last_report
    assert report.verdict == "dropped"
    assert any("martian source 10.0.0.2 from 10.0.0.1" in line for line in report.martian_log)
    assert "martian source" in builder.result.value


@pytest.mark.usefixtures("root")
def test_packet_builder_firewall_and_noproto(fate_module):
    builder = course.PacketBuilder(src="200.1.2.3", ip_forward=True, firewall=True)
    builder.send.click()
    assert builder.last_report.drop_reasons == ["NETFILTER_DROP"]
    builder.firewall.value = False
    builder.proto.value = "253"
    builder.dst.value = "10.0.2.1"
    builder.send.click()
    assert "IP_NOPROTO" in builder.last_report.drop_reasons
    builder.proto.value = "icmp"
    builder.send.click()
    assert builder.last_report.verdict == "delivered"
    assert builder.drop_counts() == {"NETFILTER_DROP": 1, "IP_NOPROTO": 1, "delivered": 1}


def test_packet_builder_reports_errors_in_the_panel():
    def broken(*args, **kwargs):
        raise ValueError("no such address")

    builder = course.PacketBuilder(fate_fn=broken)
    builder.send.click()
    assert builder.last_report is None and "no such address" in builder.last_error
    assert "no such address" in builder.bar.error.value  # the panel's own error line
    assert builder.errors == ["ValueError: no such address"]
    assert builder.path.layout.display == "none"  # no figure of an earlier packet
    assert not builder.send.disabled


def test_packet_builder_params_match_the_fate_contract():
    seen = {}

    def fake(src, dst, **kwargs):
        seen.update(kwargs, src=src, dst=dst)
        return FateReport(verdict=Verdict.FORWARDED, drop_reasons=[], martian_log=[],
                          replies=[], counters={}, explanation="ok")

    builder = course.PacketBuilder(fate_fn=fake, src="10.0.2.33", proto="udp", dport=53)
    builder.firewall.value = True
    builder.rp_filter.value = 2
    builder.send.click()
    assert seen["src"] == "10.0.2.33" and seen["proto"] == "udp" and seen["dport"] == 53
    assert seen["dev"] == "mytun2" and seen["ttl"] == 64
    assert seen["sysctls"] == {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 2,
                               "net.ipv4.conf.all.accept_local": 0,
                               "net.ipv4.conf.all.log_martians": 1}
    assert "policy drop" in seen["nft_ruleset"]
    assert "forwarded" in builder.result.value


def test_recorded_fate_is_used_without_root(offline):
    builder = course.PacketBuilder(src="200.1.2.3", rp_filter=1)
    builder.send.click()
    report = builder.last_report
    assert report.recorded is True
    if report.verdict != "not recorded":
        assert "IP_RPFILTER" in report.drop_reasons
    assert "recorded" in builder.result.value
    builder.src.value = "203.0.113.99"  # never recorded
    builder.send.click()
    assert builder.last_report.verdict == "not recorded"
    assert "sudo make lab" in builder.result.value


def test_fate_html_renders_every_part():
    markup = reports.fate_html(FateReport.from_dict({
        "verdict": "dropped", "drop_reasons": ["IP_RPFILTER"],
        "martian_log": ["martian source 10.0.0.2 from 200.1.2.3, on dev mytun2"],
        "replies": [{"dev": "mytun2", "src": "10.0.2.1", "dst": "200.1.2.3", "proto": "icmp",
                     "icmp_type": 3, "icmp_code": 1}],
        "counters": {"TcpExtIPReversePathFilter": 1, "unchanged": 0},
        "explanation": "strict <rp_filter>"}), elapsed=0.4)
    for part in ("dropped", "IP_RPFILTER", "martian source", "icmp type 3 code 1",
                 "TcpExtIPReversePathFilter", "strict &lt;rp_filter&gt;", "0.4 s"):
        assert part in markup
    assert "unchanged" not in markup


def test_sweep_and_count_outcomes():
    def fake(src, dst, **kwargs):
        return FateReport.from_dict(
            {"verdict": "forwarded", "drop_reasons": [], "martian_log": [], "replies": [],
             "counters": {}} if src.startswith("10.0.2.") else
            {"verdict": "dropped", "drop_reasons": ["IP_RPFILTER"], "martian_log": [],
             "replies": [], "counters": {}})

    results = reports.sweep(fake, ["10.0.2.33", "200.1.2.3", "8.8.8.8"])
    assert course.count_outcomes(results) == {"forwarded": 1, "IP_RPFILTER": 2}


# -- routing, TUN reads, frames, the seed goal ------------------------------------------------

@pytest.mark.usefixtures("root")
def test_route_view_asks_the_kernel(seed_lesson):
    view = course.RouteView(seed_lesson)
    assert "10.0.0.0/24 dev mytun" in view.tables.value
    assert "local 10.0.0.1 dev mytun" in view.tables.value
    view.address.value = "10.0.0.1"
    view.lookup.click()
    assert view.last_device == "lo" and view.last_table == "local"
    assert view.last_output.startswith("local 10.0.0.1 dev lo")
    view.address.value = "10.0.0.2"
    view.lookup.click()
    assert (view.last_device, view.last_table) == ("mytun", "main")
    assert "ip route get 10.0.0.2" in view.result.value and view.path.value


@pytest.mark.usefixtures("root")
def test_pi_reader_shows_the_four_byte_header(seed_lesson):
    reader = course.PiReader(seed_lesson)
    reader.read.click()
    bare = reader.last_read
    assert reader.last_error is None and bare[0] == 0x45 and len(bare) == 84
    reader.no_pi.value = False
    reader.read.click()
    with_pi = reader.last_read
    assert with_pi[:4] == b"\x00\x00\x08\x00" and with_pi[4] == 0x45 and len(with_pi) == 88
    assert "not IPv4" in reader.result.value
    assert with_pi[4:][12:20] == bare[12:20]  # same addresses


@pytest.mark.usefixtures("root")
def test_ping_device_counts_local_address_loops_back(seed_lesson):
    counts = course.ping_device_counts(seed_lesson.ns, count=2)
    assert counts["ping 10.0.0.1: mytun"] == 0 and counts["ping 10.0.0.1: lo"] >= 4
    assert counts["ping 10.0.0.2: mytun"] == 0 or counts["ping 10.0.0.2: lo"] == 0


@pytest.mark.usefixtures("root")
def test_seed_tunnel_capture_frame_explorer_and_goal_panel(seed_lesson):
    tunnel = course.SeedTunnel(seed_lesson, capture=True, pings=1)
    try:
        kinds = [f["type"] for f in tunnel.session]
        assert kinds.count("HELLO") == 2 and "DATA" in kinds
        explorer = course.FrameExplorer(seed_lesson, tunnel.server)
        explorer.size.value = 200
        explorer.send.click()
        assert explorer.last_frame[:4] == b"TL\x01\x02"
        assert int.from_bytes(explorer.last_frame[4:8], "big") == 228
        assert "TunlabFrame" in explorer.last_dissection and "icmp" in explorer.last_dissection
        assert bytes(explorer.layout_image.value).startswith(b"\x89PNG")

        panel = course.SeedGoalPanel(seed_lesson, tunnel.server, tunnel.client)
        panel.target.value = "10.0.0.2"
        panel.ping.click()
        result = panel.last_result
        assert result.echo_read == 1 and result.echo_written == 1
        assert result.sent_hex == result.released_hex != ""
        assert result.counters.get("IpInAddrErrors") == 1  # ip_forward=0 in the lab
        assert "IP_INADDRERRORS" in panel.result.value
        panel.target.value = "10.0.0.1"
        panel.ping.click()
        assert panel.last_result.echo_read == 0 and panel.last_result.ping_rc == 0
        ok = course.check("04", 0, panel)
        assert ok and "read 0 echo request" in ok.message
        assert not course.check("04", 1, panel)
        events = course.events_dicts(tunnel.client, {"read", "sent"})
        assert {e["kind"] for e in events} == {"read", "sent"}
        assert "<table>" in tables.events_html(events)
    finally:
        tunnel.close()


# -- the two-host scenarios --------------------------------------------------------------------

@pytest.mark.usefixtures("root")
def test_fix_panel_follows_each_drop_and_the_checker_asks_the_kernels():
    lesson = course.Lesson("test-07", lab="two-host", quiet=True)
    try:
        scenario = vpn_lab.VpnScenario.for_lesson(lesson)
        assert lesson.host("c") is scenario.c
        panel = course.FixPanel(lesson, scenario)
        stages = []
        for fix in (None, "route_a", "forward_b", "firewall_b", "route_c"):
            if fix:
                panel.boxes[fix].value = True
            panel.ping_button.click()
            stages.append((panel.last_result.stage, panel.last_result.reason))
        assert [s for s, _ in stages] == [0, 4, 5, 6, None]
        assert "IP_INADDRERRORS" in stages[1][1] and "NETFILTER_DROP" in stages[2][1]
        assert panel.last_result.ok and "reply received" in panel.result.value
        view = panel.step(source="198.18.0.1")
        assert "IP_RPFILTER" in view.result.reason
        assert "data:image/png;base64" in view._repr_html_()
        panel.boxes["route_c"].value = False  # revert one: the reply cannot come back
        panel.ping_button.click()
        assert panel.last_result.stage == 6
        assert course.check("07", "route_a forward_b firewall_b route_c", panel)
        extra = course.check("07", {"route_a", "forward_b", "firewall_b", "route_c",
                                    "rp_filter_b_off"}, panel)
        assert not extra and "not needed" in extra.message
        partial = course.check("07", {"route_a"}, panel)
        assert not partial and "stopped here: IP_INADDRERRORS on b" in partial.message
        assert scenario.applied == {"route_a", "forward_b", "firewall_b"}  # as ticked
    finally:
        lesson.close()


@pytest.mark.usefixtures("root")
def test_tunnel_panel_samples_live_and_stops_its_threads():
    lesson = course.Lesson("test-08", lab="two-host", quiet=True)
    try:
        panel = course.TunnelPanel(lesson.lab, interval=0.2)
        panel.start_button.click()
        assert panel.running and lesson.lab.client is not None
        mbps = panel.traffic(seconds=1)
        assert mbps and mbps > 10
        # the sampler renders each sample after appending it: wait (bounded) for both
        assert wait_for(lambda: len(panel.samples) >= 5 and panel.frames_rendered >= 5,
                        timeout=10), (len(panel.samples), panel.frames_rendered)
        assert panel.samples[-1]["bytes"] > 1_000_000
        assert bytes(panel.image.value).startswith(b"\x89PNG")
        panel.loss.value = 5
        assert "numgen random" in lesson.lab.b.exec(["nft", "list", "ruleset"]).stdout
        panel.stop_button.click()
        assert not panel.running and lesson.lab.client is None
        assert measure.LOSS_TABLE not in lesson.lab.b.exec(["nft", "list", "ruleset"]).stdout
        assert not [t for t in __import__("threading").enumerate() if t.name == "tunlab-panel"]
        panel.close()
    finally:
        lesson.close()


@pytest.mark.usefixtures("root")
def test_lesson_08_experiments_on_a_small_scale():
    lesson = course.Lesson("test-08b", lab="two-host", quiet=True)
    try:
        lesson.lab.start_tunnel()
        mtus = measure.mtu_experiment(lesson.lab, (1400, 9000), seconds=1)
        assert set(mtus) == {"tun MTU 1400", "tun MTU 9000"} and min(mtus.values()) > 10
        assert '"mtu": 1400' in lesson.lab.a.ip("-j", "link", "show", "tun0").replace(
            '"mtu":1400', '"mtu": 1400')
        loss = measure.loss_experiment(lesson.lab, losses=(0, 10), seconds=1, pings=120)
        direct = dict(loss["throughput"]["direct TCP (underlay)"])
        assert direct[0.0] > direct[10.0] > 0
        tunnel_rtts = loss["rtts"]["TCP in the tunnel @ 10% loss"]
        direct_rtts = loss["rtts"]["direct TCP @ 10% loss"]
        # direct: loss stays loss (no loss in 120 echoes at 10% has a chance of 3e-6)
        assert direct_rtts.count(None) >= 1
        assert tunnel_rtts.count(None) <= 1          # tunnel: TCP retransmits underneath
        assert "tunlab_loss" not in lesson.lab.a.exec(["nft", "list", "ruleset"]).stdout
        paths = measure.data_path_experiment(lesson.lab, seconds=1)
        assert len(paths) == 2 and min(paths.values()) > 10
        # afterwards the lesson's tunnel runs again, on the simple path
        assert lesson.lab.client.connected and not lesson.lab.client.device.vnet_hdr
    finally:
        lesson.close()


def test_doctor_panel_runs_the_checks():
    panel = course.DoctorPanel()
    assert panel.last_checks and all(c.name and isinstance(c.ok, bool) for c in panel.last_checks)
    panel.rerun.click()
    assert "checks pass" in panel.table.value
    report = doctor_panel.run_doctor(lambda: [Check("x", False, "what for", "do this")])
    assert "0 of 1 checks pass" in report._repr_html_() and "do this" in report._repr_html_()


# -- course: lessons, recordings, exercises ----------------------------------------------------

@pytest.mark.usefixtures("root")
def test_lesson_live_removes_its_namespaces(seed_lesson):
    names = [ns.name for ns in seed_lesson.lab.namespaces]
    out = seed_lesson.sh("links", "ip", "-br", "link", show=False)
    assert "mytun2" in out and not out.recorded
    seed_lesson.close()
    assert not set(names) & set(netns.list_lab_namespaces())


def test_lesson_without_root_explains_and_replays_recordings(offline):
    lesson = course.Lesson("02-routing-tables", lab="seed", quiet=True)
    assert not lesson.live and lesson.lab is None
    banner = lesson.banner_html()
    assert "read-only mode" in banner and "sudo make lab" in banner
    out = lesson.sh("get_own", "ip", "route", "get", "10.0.0.1", show=False)
    assert out.recorded and "local 10.0.0.1 dev lo" in out.text
    assert "recorded example" in out._repr_html_()
    missing = lesson.sh("never-recorded", "true", show=False)
    assert "sudo make lab" in missing.text
    assert lesson.run("never-recorded", lambda: 1 / 0) is None
    lesson.close()


@pytest.mark.usefixtures("root")
def test_recording_round_trip(tmp_path, monkeypatch, seed_lesson):
    monkeypatch.setattr(recording, "RECORDED_DIR", tmp_path)
    monkeypatch.setenv(recording.RECORD_ENV, "1")
    lesson = course.Lesson("rec", lab="seed", quiet=True)
    assert lesson.run("bytes", lambda: b"\x01\x02") == b"\x01\x02"
    lesson.sh("rules", "ip", "rule", show=False)
    lesson.close()
    saved = json.loads((tmp_path / "rec.json").read_text())
    assert saved["bytes"] == {"__bytes__": "0102"} and "lookup local" in saved["rules"]["text"]
    monkeypatch.setenv("TUNLAB_PRETEND_UNPRIVILEGED", "1")
    replay = course.Lesson("rec", lab="seed", quiet=True)
    assert replay.run("bytes", lambda: b"") == b"\x01\x02"


def test_register_cleanup_closes_on_exit_hooks():
    closed = []

    class Thing:
        def close(self):
            closed.append(True)

    course.register_cleanup(Thing())
    cleanup._close_all()
    assert closed == [True]


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("key, right, wrong", [
    ("00", ("CAP_NET_ADMIN", "CAP_SYS_ADMIN"), ("CAP_NET_ADMIN", "CAP_SYS_TIME")),
    ("01", 0x003C, 0x0800),
    ("03", "54 4c 01 02 00 00 05 78", "54 4c 01 03 00 00 05 78"),
    ("06", "SKB_DROP_REASON_NO_SOCKET", "IP_NOPROTO"),
    ("08", 1360, 1400),
])
def test_exercise_answers_are_checked_without_being_stored(key, right, wrong):
    assert course.check(key, right)
    assert not course.check(key, wrong)
    assert len(checkers.ANSWERS[key]) == 64 and int(checkers.ANSWERS[key], 16) >= 0  # a digest


@pytest.mark.usefixtures("root")
def test_exercise_02_asks_the_lab(seed_lesson):
    right = course.check("02", ("lo", "local"), seed_lesson)
    assert right and "local 10.0.0.1 dev lo" in right.message  # the kernel's own words
    wrong = course.check("02", ("mytun", "main"), seed_lesson)
    assert not wrong and "dev lo" not in wrong.message  # a wrong try is not given the answer


def test_exercise_05_offline_accepts_the_subnet(offline):
    assert course.check("05", "10.0.2.33")
    assert not course.check("05", "10.0.2.1") and not course.check("05", "200.1.2.3")


@pytest.mark.usefixtures("root")
def test_exercise_05_asks_the_kernel(fate_module):
    ok = course.check("05", "10.0.2.33")
    assert ok and "forwarded" in ok.message
    wrong = course.check("05", "200.1.2.3")
    assert not wrong and "IP_RPFILTER" in wrong.message


def test_hints_unfold_one_at_a_time_and_questions_render():
    exercises._HINTS_GIVEN.pop("06", None)
    box = course.hint("06")
    assert course.hints_shown("06") == []  # running the cell reveals nothing
    box.button.click()
    box.button.click()
    assert "Hint 2 of 3" in box.shown.value and box.button.description == "show hint 3 of 3"
    assert "port 9" in course.question("06")._repr_html_()
    empty = course.check("06", None)
    assert not empty and "No answer yet" in empty._repr_html_()


def test_load_bench_rtt_rounds(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"results": [
        {"name": "tunlab fast", "rtt": {"p50_ms": 0.3, "rounds_p50_ms": [0.2, None, 0.4]}},
        {"name": "old run", "rtt": {"p50_ms": 0.3}}, {"name": "no rtt"}, "junk"]}))
    assert course.load_bench_rtt_rounds(path) == {"tunlab fast": [0.2, None, 0.4]}
    assert course.load_bench_rtt_rounds(tmp_path / "missing.json") == {}
    path.write_text("not json")
    assert course.load_bench_rtt_rounds(path) == {}
    shipped = course.load_bench_rtt_rounds()  # the committed bench run has ten rounds each
    assert shipped and all(len(rounds) == 10 for rounds in shipped.values())
    fig = plots.latency(shipped, title="rounds", xlabel="round", count_lost=False)
    assert fig.axes[0].get_xlabel() == "round"
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert len(labels) == len(shipped) and not any("lost" in label for label in labels)


def test_load_bench_accepts_list_and_dict(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"results": [{"name": "veth", "mbps": 19000},
                                            {"label": "tunnel", "bits_per_second": 1.4e9}]}))
    assert course.load_bench(path) == {"veth": 19000.0, "tunnel": 1400.0}
    path.write_text(json.dumps({"veth": {"mbps": 5}, "x": 7}))
    assert course.load_bench(path) == {"veth": 5.0, "x": 7.0}
    assert course.load_bench(tmp_path / "missing.json") == {}


def test_route_figure_and_step_view_render():
    fig = route_view.route_figure("10.0.0.1", "lo", "local")
    assert "table local\n(wins first)" in "\n".join(plots.figure_text(fig))
    assert "(not recorded)" in repr(fix_panel.StepView(None))


# -- after lesson.finish(), reset lab, errors in the panel (issue 13) --------------------------

@pytest.mark.usefixtures("root")
def test_route_view_tells_tables_and_invalid_input_and_never_keeps_an_old_figure(seed_lesson):
    view = course.RouteView(seed_lesson)
    view.address.value = "10.0.0.255"  # the broadcast address lives in table local
    assert (view.last_device, view.last_table, view.last_type) == ("mytun", "local",
                                                                   "broadcast")
    assert view.path.layout.display != "none"
    view.address.value = "8.8.8.8"  # the lab has no default route
    assert view.last_device == "" and "Network is unreachable" in view.result.value
    assert view.path.layout.display == "none" and view.path.value == b""
    view.address.value = "hello"
    assert "invalid input" in view.result.value and "no route" not in view.result.value
    assert view.path.layout.display == "none" and not view.errors


@pytest.mark.usefixtures("root")
def test_panels_rebuild_the_lab_after_finish_and_reset_lab_starts_afresh():
    lesson = course.Lesson("test-runall", lab="seed", quiet=True)
    try:
        reader = course.PiReader(lesson)
        view = course.RouteView(lesson)
        tunnel = course.SeedTunnel(lesson)
        panel = course.SeedGoalPanel(lesson, tunnel.server, tunnel.client)
        old = [ns.name for ns in lesson.lab.namespaces]
        tunnel.close()
        lesson.finish()
        assert not set(old) & set(netns.list_lab_namespaces())
        reader.read.click()  # a participant clicks after Run All: the lab comes back
        assert reader.last_read and reader.last_read[0] == 0x45 and not reader.errors
        new = [ns.name for ns in lesson.lab.namespaces]
        assert new != old and set(new) <= set(netns.list_lab_namespaces())
        view.address.value = "10.0.0.1"
        assert (view.last_device, view.last_table) == ("lo", "local") and not view.errors
        panel.ping.click()  # the tunnel restarts in the new lab
        assert panel.last_result.echo_read == 1 and not panel.errors
        assert panel.server is not tunnel.server or tunnel.running
        panel.bar.reset_button.click()
        assert not panel.errors and lesson.lab.namespaces[0].name not in new
        assert panel.last_result is None and reader.last_read is None  # every panel reset
        assert panel.path.layout.display == "none" and view.result.value == ""
        assert "fresh lab" in panel.bar.status.value
        panel.ping.click()
        panel.ping.click()
        assert panel.last_result.echo_read == 1 and not panel.errors
    finally:
        lesson.close()
    assert not [n for n in netns.list_lab_namespaces() if n in
                [ns.name for ns in lesson.lab.namespaces]]


@pytest.mark.usefixtures("root")
def test_goal_panel_tells_the_way_back_through_mytun2(seed_lesson):
    tunnel = course.SeedTunnel(seed_lesson)
    try:
        panel = course.SeedGoalPanel(seed_lesson, tunnel.server, tunnel.client)
        panel.target.value = "10.0.2.33"
        panel.ping.click()
        r = panel.last_result
        assert r.echo_read == 0 and r.echo_server_read == 1
        assert r.echo_client_written == 1 and r.direction == "mytun2 → mytun"
        assert "mytun2 → vpn-server → vpn-client → mytun" in panel.result.value
        assert "nothing entered" not in panel.result.value
        fig_text = " ".join(plots.figure_text(panel.figure(r)))
        assert "vpn-server\nencapsulate" in fig_text and "mytun\n(released)" in fig_text
        panel.target.value = "no address"
        panel.ping.click()
        assert "invalid input" in panel.result.value and panel.last_result is None
        assert panel.path.layout.display == "none"
    finally:
        tunnel.close()


def test_packet_builder_invalid_input_and_new_input_clear_the_old_figure(fate_module):
    builder = course.PacketBuilder(src="200.1.2.3")
    builder.send.click()
    assert builder.last_report and builder.path.layout.display != "none"
    builder.src.value = "hello"  # a new input: the old verdict's figure goes
    assert builder.path.layout.display == "none" and "inputs changed" in builder.result.value
    builder.send.click()
    assert "invalid input" in builder.result.value and builder.last_report is None
    assert builder.path.layout.display == "none" and not builder.errors


@pytest.mark.usefixtures("root")
def test_fix_panel_has_a_source_field_and_survives_a_rebuilt_lab():
    lesson = course.Lesson("test-07b", lab="two-host", quiet=True)
    try:
        panel = course.FixPanel(lesson, vpn_lab.VpnScenario.for_lesson(lesson))
        for fix in ("route_a", "forward_b", "firewall_b", "route_c"):
            panel.boxes[fix].value = True
        panel.source.value = "198.18.0.1"
        panel.ping_button.click()
        assert panel.last_result.source == "198.18.0.1"
        assert "IP_RPFILTER" in panel.last_result.reason and "from 198.18.0.1" in \
            panel.result.value
        panel.source.value = "not an ip"
        panel.ping_button.click()
        assert "invalid input" in panel.result.value and panel.last_result is None
        panel.source.value = ""
        lesson.finish()
        panel.ping_button.click()  # new lab, new scenario with the ticked fixes
        assert panel.last_result.ok, panel.last_result
        assert not panel.errors
    finally:
        lesson.close()


@pytest.mark.usefixtures("root")
def test_tunnel_panel_stop_then_start_works_and_thread_errors_show_in_the_panel(monkeypatch):
    lesson = course.Lesson("test-08b", lab="two-host", quiet=True)
    try:
        panel = course.TunnelPanel(lesson.lab, interval=0.2)
        for _ in range(2):
            panel.start_button.click()
            assert panel.running and lesson.lab.client is not None, panel.errors
            assert "ping 10.9.0.2 through it: answered" in panel.status.value
            panel.stop_button.click()
            assert not panel.running and lesson.lab.client is None
        assert not panel.errors

        def broken(*args, **kwargs):
            raise RuntimeError("iperf3 exploded")

        monkeypatch.setattr(tunnel_panel, "lab_iperf3", broken)
        panel.start_button.click()
        panel.traffic_button.click()
        panel._traffic.join(5)
        assert "iperf3 exploded" in panel.bar.error.value
        assert panel.errors == ["RuntimeError: iperf3 exploded"]
        lesson.finish()
        panel.start_button.click()  # after finish: a new lab, a new tunnel
        assert panel.running and lesson.lab_ready and lesson.lab.client is not None
        panel.close()
    finally:
        lesson.close()


@pytest.mark.usefixtures("root")
def test_kernel_log_view_shows_a_martian_line(fate_module):
    report = course.live_fate("10.0.0.1", "10.0.0.2", sysctls={
        "net.ipv4.ip_forward": 1, "net.ipv4.conf.all.log_martians": 1})
    assert report.martian_log
    view = course.kernel_log()
    assert any("martian source 10.0.0.2 from 10.0.0.1" in line for line in view.lines)
    assert "martian source" in view.text.value
    panel = course.PacketBuilder(fate_fn=lambda *a, **k: report)
    panel.bar.log_button.click()
    assert panel.bar.log_box.children and panel.bar.log_view.lines
    panel.bar.log_button.click()
    assert not panel.bar.log_box.children


def test_presenter_mode_switch_styles_widgets_and_figures():
    try:
        box = course.presenter()
        assert plots.presenter_on()
        assert "16px" in style.presenter_style().value
        delivered = FateReport(verdict=Verdict.DELIVERED, drop_reasons=[], martian_log=[],
                               replies=[], counters={})
        builder = course.PacketBuilder(fate_fn=lambda *a, **k: delivered)
        builder.send.click()
        png = bytes(builder.path.value)
        width = plots.png_size(png)[0]
        assert builder.path.layout.width == f"{width // plots.HIDPI}px"
        assert box.children[0] is style.presenter_style()
        builder.bar.presenter_button.click()  # the panel's button switches it off again
        assert not plots.presenter_on() and style.presenter_style().value == ""
    finally:
        course.presenter(False)


def test_read_only_banner_names_commands_that_work(offline):
    lesson = course.Lesson("02-routing-tables", lab="seed", quiet=True)
    banner = lesson.banner_html()
    assert "sudo make lab" in banner and "sudo bash scripts/setup.sh lab" in banner
    assert ".venv/bin/jupyter lab" not in banner
    lesson.close()


@pytest.mark.usefixtures("root")
@pytest.mark.parametrize("lesson, key, kind", [
    ("04-seed-goal", "ping 10.0.0.2", "SeedPing"),
    ("07-working-vpn", "vpn ", "VpnPing"),
    ("03-encapsulation", "capture size=56", "FrameCapture"),
])
def test_typed_results_read_and_write_the_recorded_form(lesson, key, kind):
    """A panel's result comes back from its recording unchanged, and renders itself."""
    from tunlab.course.panels import frame_explorer, seed_goal

    cls = {"SeedPing": seed_goal.SeedPing, "VpnPing": fix_panel.VpnPing,
           "FrameCapture": frame_explorer.FrameCapture}[kind]
    recorded = recording.load_recording(lesson)[key]
    result = cls.from_dict(recording.from_jsonable(recorded), recorded=True)
    assert recording.to_jsonable(result) == recorded
    assert "recorded" in result._repr_html_() and result.figure() is not None


def test_one_stylesheet_styles_every_result_and_presenter_mode():
    """course.css is package data; the HTML of results carries its rules inline with the
    class, and presenter mode injects its presenter part."""
    from importlib.resources import files

    sheet = files("tunlab.course").joinpath("course.css").read_text()
    assert sheet == style.STYLESHEET and "16px" in style.PRESENTER_CSS
    assert "tunlab-box" not in style.PRESENTER_CSS  # only the presenter part goes to the page
    box = style.css("box")
    assert box.startswith('class="tunlab-box" style="') and style.RULES["box"] in box
    assert "#d62728" in style.badge("dropped") and "#2ca02c" in style.badge("forwarded")
    with pytest.raises(KeyError):
        style.css("no-such-rule")
    markup = reports.fate_html(FateReport(verdict=Verdict.DROPPED, drop_reasons=["IP_RPFILTER"],
                                          martian_log=[], replies=[], counters={}))
    assert 'class="tunlab-fate tunlab-box"' in markup and "tunlab-verdict" in markup
