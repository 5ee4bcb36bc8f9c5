"""Slicer-side code of the TTT Interpolation module, kept out of the thin module file.

``worker`` and ``dependencies`` import neither Slicer nor Qt; ``sequences`` and ``logic`` need
only the MRML core (``slicer-core`` outside the application), so all of it is tested headless.
"""
