"""The lessons' exercises judge answers like a teacher: every spelling of the right answer
passes and is explained, a wrong answer is told why without being given the right one, hints
appear only when asked, and no lesson shows an exercise's answer before asking it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tunlab import course
from tunlab.course import checkers, exercises
from tunlab.lab import vpn as vpn_lab

LESSONS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks without root: the pure judges answer (05 would otherwise ask the kernel)."""
    monkeypatch.setenv("TUNLAB_PRETEND_UNPRIVILEGED", "1")


# exercise: (right answer, equivalent spellings, [(wrong answer, what its message says)],
#            spellings of the right answer that no message about a wrong one may contain)
CASES: dict[str, tuple[Any, list[Any], list[tuple[Any, str]], list[str]]] = {
    "00": (("CAP_NET_ADMIN", "CAP_SYS_ADMIN"),
           ["net_admin, sys_admin", ("cap_net_admin", "CAP_SYS_ADMIN"), (12, 21),
            ["NET_ADMIN", "21"]],
           [(("CAP_SYS_ADMIN", "CAP_NET_ADMIN"), "other way round"),
            (("CAP_NET_ADMIN", "CAP_SYS_TIME"), "CAP_SYS_TIME is not one"),
            (("CAP_NET_ADMIN", "CAP_NET_ADMIN"), "cannot be the same"),
            ("CAP_NET_ADMIN", "pair"), (("CAP_FOO", "x"), "not a Linux capability")],
           ["CAP_NET_ADMIN, CAP_SYS_ADMIN", "('CAP_NET_ADMIN', 'CAP_SYS_ADMIN')"]),
    "01": (0x003C,
           ["0x003c", "0x3c", "60", "00 3c", "003C", b"\x00\x3c", "60 bytes"],
           [(0x0800, "should"), ("ETH_P_IP", "should"), (4, "size of the packet info"),
            (0x4500, "flags"), (0x86DD, "IPv6"), (0x54, "first four bytes"),
            ((4, "ETH_P_IP"), "number")],
           ["0x003c", "0x3c", " 60", "60,"]),
    "02": (("lo", "local"),
           [("LO", "Local"), "lo local", "dev lo table local", ("dev lo", 255),
            ["lo", "table local"]],
           [(("mytun", "main"), "not send it through mytun"),
            (("lo", "main"), "not in table main"),
            (("mytun", "local"), "not send it through mytun"), ("lo", "pair")],
           ["dev lo", "table local", "local 10.0.0.1", "('lo', 'local')"]),
    "03": ("54 4c 01 02 00 00 05 78",
           ["544c010200000578", "0x544C010200000578", b"TL\x01\x02\x00\x00\x05\x78",
            "54:4c:01:02:00:00:05:78", list(b"TL\x01\x02\x00\x00\x05\x78"),
            "\\x54\\x4c\\x01\\x02\\x00\\x00\\x05\\x78"],
           [("54 4c 01 02 00 00 05 80", "payload only"),
            ("54 4c 01 02 78 05 00 00", "big endian"),
            ("54 4c 01 03 00 00 05 78", "GSO_DATA"),
            ("54 4c 01 01 00 00 05 78", "type"),
            ("54 4c 02 02 00 00 05 78", "version"),
            ("4c 54 01 02 00 00 05 78", "magic"),
            ("54 4c 01 02 00 00 05 00", "length"),
            ("54 4c", "8 bytes"), ("not hex", "hex")],
           ["54 4c 01 02 00 00 05 78", "544c010200000578", "00 00 05 78", "0x578"]),
    "04": (0, ["0", "zero", "0 packets", "none"],
           [(1, "own addresses"), (2, "own addresses"), ("many", "number")],
           ["read 0", "None:", "nothing from mytun"]),
    "05": ("10.0.2.33", [" 10.0.2.33 ", "10.0.2.200"],
           [("10.0.2.1", "own address"), ("200.1.2.3", "rp_filter"),
            ("10.0.0.5", "out of mytun"), ("10.0.2.255", "not a host address"),
            ("10.0.2", "not an IPv4 address")],
           ["10.0.2.33", "10.0.2.0/24"]),
    "06": ("NO_SOCKET",
           ["SKB_DROP_REASON_NO_SOCKET", "no_socket", "no socket", " No-Socket "],
           [("IP_NOPROTO", "protocol 253"), ("SKB_DROP_REASON_IP_NOPROTO", "protocol 253"),
            ("IP_RPFILTER", "rp_filter"), ("UDP_CSUM", "builder"), (3, "name")],
           ["NO_SOCKET", "NO SOCKET"]),
    "07": ({"route_a", "forward_b", "firewall_b", "route_c"},
           ["route_a forward_b firewall_b route_c", "ROUTE_A, Forward-B, firewall_b, route_c",
            ["route_c", "route_a", "firewall_b", "forward_b"],
            ("route_a", "forward_b", "firewall_b", "route_c"),
            {"route_a": True, "forward_b": True, "firewall_b": True, "route_c": True,
             "rp_filter_b_off": False}],
           [({"route_a"}, "IP_INADDRERRORS on b"), (set(), "no route to 192.168.50.2"),
            ({"route_a", "forward_b"}, "NETFILTER_DROP on b"),
            ({"route_a", "forward_b", "firewall_b"}, "no route back"),
            ({"route_a", "forward_b", "firewall_b", "route_c", "rp_filter_b_off"},
             "not needed"),
            ({"route_b"}, "unknown fix names: route_b")],
           ["firewall_b, forward_b, route_a, route_c", "{'route_a'"]),
    "08": (1360, ["1360", "1360 bytes", " 1360 ", "0x550"],
           [(1400, "the MTU"), (1380, "both"), (1460, "MTU 1500"), (1352, "outside tun0"),
            (1500, "headers"), ("big", "number")],
           ["1360"]),
}


