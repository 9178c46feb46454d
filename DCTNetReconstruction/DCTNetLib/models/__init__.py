"""models — see the package docstring of DCTNetLib."""
