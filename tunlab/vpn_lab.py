"""Moved to :mod:`tunlab.lab.vpn` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.lab import vpn as _moved

sys.modules[__name__] = _moved
