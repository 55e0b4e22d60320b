"""Moved to :mod:`tunlab.cli.kernelspec` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.cli import kernelspec as _moved

sys.modules[__name__] = _moved
