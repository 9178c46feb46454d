"""io — see the package docstring of DCTNetLib."""
