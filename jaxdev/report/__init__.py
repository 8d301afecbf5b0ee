"""Reports of runs: their published files, the paper's numbers and the authors' files beside them.

  files.py      the published files' names; CSV and JSON readers and writers
  reference.py  the paper's published numbers (LLC at fixed steps, stage boundaries, ED forms)
  compare.py    a run's published files beside a reference run's, as Markdown tables
  artifacts.py  export_run (a run's published files) and analyze_artifacts (their re-analysis)
  page.py       a Markdown page's quoted tables, refilled from the comparison files they name

This package builds on :mod:`jaxdev.analysis` (stages, essential dynamics, figures); nothing in
:mod:`jaxdev.analysis` imports it.
"""
