"""Models whose learning coefficient is known exactly, for checking the estimator at scale.

  dln.py         deep linear networks: Aoyagi's exact λ and multiplicity, a true parameter
                 with rank-reduced matrices, data, the loss and nβ = n / ln n, as a setting
                 that :func:`jaxdev.sgld.estimate_llc` takes directly
  procedure.py   select_settings: the sampler's settings chosen by a written rule (step size
                 from a calibration grid, stability and MALA acceptance), with its reasons

See docs/methods.md, "The estimator" (accuracy against exact values).
"""

from __future__ import annotations
