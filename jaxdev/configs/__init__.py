"""The paper's configurations, importable from the installed package.

``regression`` (training, SPEC §1), ``language`` (training, SPEC §2) and ``llc`` (SGLD sweeps,
SPEC §3); each has ``get_config(variant)``. On the command line the same configs are the files
``configs/regression.py``, ``configs/language.py`` and ``configs/llc.py`` of the repository,
e.g. ``--config configs/llc.py:quick``.
"""
