"""The jaxrec version (one place: the package, run directories and the docs read it from here)."""

__version__ = "0.1.0"
