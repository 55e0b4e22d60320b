"""Moved to :mod:`tunlab.kernel.netns` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.kernel import netns as _moved

sys.modules[__name__] = _moved
