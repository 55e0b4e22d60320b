"""Moved to :mod:`tunlab.cli.debug` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.cli import debug as _moved

sys.modules[__name__] = _moved
