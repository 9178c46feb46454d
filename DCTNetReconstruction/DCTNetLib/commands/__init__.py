"""commands — see the package docstring of DCTNetLib."""
