"""Moved to :mod:`tunlab.packet.vnet` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.packet import vnet as _moved

sys.modules[__name__] = _moved
