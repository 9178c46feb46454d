"""``dctnet train-cdm`` — train the bone-suppression conditional diffusion model (DCT-Net §2.1).

Trains on the prepared cases' radiograph pairs (DRR → synthetic bone-suppressed DRR, PA and lateral as separate
samples with a view flag) with an EMA of the weights, validating every epoch and keeping ``latest.pt`` and
``best.pt`` (best DDIM-sample PSNR on the validation split) in the run folder. Examples::

    dctnet train-cdm --data PREP --output runs/cdm --preset small
    dctnet train-cdm --data PREP --output runs/cdm --resume            # continue after Ctrl-C / a crash
    dctnet train-cdm --data PREP --output runs/cdm --set lr=5e-5 --set model.dropout=0.1

Several GPUs on one node, and two nodes: the torchrun lines at the end of ``dctnet train-cdm --help``.
``--set batch_size=B`` is per process: the global batch is B × processes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import InputError
from .train_common import add_common_arguments, report, resolve_run_config, warn_full_preset_on_cpu

# torch, numpy and the modules that import them, and training.config (YAML files), are imported inside the
# functions: every dctnet run imports every command module (DCTNetLib.cli), so `dctnet --help` stays fast
# and a reconstruction loads nothing it does not need.

HELP = "train the bone-suppression conditional diffusion model (CDM) on prepared radiograph pairs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, "train-cdm", "--data PREP --output runs/cdm")
    parser.add_argument("--init", type=Path, metavar="MODEL",
                        help="start from the CDM of this model bundle, or the online weights of this `dctnet "
                             "train-cdm` checkpoint or run folder (fine-tuning; same architecture). Ignored on "
                             "--resume")


def initialise_cdm(diffusion: Any, path: Path) -> None:
    """Copy the weights of the CDM in ``path`` (bundle or CDM checkpoint) into ``diffusion``.

    Raises:
        InputError: the source's architecture differs from the run's.
    """
    from ..checkpoints.bundle import load_initial_cdm

    source = load_initial_cdm(path)
    if source.config.network_dict() != diffusion.config.network_dict():
        raise InputError(f"--init {path}: its CDM configuration differs from this run's; fine-tuning needs the "
                         "same preset and model settings")
    diffusion.load_state_dict(source.state_dict())


def run(args: argparse.Namespace) -> int:
    from ..training.cdm_trainer import CDMTrainer, build_cdm_model
    from ..training.config import CDMTrainConfig
    from ..training.data_splits import check_image_size, training_splits
    from ..training.distributed import barrier, cleanup
    from ..training.rng import seed_everything
    from ..training.run_setup import setup_run

    config = resolve_run_config(CDMTrainConfig, args)
    try:
        seed_everything(config.seed)
        diffusion = build_cdm_model(config.size, config.model)
        if args.init is not None and not args.resume:
            initialise_cdm(diffusion, args.init)  # before the trainer, so the EMA starts from it too
        train_set, val_set = training_splits(args.data, config, diffusion.config.image_size)
        check_image_size(train_set, diffusion.config.image_size, f"{config.size} CDM preset")
        # the run folder is made only once there is data to train on
        device, info = setup_run(config, args.output, resume=args.resume, overwrite=args.overwrite)
        if info.is_main:
            warn_full_preset_on_cpu("cdm", config, device, len(train_set))
        trainer = CDMTrainer(config, args.output, train_set=train_set, val_set=val_set, diffusion=diffusion,
                             device=device, dist_info=info)
        result = trainer.fit(resume=args.resume)
        barrier()  # no rank tears the process group down while another is still writing its last checkpoint
        return report(result, info)
    finally:
        cleanup()
