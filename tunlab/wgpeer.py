"""Moved to :mod:`tunlab.bench.wgpeer` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.bench import wgpeer as _moved

sys.modules[__name__] = _moved
