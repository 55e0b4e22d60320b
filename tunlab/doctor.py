"""Moved to :mod:`tunlab.kernel.doctor` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.kernel import doctor as _moved

sys.modules[__name__] = _moved
