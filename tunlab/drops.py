"""Moved to :mod:`tunlab.kernel.drops` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.kernel import drops as _moved

sys.modules[__name__] = _moved
