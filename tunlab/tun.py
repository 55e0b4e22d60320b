"""Moved to :mod:`tunlab.kernel.tun` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.kernel import tun as _moved

sys.modules[__name__] = _moved
