"""Lesson 00's doctor panel: what runs here and what needs root, re-run with a button."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as w

from tunlab.course.panels.base import LabPanel
from tunlab.course.style import css
from tunlab.kernel.doctor import Check, run_checks

__all__ = ["DoctorPanel", "DoctorReport", "run_doctor"]


@dataclass(frozen=True)
class DoctorReport:
    """The doctor's checks (:func:`tunlab.kernel.doctor.run_checks`), shown as a table."""

    checks: tuple[Check, ...]

    @property
    def passed(self) -> int:
        return sum(c.ok for c in self.checks)

    def _repr_html_(self) -> str:
        rows = []
        for c in self.checks:
            mark = f'<span {css("ok-mark")}>✔</span>' if c.ok else \
                f'<span {css("bad-mark")}>✘</span>'
            fix = "" if c.ok else html.escape(c.fix)
            rows.append(f"<tr><td>{mark}</td><td>{html.escape(c.name)}</td>"
                        f"<td>{html.escape(c.detail)}</td><td><code>{fix}</code></td></tr>")
        return (f"<p><b>{self.passed} of {len(self.checks)} checks pass</b></p>"
                '<table><tr><th></th><th>check</th><th>what for</th><th>fix</th></tr>'
                + "".join(rows) + "</table>")

    def figure(self) -> None:
        return None


def run_doctor(checks_fn: Callable[[], Sequence[Check]] = run_checks) -> DoctorReport:
    """Run the doctor's checks."""
    return DoctorReport(tuple(checks_fn()))


class DoctorPanel(LabPanel, w.VBox):
    """Lesson 00: the doctor's checks as a table, re-run with a button.

    Headless: ``panel.rerun.click()``, then ``panel.last_report`` (a :class:`DoctorReport`)
    or ``panel.last_checks``.
    """

    def __init__(self, checks_fn: Callable[[], Sequence[Check]] | None = None,
                 lesson: Any = None) -> None:
        self.checks_fn = checks_fn or run_checks
        self.last_report: DoctorReport | None = None
        self.rerun = w.Button(description="run the checks again", icon="refresh")
        self.table = w.HTML()
        self._setup_panel(lesson)
        self.rerun.on_click(self.guarded(lambda _b: self.run()))
        super().__init__([self.rerun, self.table, self.bar])
        self.run()

    @property
    def last_checks(self) -> list[Check]:
        return list(self.last_report.checks) if self.last_report else []

    def lab_rebuilt(self) -> None:
        """The checks do not depend on the lab."""

    def reset_view(self) -> None:
        self.run()

    def run(self) -> list[Check]:
        """Run the checks and show them."""
        self.last_report = run_doctor(self.checks_fn)
        self.show(self.last_report, self.table)
        return self.last_checks
