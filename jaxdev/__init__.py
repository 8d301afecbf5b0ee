"""jaxdev: developmental interpretability in JAX.

Importing the package is cheap; import the submodules you need::

    from jaxdev import sgld
"""

__version__ = "0.1.0"
