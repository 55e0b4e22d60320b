"""The benchmark's arithmetic (targets, ratios, table) and one short real run of `tunlab bench`.

Speed itself is never asserted here: that is `make bench`'s job. These tests check that the
benchmark measures what it says, and that a missed or unmeasured target makes it exit 1.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tunlab import bench


def _result(name: str, mbps: float, rtt_p50: float) -> dict:
    return {"name": name, "mbps": mbps, "runs_mbps": [mbps], "retransmits": 0,
            "cpu_s_per_gbit": None,
            "rtt": {"n": 10, "p50_ms": rtt_p50, "p90_ms": rtt_p50, "p99_ms": rtt_p50,
                    "min_ms": rtt_p50}}


def test_targets_follow_the_issue():
    results = [_result(bench.VETH, 19000, 0.01), _result(bench.FAST, 8000, 0.1),
               _result(bench.OPENVPN, 700, 0.2)]
    ratios, targets = bench._verdict(results)
    assert ratios["fast_vs_openvpn"] == pytest.approx(8000 / 700)
    assert ratios["fast_vs_veth"] == pytest.approx(8000 / 19000)
    assert [t["met"] for t in targets] == [True, True, True]
    results[1] = _result(bench.FAST, 6000, 0.3)
    _, targets = bench._verdict(results)
    assert [t["met"] for t in targets] == [False, False, False]


def test_an_unmeasured_openvpn_is_a_missed_target_not_a_pass():
    _, targets = bench._verdict([_result(bench.VETH, 19000, 0.01),
                                 _result(bench.FAST, 9000, 0.1)])
    unmeasured = [t for t in targets if t["value"] is None]
    assert len(unmeasured) == 2 and not any(t["met"] for t in unmeasured)
    assert "not measured" in bench.describe_target(unmeasured[0])


def test_rtt_rounds_are_kept_and_compared_round_by_round():
    fast = bench._rtt_summary([[0.1, 0.2, 0.3], [0.5, 0.5, 0.6], []])
    assert fast["n"] == 6 and fast["rounds_p50_ms"] == [0.2, 0.5, None]
    ovpn = bench._rtt_summary([[0.3, 0.3, 0.3], [0.4, 0.4, 0.4], [0.2]])
    results = [_result(bench.VETH, 19000, 0.01), _result(bench.FAST, 8000, 0.1),
               _result(bench.OPENVPN, 700, 0.2)]
    results[1]["rtt"], results[2]["rtt"] = fast, ovpn
    (rtt_target,) = [t for t in bench._verdict(results)[1] if "RTT" in t["target"]]
    assert rtt_target["met"] == (fast["p50_ms"] <= ovpn["p50_ms"])
    assert (rtt_target["rounds_won"], rtt_target["rounds"]) == (1, 2)  # the empty round skipped
    assert bench.describe_target(rtt_target).endswith("lower in 1 of 2 interleaved rounds")


def test_percentiles():
    assert bench.percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert bench.percentile([5], 99) == 5


@pytest.mark.slow
def test_a_quick_real_bench_run_writes_json_and_chart(tmp_path, tunlab_cmd):
    result = subprocess.run([*tunlab_cmd, "bench", "--quick", "--no-sweeps", "--no-install",
                             "--output", str(tmp_path)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    by_name = {r["name"]: r for r in report["results"]}
    for name in (bench.VETH, bench.FAST, bench.SIMPLE, bench.FAST_PSK):
        assert by_name[name]["mbps"] > 0, name
        assert by_name[name]["rtt"]["n"] > 0, name
    assert (tmp_path / "bench.png").stat().st_size > 10_000
    assert "tunlab fast" in result.stdout and "ratios" in result.stdout
    fate = report["participant"]["fate_verdict"]
    assert fate["verdict"]["verdict"] == "dropped" and fate["with_fixes"]["fixes_tried"] >= 1
    assert any(t["target"].startswith("tunlab fate (with fixes)") for t in report["targets"])
    assert report["participant"]["widget_send"]["answer"] == ["IP_RPFILTER"]
    missed = [t for t in report["targets"] if not t["met"]]
    assert (result.returncode == 1) == bool(missed)
