"""Files: reading and writing 3D volumes and 4D series (NIfTI, NRRD incl. Slicer's .seq.nrrd,
MetaImage) with their geometry in LPS, atomic writes and file hashes. Named ``fileio`` rather
than ``io`` so that it never reads as (or, run from inside the package, shadows) the standard
library's ``io``.
"""
