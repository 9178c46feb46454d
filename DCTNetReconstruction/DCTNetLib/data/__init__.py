"""data — see the package docstring of DCTNetLib."""
