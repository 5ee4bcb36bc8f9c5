"""``python -m TTTInterpolationLib`` runs the ``tttinterp`` command line."""

import sys

from .cli import main

sys.exit(main())
