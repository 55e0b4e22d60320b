"""Recorded lesson outputs: JSON that can hold bytes, loaded for read-only mode and saved
when lessons run with ``TUNLAB_RECORD=1``."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any

from tunlab import resources
from tunlab.fate.report import FateReport

__all__ = ["DATA_DIR", "from_jsonable", "load_recording", "RECORD_ENV", "RECORDED_DIR",
           "recording_enabled", "save_recording", "to_jsonable"]

DATA_DIR = resources.data_path()
RECORDED_DIR = DATA_DIR / "recorded"
RECORD_ENV = "TUNLAB_RECORD"


def to_jsonable(value: Any) -> Any:
    """``value`` with bytes as ``{"__bytes__": hex}`` and objects as their ``to_dict()``."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"__bytes__": bytes(value).hex()}
    if hasattr(value, "to_dict"):
        return to_jsonable(value.to_dict())
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def from_jsonable(value: Any) -> Any:
    """The inverse of :func:`to_jsonable`: bytes come back, and so do fate reports (as
    :class:`~tunlab.fate.report.FateReport`); other objects stay dicts."""
    if isinstance(value, dict):
        if set(value) == {"__bytes__"}:
            return bytes.fromhex(value["__bytes__"])
        if FateReport.is_report(value):
            return FateReport.from_dict(value)
        return {k: from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    return value


def load_recording(name: str) -> dict[str, Any]:
    """The recorded outputs of lesson ``name`` (empty when none were recorded)."""
    path = RECORDED_DIR / f"{name}.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def recording_enabled() -> bool:
    """True when lessons should save what they ran (``TUNLAB_RECORD=1``)."""
    return os.environ.get(RECORD_ENV) == "1"


def save_recording(name: str, values: dict[str, Any]) -> Path:
    """Merge ``values`` into ``tunlab/data/recorded/<name>.json`` with the kernel version."""
    RECORDED_DIR.mkdir(parents=True, exist_ok=True)
    path = RECORDED_DIR / f"{name}.json"
    current = load_recording(name)
    current.update(values)
    current["_meta"] = {"kernel": platform.release(),
                        "recorded": _dt.date.today().isoformat()}
    path.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    return path

