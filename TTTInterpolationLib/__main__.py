"""``python -m TTTInterpolationLib`` runs the ``tttinterp`` command line."""

import sys

from .cli import run

sys.exit(run())
