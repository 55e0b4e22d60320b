"""Moved to :mod:`tunlab.packet.craft` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.packet import craft as _moved

sys.modules[__name__] = _moved
