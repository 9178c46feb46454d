"""training — see the package docstring of DCTNetLib."""
