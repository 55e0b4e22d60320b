"""Moved to :mod:`tunlab.packet.validate` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.packet import validate as _moved

sys.modules[__name__] = _moved