def test_every_exercise_is_covered():
    # 09a-09c (participants' code, checked in the lab) are covered by tests/test_handson.py
    assert set(CASES) == {key for key in course.EXERCISES if not key.startswith("09")}


@pytest.mark.parametrize("key", sorted(CASES))
def test_the_right_answer_passes_with_an_explanation(key):
    right, _equivalents, _wrong, _spellings = CASES[key]
    result = course.check(key, right)
    assert result, result.message
    assert len(result.message) > 40, "a right answer gets its explanation, not just 'Correct.'"
    assert "✔ Correct." in result._repr_html_()


@pytest.mark.parametrize("key", sorted(CASES))
def test_equivalent_answers_pass(key):
    _right, equivalents, _wrong, _spellings = CASES[key]
    for answer in equivalents:
        result = course.check(key, answer)
        assert result, f"{answer!r}: {result.message}"


@pytest.mark.parametrize("key", sorted(CASES))
def test_a_wrong_answer_is_told_why_without_the_answer(key):
    _right, _equivalents, wrongs, spellings = CASES[key]
    for answer, why in wrongs:
        result = course.check(key, answer)
        assert not result, answer
        assert why in result.message, (answer, result.message)
        html = result._repr_html_()
        for spelling in spellings:
            assert spelling.lower() not in result.message.lower(), (answer, result.message)
            assert spelling.lower() not in html.lower(), (answer, html)


def test_no_answer_yet():
    for key in CASES:
        for empty in (None, "", "   "):
            result = course.check(key, empty)
            assert not result and "No answer yet" in result.message


def test_00_accepts_cap_sys_admin_which_its_text_says_namespaces_need():
    text = (LESSONS / "00-welcome.md").read_text()
    before = text.split("## Exercise")[0]
    assert "CAP_SYS_ADMIN" in before and "CAP_NET_ADMIN" in before
    assert course.check("00", ("CAP_NET_ADMIN", "CAP_SYS_ADMIN"))


def test_02_never_prints_the_kernels_answer_on_a_wrong_attempt():
    class FakeNs:
        def ip(self, *args: str) -> str:
            if args[:2] == ("route", "get"):
                return "local 10.0.0.1 dev lo table local src 10.0.0.1 uid 0 \n    cache <local>"
            return "local 10.0.0.1 dev mytun proto kernel scope host src 10.0.0.1 \n"

    class FakeLesson:
        live = True
        ns = FakeNs()

    lesson = FakeLesson()
    wrong = course.check("02", ("mytun", "main"), lesson)
    assert not wrong and "mytun" in wrong.message
    assert "dev lo" not in wrong.message and "table local" not in wrong.message
    half = course.check("02", ("lo", "main"), lesson)
    assert not half and "not in table main" in half.message and "through" not in half.message
    right = course.check("02", ("dev lo", 255), lesson)
    assert right and "the kernel agrees: `local 10.0.0.1 dev lo" in right.message


def test_07_live_check_says_where_the_packet_stopped():
    scenario = vpn_lab.VpnScenario.__new__(vpn_lab.VpnScenario)
    scenario.applied = set()
    applied: list[set[str]] = []
    scenario.set_fixes = lambda fixes: applied.append(set(fixes))  # type: ignore[method-assign]
    scenario.ping = lambda source=None: {  # type: ignore[method-assign]
        "ok": False, "stage": 4, "reason": "IP_INADDRERRORS on b: forwarding is off"}

    ok, message = scenario.verify_fix_set({"route_a"})
    assert not ok and "still fails" in message
    assert "IP_INADDRERRORS on b: forwarding is off" in message
    assert applied[0] == {"route_a"} and applied[-1] == set()  # put back as it was


# -- hints: only when asked ----------------------------------------------------------------------

