"""Moved to :mod:`tunlab.cli.bench` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.cli import bench as _moved

sys.modules[__name__] = _moved
