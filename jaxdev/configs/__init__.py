"""The paper's configurations, importable from the installed package.

``regression`` and ``language`` (training; docs/methods.md, "The settings") and ``llc`` (SGLD
sweeps; "Sampler options"); each has ``get_config(variant)``. On the command line the same
configs are the files ``configs/regression.py``, ``configs/language.py`` and ``configs/llc.py``
of the repository, e.g. ``--config configs/llc.py:quick``.
"""
