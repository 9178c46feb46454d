"""DCTNetLib — the pure-Python core of DCTNet (no ``slicer``, ``qt`` or ``ctk`` imports anywhere below).

DCT-Net reconstructs a 128³ CT from a posterior–anterior and a lateral radiograph
(Zhang et al., MICCAI 2025). Sub-packages, one concern each:

- ``io``          CT / radiograph reading and writing, atomic writes, safe weight loading, offline ImageNet weights
- ``data``        preprocessing (HU → 128³ in [0, 1]), DRR projector, bone-suppression targets, phantom, discovery
                  of the source datasets' CTs, split files, the prepared-case store, the ``dctnet prepare`` pipeline
- ``models``      bone-suppression CDM, dual generators, tri-plane discriminator, X2CT-GAN baseline, losses
- ``checkpoints`` training-checkpoint format, model bundles, networks rebuilt from stored state
- ``training``    trainers and their loop, configs, training recipes, learning-rate schedules, run setup, distributed,
                  RNG, run folder, metrics log
- ``evaluation``  PSNR / SSIM / LPIPS, tables, figures
- ``inference``   radiographs in → volumes out (used by the CLI and the Slicer logic alike)
- ``commands``    one module per ``dctnet`` sub-command

Each package imports only from those listed above it (``training`` and ``evaluation`` form one layer) and from
``conventions``, ``errors``, ``helpers``, ``config_base``, ``devices``, ``processes`` and ``output_roles`` (the
table of the files a reconstruction writes), which import none of them; ``Testing/Python/test_layers.py`` checks it.

Conventions are in ``docs/conventions.md`` and in :mod:`DCTNetLib.conventions`.
"""

__version__ = "0.1.0"
