"""Moved to :mod:`tunlab.course.plots` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.course import plots as _moved

sys.modules[__name__] = _moved
