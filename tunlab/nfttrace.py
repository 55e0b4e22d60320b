"""Moved to :mod:`tunlab.kernel.nft` in the re-layout; this alias goes with the next step."""

import sys

from tunlab.kernel import nft as _moved

sys.modules[__name__] = _moved
