"""Moved to :mod:`tunlab.lab.measure` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.lab import measure as _moved

sys.modules[__name__] = _moved
