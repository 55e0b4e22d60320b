"""Moved to :mod:`tunlab.cli.course` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.cli import course as _moved

sys.modules[__name__] = _moved
