"""evaluation — see the package docstring of DCTNetLib."""
