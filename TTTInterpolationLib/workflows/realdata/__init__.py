"""Evaluation on real ED/ES pairs with labels (``tttinterp evaluate-pairs``, ACDC layout):
:mod:`.cases` selects and loads the labelled pairs, :mod:`.scores` defines and computes the
scores, :mod:`.evaluate` runs every setting and tabulates the rows.
"""
