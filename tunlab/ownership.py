"""Moved to :mod:`tunlab.kernel.ownership` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.kernel import ownership as _moved

sys.modules[__name__] = _moved
