"""Measurements of jaxdev's own programs: throughput benchmarks, device-hour estimates and the
PyTorch reference.

Everything here times the programs the jobs run, reached through their public functions
(:func:`jaxdev.train.build_update`, :func:`jaxdev.llc.build_estimator`,
:func:`jaxdev.sgld.run_chains`), never a copy of them:

  timing.py           the one timing loop (warm-up, then the median of timed calls), XLA flops
  costs.py            device-hour estimates printed before long jobs
  benchmarks.py       throughput measurements behind ``scripts/benchmark.py``
  torch_reference.py  the regression model under devinterp, for side-by-side benchmarks only
"""
