"""Moved to :mod:`tunlab.kernel.capture` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.kernel import capture as _moved

sys.modules[__name__] = _moved
