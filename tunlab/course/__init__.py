"""The course layer: everything the lesson notebooks use, and nothing else (``__all__``).

A notebook starts with::

    from tunlab import course
    lesson = course.start("05-martians-and-rp_filter", lab="seed")

With root, ``lesson.lab`` is a fresh lab in private namespaces and ``lesson.sh(...)`` runs real
commands in it. Without root (a hosted Jupyter, a participant who forgot ``sudo``), the lesson
says what is missing and how to start the lab, and the same calls show output recorded from a
real run (``tunlab/data/recorded/<lesson>.json``) instead of failing. Recordings are made by
``notebooks/record.py`` (the lessons with ``TUNLAB_RECORD=1``) and ``python -m tunlab.course
record`` (the packet builder's cases).

The package, one job per module: :mod:`.lesson` (the lesson and its lab), :mod:`.recording`,
:mod:`.cleanup`, :mod:`.fates` (the kernel's verdict on a packet, live or recorded),
:mod:`.exercises` and :mod:`.checkers`, :mod:`.style` (the one stylesheet), and one module per
panel in :mod:`.panels`. Panels need ipywidgets (the ``lab`` extra); they are imported on first
use, so ``from tunlab import course`` works without it.
"""

from __future__ import annotations

import importlib
from typing import Any

# ``X as X``: not for notebooks (not in __all__), but reached through the package by
# tunlab.course.handson (which adds lesson 09's exercises) and the tests.
from tunlab.course.benchdata import load_bench, load_bench_rtt_rounds
from tunlab.course.cleanup import register_cleanup as register_cleanup
from tunlab.course.cleanup import unregister_cleanup as unregister_cleanup
from tunlab.course.exercises import EXERCISES as EXERCISES
from tunlab.course.exercises import CheckResult as CheckResult
from tunlab.course.exercises import Exercise as Exercise
from tunlab.course.exercises import Note as Note
from tunlab.course.exercises import check, hint, question
from tunlab.course.exercises import hints_shown as hints_shown
from tunlab.course.exercises import next_hint as next_hint
from tunlab.course.exercises import register_exercise as register_exercise
from tunlab.course.fates import FORWARD_ACCEPT_TUNNEL_RULESET, FORWARD_DROP_RULESET, fate
from tunlab.course.fates import live_fate as live_fate
from tunlab.course.fates import recorded_fate as recorded_fate
from tunlab.course.lesson import LESSONS as LESSONS
from tunlab.course.lesson import START_HINT as START_HINT
from tunlab.course.lesson import CommandOutput as CommandOutput
from tunlab.course.lesson import Lesson, kernel_log, presenter, start
from tunlab.course.lesson import current_lesson as current_lesson
from tunlab.course.lesson import lesson_of as lesson_of
from tunlab.course.recording import from_jsonable as from_jsonable
from tunlab.course.recording import to_jsonable as to_jsonable

# Names that need ipywidgets, and the module that defines each: imported on first use.
_LAZY = {
    "DoctorPanel": "panels.doctor_panel",
    "PiReader": "panels.pi_reader",
    "read_one_ping": "panels.pi_reader",
    "RouteView": "panels.route_view",
    "FrameExplorer": "panels.frame_explorer",
    "SeedGoalPanel": "panels.seed_goal",
    "explain_counters": "panels.seed_goal",
    "PacketBuilder": "panels.packet_builder",
    "FixPanel": "panels.fix_panel",
    "TunnelPanel": "panels.tunnel_panel",
    "SeedTunnel": "seed_tunnel",
    "fate_box": "reports",
    "fate_table": "reports",
    "rp_sweep": "reports",
    "count_outcomes": "reports",
    "frames_table": "tables",
    "events_table": "tables",
    "events_dicts": "experiments",
    "ping_bound": "experiments",
    "ping_device_counts": "experiments",
    "kfree_skb_reasons": "experiments",
}

__all__ = (
    # the lesson
    "start", "Lesson", "presenter", "kernel_log",
    # exercises
    "question", "check", "hint",
    # the kernel's verdict on a packet, and the firewalls the lessons use
    "fate", "FORWARD_DROP_RULESET", "FORWARD_ACCEPT_TUNNEL_RULESET",
    "fate_box", "fate_table", "rp_sweep", "count_outcomes",
    # panels, one per lesson experiment
    "DoctorPanel", "PiReader", "RouteView", "FrameExplorer", "SeedGoalPanel", "PacketBuilder",
    "FixPanel", "TunnelPanel",
    # the seed's tunnel and what lesson cells run with it
    "SeedTunnel", "read_one_ping", "ping_device_counts", "ping_bound", "kfree_skb_reasons",
    "explain_counters", "events_dicts", "events_table", "frames_table",
    # lesson 08's benchmark results
    "load_bench", "load_bench_rtt_rounds",
)

def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
