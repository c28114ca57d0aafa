"""jaxrec: cross-domain recommendation in JAX."""

__version__ = "0.1.0"
