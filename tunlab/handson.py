"""Moved to :mod:`tunlab.course.handson` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.course import handson as _moved

sys.modules[__name__] = _moved
