"""``dctnet train`` — train the DCT-Net reconstruction GAN: G(Y), G(X) and the tri-plane discriminator.

Defaults are the paper's (§3.1): Adam, lr 2e-4, β = (0.5, 0.999), batch 1, 100 epochs, validation PSNR every
epoch with ``best.pt`` kept beside ``latest.pt``. The bone-suppressed inputs X of G(X) come from a trained CDM
(``dctnet train-cdm``), sampled once per case and cached next to the prepared cases (the slow part; a rerun or
``--resume`` reuses the cache), or, with ``--bs-source target``, from the prepared synthetic bone-suppressed
DRRs. Examples::

    dctnet train --data PREP --cdm runs/cdm/best.pt --output runs/gan                 # the paper's model (GPU)
    dctnet train --data PREP --cdm runs/cdm/best.pt --output runs/gan-small --preset small
    dctnet train --data PREP --output runs/gan --resume                               # after Ctrl-C / a crash
    dctnet train --data PREP --bs-source target --output runs/abl --variant ablation-no-perceptual --preset small
    dctnet train ... --set lr_schedule=x2ct --set loss.lambda_recon=5 --config my.yaml

``--preset`` is the model size (full / small / tiny), ``--variant`` the row of DCT-Net Table 1 (``dctnet`` or
an ablation of :data:`DCTNetLib.models.presets.ABLATIONS`); ``--set model.<field>=…`` and ``--set loss.<field>=…``
override generator/discriminator and multi-path-loss fields. On ``--resume`` the CDM recorded in the
checkpoint is used when ``--cdm`` is omitted. Multi-GPU / multi-node (torchrun) lines are at the end of
``dctnet train --help``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ..errors import InputError
from .train_common import add_common_arguments, report, resolve_run_config, warn_full_preset_on_cpu

# torch, numpy and the modules that import them, and training.config (YAML files), are imported inside the
# functions: every dctnet run imports every command module (DCTNetLib.cli), so `dctnet --help` stays fast
# and a reconstruction loads nothing it does not need.

HELP = "train the DCT-Net reconstruction GAN (G(Y), G(X), tri-plane D) on prepared cases"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..models.presets import ABLATIONS

    add_common_arguments(parser, "train", "--data PREP --cdm runs/cdm/best.pt --output runs/gan")
    parser.add_argument("--cdm", type=Path, metavar="CKPT",
                        help="CDM checkpoint (`dctnet train-cdm` best.pt) whose samples feed G(X); default on "
                             "--resume: the one recorded in the run")
    parser.add_argument("--bs-source", choices=("cdm", "target"),
                        help="bone-suppressed inputs: cdm (cached CDM samples, default) or target (prepared "
                             "synthetic bone-suppressed DRRs)")
    parser.add_argument("--variant", choices=("dctnet", *ABLATIONS),
                        help="model variant (DCT-Net Table 1 rows); default dctnet")
    parser.add_argument("--init", type=Path, metavar="MODEL",
                        help="start G(Y) and G(X) from this model bundle, `dctnet train` checkpoint or run folder "
                             "(fine-tuning; same architecture, or wider decoder levels with --set "
                             "model.decoder_channels=…; D and the optimisers start anew). Ignored on "
                             "--resume, which continues from the run's own latest.pt")
    parser.add_argument("--vgg-weights", type=Path, metavar="FILE",
                        help="ImageNet VGG16 weights for the perceptual loss (default: `dctnet weights fetch` "
                             "location, then torchvision's cache)")


def _recorded_cdm(args: argparse.Namespace) -> Path | None:
    """The CDM path stored in the run's ``latest.pt`` (on --resume), if any."""
    from ..checkpoints.checkpoint import load_checkpoint

    latest = args.output / "latest.pt"
    if not (args.resume and latest.is_file()):
        return None
    saved = load_checkpoint(latest, kind="gan").get("cdm")
    return Path(saved["path"]) if saved and saved.get("path") else None


def bone_suppressed_sets(config: Any, preset: Any, args: argparse.Namespace, train_set: Any, val_set: Any,
                         device: Any, info: Any) -> tuple[Any, Any, dict[str, str] | None]:
    """Replace ``drr_bs`` with cached CDM samples when the run uses a CDM; returns the sets and the CDM info."""
    from ..checkpoints.checkpoint import resolve_checkpoint
    from ..checkpoints.networks import load_cdm
    from ..training.cache import CachedBoneSuppressed, precompute_cdm_outputs
    from ..training.gan_trainer import uses_bone_suppressed

    if not uses_bone_suppressed(config, preset) or config.bs_source != "cdm":
        return train_set, val_set, None
    cdm_path = args.cdm or _recorded_cdm(args)
    if args.cdm is not None:
        cdm_path = resolve_checkpoint(args.cdm)
    if cdm_path is None:
        raise InputError("dctnet train needs the bone-suppression CDM for G(X): pass --cdm runs/cdm/best.pt "
                         "(from `dctnet train-cdm`), or --bs-source target to use the prepared synthetic "
                         "bone-suppressed DRRs")
    model = load_cdm(cdm_path)[0].to(device)  # its EMA weights
    steps = config.cdm_sampling_steps or model.config.sampling_steps
    eta = model.config.ddim_eta
    key = ""
    for dataset in (train_set, val_set):
        if dataset is not None:
            key = precompute_cdm_outputs(dataset, model, steps=steps, seed=config.cdm_seed, eta=eta, info=info,
                                         progress=config.progress)
    del model
    wrap = (lambda d: CachedBoneSuppressed(d, key) if d is not None else None)
    return wrap(train_set), wrap(val_set), {"path": str(Path(cdm_path).resolve()), "key": key}


