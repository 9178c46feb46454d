"""Stored models: training checkpoints, model bundles and the networks rebuilt from them.

- ``checkpoint``  the training-checkpoint format: atomic save, safe load-and-check (``weights_only=True``), run
                  folders' ``latest.pt`` / ``best.pt``
- ``networks``    model-from-state: the CDM and the GAN's networks rebuilt from a recorded config and checked
                  weights
- ``bundle``      the inference bundle (CDM + G(Y) + G(X)) that ``dctnet export`` writes and inference loads

Layer: above ``models`` (it builds networks) and ``io`` (safe loading, atomic writes); below ``training`` and
``inference``, which use it.
"""
