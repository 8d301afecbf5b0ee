"""In-context linear regression training configurations: ``--config configs/regression.py:VARIANT``.

The variants and every field are defined (and documented) in ``jaxdev.configs.regression``, which
the installed package carries; this file is the command-line name for them.
"""

from jaxdev.configs.regression import get_config

__all__ = ["get_config"]
