"""Indicators of behaviour, structure and curvature over training (docs/methods.md, "Indicators").

Modules: :mod:`regression` and :mod:`language` (the two settings), :mod:`attention` (head
statistics from patterns and weights), :mod:`hessian` (Hutchinson trace and Lanczos eigenvalues
from Hessian-vector products) and :mod:`run` (every checkpoint of a run, records and panels).
"""
