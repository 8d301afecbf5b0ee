"""Language-model training configurations: ``--config configs/language.py:VARIANT``.

The variants and every field are defined (and documented) in ``jaxdev.configs.language``, which
the installed package carries; this file is the command-line name for them.
"""

from jaxdev.configs.language import get_config

__all__ = ["get_config"]