@pytest.mark.parametrize("key", sorted(CASES))
def test_running_the_hint_cell_reveals_nothing_and_each_click_one_hint(key, monkeypatch):
    monkeypatch.setattr(exercises, "_HINTS_GIVEN", {})
    hints = course.EXERCISES[key].hints
    for _run in range(3):  # Run All, twice, and the cell once more
        box = course.hint(key)
    assert course.hints_shown(key) == []
    assert not any(h in box.shown.value for h in hints) and not any(h in repr(box) for h in hints)
    assert box.button.description == f"show hint 1 of {len(hints)}"
    for n in range(1, len(hints) + 1):
        box.button.click()
        assert course.hints_shown(key) == hints[:n]
        assert f"Hint {n} of {len(hints)}" in box.shown.value
    assert box.button.disabled and box.button.description == "all hints shown"
    again = course.hint(key)  # running the cell again keeps what was revealed
    assert all(h.replace("'", "&#x27;") in again.shown.value for h in hints)


def test_an_unknown_exercise_fails_at_once():
    with pytest.raises(KeyError):
        course.hint("99")


# -- the lessons: questions not answered by the text above them ------------------------------------

def _source(key: str) -> str:
    (path,) = LESSONS.glob(f"{key}-*.md")
    return path.read_text()


def _before_exercise(key: str) -> str:
    return _source(key).split("## Exercise")[0]


@pytest.mark.parametrize("key, spellings", [
    ("01", ["0x003c", "00 3c", "0x3c"]),
    ("03", ["54 4c 01 02 00 00 05 78", "00 00 05 78"]),
    ("06", ["NO_SOCKET", "UdpNoPorts"]),
    ("08", ["1360"]),
])
def test_the_lesson_does_not_show_the_answer_before_asking(key, spellings):
    text = _before_exercise(key)
    for spelling in spellings:
        assert spelling.lower() not in text.lower(), spelling


@pytest.mark.parametrize("key", sorted(CASES))
def test_each_lesson_asks_checks_and_offers_hints_in_that_order(key):
    text = _source(key)
    cells = re.findall(r"```\{code-cell\}\n(.*?)```", text, re.S)
    calls = [c for c in cells if re.search(r'course\.(question|check|hint)\("', c)]
    assert [re.search(r"course\.(\w+)", c).group(1) for c in calls] == \
        ["question", "check", "hint"]
    assert all(f'"{key}"' in c for c in calls)
    assert "one hint per click" in text


def test_06_builder_is_not_preset_to_the_exercises_packet():
    text = _source("06")
    builder = re.search(r"course\.PacketBuilder\((.*?)\)", text).group(1)
    assert "udp" not in builder.lower()
    assert "udp" in course.EXERCISES["06"].question.lower()


def test_07_headings_do_not_give_each_steps_answer_before_it_runs():
    text = _source("07").split("## One drop at a time")[1].split("## Is rp_filter")[0]
    outside = re.sub(r"<details>.*?</details>", "", text, flags=re.S)
    prose = re.sub(r"```.*?```", "", outside, flags=re.S)
    for verdict in ("IP_INADDRERRORS", "NETFILTER_DROP", "no route", "no way back",
                    "IpOutNoRoutes", "IcmpInEchos"):
        assert verdict not in prose, verdict
    assert text.count("<details>") == 4 and text.count("</details>") == 4


def test_08_teaches_the_mss_before_asking_for_it():
    text = _before_exercise("08")
    assert "MSS" in text and "MTU − 20 (IPv4 header) − 20 (TCP" in text
    assert "MSS" in course.EXERCISES["08"].question


def test_an_exercise_registered_the_older_way_still_checks(monkeypatch):
    digest = checkers._digest("42")
    monkeypatch.setitem(course.EXERCISES, "98", course.Exercise(
        "What is six times seven?", [digest], ["Count."], explain="6 * 7 = 42."))
    assert course.check("98", " 42 ") and course.check("98", "0x2a").message == "6 * 7 = 42."
    wrong = course.check("98", 41)
    assert not wrong and "42" not in wrong.message


def test_06_read_only_the_builder_answers_both_its_preset_and_the_exercises_packet():
    builder = course.PacketBuilder(src="200.1.2.3", dst="10.0.2.1", proto=253)
    preset = builder.run()
    assert preset.recorded and preset.drop_reasons == ["IP_NOPROTO"]
    builder.proto.value = "udp"
    report = builder.run()
    assert report.recorded and report.verdict == "dropped"
    assert course.check("06", report.drop_reasons[0])


def test_every_exercise_of_00_to_08_has_a_checker_of_the_one_shape():
    """Read, judge, verify: an unreadable answer is 'not yet' with what kind is asked for, and
    a verifier that cannot run here (no lesson) leaves the verdict to the judge."""
    for key in CASES:
        assert course.EXERCISES[key].checker is checkers.CHECKERS[key]
    ok, message = checkers.CHECKERS["05"]("not an address")
    assert not ok and "not an IPv4 address" in message
    assert checkers.CHECKERS["02"](("lo", "local"), None)[0]  # no lab: the judge decides
    assert checkers.CHECKERS["08"].accepts("1360 bytes") and not checkers.CHECKERS["08"].accepts(
        "many")
