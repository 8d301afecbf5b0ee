"""CPU-side analysis of a run's files (numpy, scipy, scikit-learn, matplotlib; no JAX).

  stages.py           stages of an LLC curve (GP slope and its significance)
  ed.py, geometry.py  essential dynamics: PCA, smoothing, osculating circles, forms
  turns.py, nulls.py  forms as sharp turns judged against the curve's noise; null models of
                      essential dynamics (false-positive rates, planted forms, p-values)
  plots.py            figures of the LLC curve, its slope and essential dynamics
  indicator_plots.py  indicator panels over training
  run.py              analyze_run(workdir): all of the above from a run's files

Figures are ``matplotlib.figure.Figure`` objects made without pyplot: nothing here chooses a
matplotlib backend. Reports built on these (the paper's numbers, published artifacts, comparison
tables) are :mod:`jaxdev.report`, which imports this package and is never imported by it.
"""
