"""Moved to :mod:`tunlab.kernel.host` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.kernel import host as _moved

sys.modules[__name__] = _moved
