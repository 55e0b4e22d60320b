"""Moved to :mod:`tunlab.kernel.routes` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.kernel import routes as _moved

sys.modules[__name__] = _moved
