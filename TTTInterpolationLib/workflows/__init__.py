"""What a user runs: the Python API's interpolation and evaluation (with request validation),
evaluation settings and tables, case lists from 4D files, evaluation on real ED/ES pairs,
parallel evaluation, the demo, training and its curves. The CLI (``cli.py``) is a thin layer
over these.
"""
