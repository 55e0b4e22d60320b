"""Moved to :mod:`tunlab.fate.demo` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.fate import demo as _moved

sys.modules[__name__] = _moved
