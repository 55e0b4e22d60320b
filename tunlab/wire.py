"""Moved to :mod:`tunlab.packet.build` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.packet import build as _moved

sys.modules[__name__] = _moved
