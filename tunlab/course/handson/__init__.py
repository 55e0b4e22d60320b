"""Lesson 09: participants write the code (a TUN reader, an ICMP echo reply, a tunnel loop and
its UDP variant), and the kernel judges it.

One runner for every exercise (:mod:`.runner`: the participant's function on its own thread,
under a deadline, in the lab), one judge (:mod:`.judge`: what the result and the kernel's
counters say, in one line), the reference solutions (:mod:`.solutions`), the checks of
exercises 09a-09c (:mod:`.checks`) and 09d with the race of a UDP and a TCP tunnel under loss
(:mod:`.loss`). Importing the package registers the exercises with :mod:`tunlab.course`, so
``course.check("09b", make_reply, lesson)`` works as for other lessons.
"""

from tunlab.course.handson.checks import (
    check_pump,
    check_reader,
    check_reply,
    counter_panel,
)
from tunlab.course.handson.judge import Verdict, diagnose_read, diagnose_reply, judge_udp
from tunlab.course.handson.loss import (
    Race,
    TunnelRun,
    check_udp_pump,
    race,
    race_tunnels,
)
from tunlab.course.handson.runner import Outcome, TimeLimit, Worker, run_limited
from tunlab.course.handson.solutions import (
    make_reply,
    open_tun,
    pump,
    read_ping,
    reference,
    solution,
    udp_pump,
)

__all__ = [
    "Outcome", "Race", "TimeLimit", "TunnelRun", "Verdict", "Worker", "check_pump",
    "check_reader", "check_reply", "check_udp_pump", "counter_panel", "diagnose_read",
    "diagnose_reply", "judge_udp", "make_reply", "open_tun", "pump", "race", "race_tunnels",
    "read_ping", "reference", "run_limited", "solution", "udp_pump",
]