def initialise_generators(trainer: Any, path: Path) -> None:
    """Copy the generators of a bundle or GAN checkpoint into ``trainer`` (its G(Y), and G(X) when both have one).

    The run may add the product path (``model.product_channels``, started at zero) and may widen decoder levels
    (``model.decoder_channels`` after its first entry, each level as wide or wider: :func:`~DCTNetLib.models.widening.widen_into`
    starts the wider generator as the same function); nothing else may differ.

    Raises:
        InputError: the source's generator architecture differs from the run's otherwise.
    """
    from ..checkpoints.bundle import load_generators
    from ..models.presets import GANPreset
    from ..models.widening import widen_into
    from ..training.distributed import unwrap

    preset, source = load_generators(path)
    source_cfg, run_cfg = GANPreset.from_dict(preset).generator, trainer.preset.generator
    widened = tuple(run_cfg.decoder_channels) != tuple(source_cfg.decoder_channels)
    if widened and (len(run_cfg.decoder_channels) != len(source_cfg.decoder_channels) or any(
            r < s for r, s in zip(run_cfg.decoder_channels, source_cfg.decoder_channels))
            or run_cfg.decoder_channels[0] != source_cfg.decoder_channels[0]):
        raise InputError(f"--init {path}: model.decoder_channels {list(run_cfg.decoder_channels)} must be as wide or "
                         f"wider than the source's {list(source_cfg.decoder_channels)} at every level, with the same "
                         "first entry (the FC fusion's seed)")
    comparable = dataclasses.replace(source_cfg, product_channels=run_cfg.product_channels,
                                     decoder_channels=run_cfg.decoder_channels)
    if comparable != run_cfg or source_cfg.product_channels not in (0, run_cfg.product_channels):
        raise InputError(f"--init {path}: its generator architecture differs from this run's "
                         f"({trainer.preset.name}); fine-tuning needs the same preset and model settings (it may "
                         "only add the product path, model.product_channels, and widen model.decoder_channels)")
    adds_product = source_cfg.product_channels != run_cfg.product_channels
    if widened and adds_product:
        raise InputError(f"--init {path}: widen the decoder and add the product path in two runs, not one")
    for name in ("g_raw", "g_bs"):
        target = getattr(trainer, name)
        if target is None or name not in source:
            continue
        if adds_product:
            # The new path starts at zero (ViewProductPath.reset_mix): same output as the source.
            missing, unexpected = unwrap(target).load_state_dict(source[name].state_dict(), strict=False)
            if unexpected or [key for key in missing if not key.startswith("product.")]:
                raise InputError(f"--init {path}: its {name} weights do not fit this run's generator")
            continue
        try:  # the same layers, as wide or wider: an exact copy where the widths agree
            widen_into(unwrap(target), source[name])
        except ValueError as error:
            raise InputError(f"--init {path}: its {name} weights do not fit this run's generator: {error}") from None


def build_perceptual(preset: Any, weights: Path | None) -> Any:
    """VGG16 ImageNet features φ when the preset's contrastive term is perceptual, else None."""
    if not preset.loss.uses_perceptual:
        return None
    from ..models.perceptual import VGG16Features

    return VGG16Features(weights, blocks=preset.loss.perceptual_blocks)


def run(args: argparse.Namespace) -> int:
    from ..training.config import GANTrainConfig
    from ..training.data_splits import check_image_size, training_splits
    from ..training.distributed import barrier, cleanup
    from ..training.gan_trainer import GANTrainer, build_gan_preset, uses_bone_suppressed
    from ..training.rng import seed_everything
    from ..training.run_setup import setup_run

    extra = {"bs_source": args.bs_source, "variant": args.variant}
    config = resolve_run_config(GANTrainConfig, args, extra)
    preset = build_gan_preset(config)  # validates the model/loss keys before touching the run folder
    try:
        if config.augment and config.bs_source == "cdm" and uses_bone_suppressed(config, preset):
            raise InputError("augment=true re-renders the radiographs of every sample, so cached CDM outputs "
                             "cannot follow them: add --bs-source target")
        train_set, val_set = training_splits(args.data, config, preset.image_size)
        check_image_size(train_set, preset.image_size, f"{preset.name} GAN preset")
        # the run folder is made only once there is data to train on
        device, info = setup_run(config, args.output, resume=args.resume, overwrite=args.overwrite)
        if info.is_main:
            warn_full_preset_on_cpu("gan", config, device, len(train_set))
        train_set, val_set, cdm_info = bone_suppressed_sets(config, preset, args, train_set, val_set, device, info)
        perceptual = build_perceptual(preset, args.vgg_weights)
        seed_everything(config.seed)
        trainer = GANTrainer(config, args.output, train_set=train_set, val_set=val_set, preset=preset,
                             perceptual=perceptual, cdm_info=cdm_info, device=device, dist_info=info)
        if args.init is not None and not args.resume:
            initialise_generators(trainer, args.init)
        result = trainer.fit(resume=args.resume)
        barrier()  # no rank tears the process group down while another is still writing its last checkpoint
        return report(result, info)
    finally:
        cleanup()
