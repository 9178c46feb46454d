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

from .train_common import add_common_arguments, report, resolve_run_config

# torch, numpy and the modules that import them, and training.config (YAML files), are imported inside the
# functions: every dctnet run imports every command module (DCTNetLib.cli), so `dctnet --help` stays fast
# and a reconstruction loads nothing it does not need.

HELP = "train the bone-suppression conditional diffusion model (CDM) on prepared radiograph pairs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, "train-cdm", "--data PREP --output runs/cdm")


def run(args: argparse.Namespace) -> int:
    from ..training.cdm_trainer import CDMTrainer, build_cdm_model
    from ..training.config import CDMTrainConfig
    from ..training.data_splits import check_image_size, load_splits
    from ..training.distributed import barrier, cleanup
    from ..training.rng import seed_everything
    from ..training.run_setup import setup_run

    config = resolve_run_config(CDMTrainConfig, args)
    try:
        seed_everything(config.seed)
        diffusion = build_cdm_model(config.size, config.model)
        train_set, val_set = load_splits(args.data, config.augment, diffusion.config.image_size)
        check_image_size(train_set, diffusion.config.image_size, f"{config.size} CDM preset")
        # the run folder is made only once there is data to train on
        device, info = setup_run(config, args.output, resume=args.resume, overwrite=args.overwrite)
        trainer = CDMTrainer(config, args.output, train_set=train_set, val_set=val_set, diffusion=diffusion,
                             device=device, dist_info=info)
        result = trainer.fit(resume=args.resume)
        barrier()  # no rank tears the process group down while another is still writing its last checkpoint
        return report(result, info)
    finally:
        cleanup()
