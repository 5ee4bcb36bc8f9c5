"""Slicer-side code of the TTT Interpolation module, kept out of the thin module file.

``worker`` and ``dependencies`` import neither Slicer nor Qt; ``sequences``, ``logic`` and
``panel`` need only the MRML core (``slicer-core`` outside the application), so all of it is
tested headless. ``parameters``, ``module_logic`` and ``self_test`` need the application.
"""

from __future__ import annotations

import importlib

#: The modules in the order "Reload" re-imports them: each after those it imports.
MODULES = ("worker", "sequences", "dependencies", "logic", "panel", "parameters",
           "module_logic", "self_test")


def reload() -> None:
    """Re-import every module of the package (Slicer's "Reload" re-imports the module file
    only, which would keep running the old helpers)."""
    for name in MODULES:
        importlib.reload(importlib.import_module(f"{__name__}.{name}"))
