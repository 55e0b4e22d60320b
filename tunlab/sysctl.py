"""Moved to :mod:`tunlab.kernel.sysctl` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.kernel import sysctl as _moved

sys.modules[__name__] = _moved
