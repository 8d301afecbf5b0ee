"""LLC sweep configurations: ``--config configs/llc.py:VARIANT``.

The variants and every field are defined (and documented) in ``jaxdev.configs.llc``, which
the installed package carries; this file is the command-line name for them.
"""

from jaxdev.configs.llc import get_config

__all__ = ["get_config"]
