"""Moved to :mod:`tunlab.proto.scapy_layer` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.proto import scapy_layer as _moved

sys.modules[__name__] = _moved
