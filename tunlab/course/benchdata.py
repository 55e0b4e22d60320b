"""The results of ``make bench`` (``bench/results/bench.json``) for lesson 08's plots."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tunlab import resources

__all__ = ["load_bench", "load_bench_rtt_rounds"]


def _bench_json(path: str | os.PathLike[str] | None) -> Any:
    target = Path(path) if path else resources.bench_results() / "bench.json"
    try:
        return json.loads(target.read_text())
    except (OSError, ValueError):
        return None


def load_bench(path: str | os.PathLike[str] | None = None) -> dict[str, float]:
    """Throughput results of ``make bench`` (``bench/results/bench.json``) as
    ``{label: Mbit/s}``; empty when there are none.

    Accepts a list of results or a dict holding one under ``"results"``; each result needs a
    name (``name``/``label``/``variant``) and a rate (``mbps``/``mbit_s``/``throughput_mbps``
    or ``bits_per_second``).
    """
    data = _bench_json(path)
    if data is None:
        return {}
    items = data.get("results", data) if isinstance(data, dict) else data
    if isinstance(items, dict):
        items = [dict(v, name=k) if isinstance(v, dict) else {"name": k, "mbps": v}
                 for k, v in items.items()]
    results: dict[str, float] = {}
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        name = item.get("name") or item.get("label") or item.get("variant")
        rate = next((item[k] for k in ("mbps", "mbit_s", "throughput_mbps") if k in item), None)
        if rate is None and "bits_per_second" in item:
            rate = float(item["bits_per_second"]) / 1e6
        if name is not None and isinstance(rate, int | float):
            results[str(name)] = float(rate)
    return results


def load_bench_rtt_rounds(path: str | os.PathLike[str] | None = None,
                          ) -> dict[str, list[float | None]]:
    """The median round trip (ms) of each interleaved ping round of ``make bench``, per path:
    ``{name: [round 1, round 2, ...]}``; empty when the file or the rounds are missing."""
    data = _bench_json(path)
    items = data.get("results", []) if isinstance(data, dict) else []
    rounds: dict[str, list[float | None]] = {}
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("rtt"), dict):
            continue
        values = item["rtt"].get("rounds_p50_ms")
        if item.get("name") and isinstance(values, list) and values:
            rounds[str(item["name"])] = [float(v) if isinstance(v, int | float) else None
                                         for v in values]
    return rounds

