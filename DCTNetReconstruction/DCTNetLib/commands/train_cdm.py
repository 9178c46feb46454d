"""``dctnet train-cdm`` — train the bone-suppression conditional diffusion model (DCT-Net §2.1).

Trains on the prepared cases' radiograph pairs (DRR → synthetic bone-suppressed DRR, PA and lateral as separate
samples with a view flag) with an EMA of the weights, validating every epoch and keeping ``latest.pt`` and
``best.pt`` (best DDIM-sample PSNR on the validation split) in the run folder. Examples::

    dctnet train-cdm --data PREP --output runs/cdm --preset small
    dctnet train-cdm --data PREP --output runs/cdm --resume            # continue after Ctrl-C / a crash
    dctnet train-cdm --data PREP --output runs/cdm --set lr=5e-5 --set model.dropout=0.1

Several GPUs on one node, and two nodes: the torchrun lines at the end of ``dctnet train-cdm --help``.
``--set batch_size=B`` is per process: the global batch is B × processes. The helpers here are shared with
``dctnet train`` (:mod:`DCTNetLib.commands.train`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError

HELP = "train the bone-suppression conditional diffusion model (CDM) on prepared radiograph pairs"

TORCHRUN_EPILOG = """multi-GPU / multi-node (torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; rank 0 logs and checkpoints):
  one node, 4 GPUs:
    torchrun --standalone --nproc_per_node=4 -m DCTNetLib {cmd} {args}
  two nodes, 4 GPUs each (same line on both, --node_rank 0 and 1; HOST0 = address of node 0):
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=4 --master_addr=HOST0 --master_port=29500 \\
        -m DCTNetLib {cmd} {args}
    torchrun --nnodes=2 --node_rank=1 --nproc_per_node=4 --master_addr=HOST0 --master_port=29500 \\
        -m DCTNetLib {cmd} {args}
  batch_size is per process (global batch = batch_size x processes)."""


def add_common_arguments(parser: argparse.ArgumentParser, command: str, example_args: str) -> None:
    """Arguments shared by ``train-cdm`` and ``train``."""
    torchrun = TORCHRUN_EPILOG.format(cmd=command, args=example_args)
    parser.epilog = f"{parser.epilog}\n\n{torchrun}" if parser.epilog else torchrun
    parser.add_argument("--data", required=True, type=Path, help="prepared data folder (`dctnet prepare`)")
    parser.add_argument("--output", required=True, type=Path, help="run folder (checkpoints, logs)")
    parser.add_argument("--config", type=Path, help="YAML or JSON file of training config keys")
    parser.add_argument("--preset", choices=("tiny", "small", "full"),
                        help="model size: full (GPU, paper), small (CPU), tiny (a quick trial: 32² radiographs "
                             "and 32³ CTs, prepared data resampled on load)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable), e.g. --set lr=1e-4 --set model.dropout=0.1")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in --output from latest.pt")
    mode.add_argument("--overwrite", action="store_true", help="delete the run in --output and start again")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: auto (CUDA when available)")
    parser.add_argument("--epochs", type=int, help="epochs to train (default 100, the paper's)")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimisation steps in total")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, "train-cdm", "--data PREP --output runs/cdm")


def resolve_run_config(config_cls: type, args: argparse.Namespace, extra_flags: dict[str, Any] | None = None) -> Any:
    """The run's config: saved run config (on --resume) < --config < --set < flags (see training.config)."""
    from ..training.config import resolve_config

    saved = None
    saved_path = args.output / "config.json"
    if args.resume and saved_path.is_file():
        try:
            saved = json.loads(saved_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputError(f"cannot parse the saved run config {saved_path}: {exc}") from exc
        for key in ("max_steps", "stop_after_steps"):  # limits of one invocation, not of the run
            saved.pop(key, None)
    flags = {"preset": args.preset, "device": args.device, "epochs": args.epochs, "max_steps": args.max_steps,
             **(extra_flags or {})}
    return resolve_config(config_cls, saved=saved, config_file=args.config, set_pairs=args.set, flags=flags)


def setup_run(config: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    """Select the device, start the process group (under torchrun) and prepare the run folder on rank 0."""
    from ..training.distributed import barrier, detect, init_distributed
    from ..training.device import select_device
    from ..training.run_folder import prepare_run_dir

    device = select_device(config.device, detect())
    info = init_distributed(use_cuda=device.type == "cuda")
    if info.is_main:
        prepare_run_dir(args.output, resume=args.resume, overwrite=args.overwrite)
    barrier()
    return device, info


def check_image_size(dataset: Any, expected: int, what: str) -> None:
    """Refuse prepared radiographs whose size differs from the model's (e.g. the tiny preset on 128² data)."""
    if len(dataset) == 0:
        raise InputError(f"the training split of {getattr(dataset, 'root', 'the data')} is empty")
    size = tuple(dataset[0]["drr"].shape[-2:])
    if size != (expected, expected):
        raise InputError(f"prepared radiographs in {getattr(dataset, 'root', 'the data')} are {size[0]}×{size[1]} "
                         f"but the {what} expects {expected}×{expected}; choose another --preset or "
                         f"--set model.image_size={size[0]}")


def load_splits(data: Path, augment: bool = False, image_size: int | None = None) -> tuple[Any, Any]:
    """Training and validation :class:`PreparedCaseDataset` (validation None when its split is empty), resampled
    on load to the model's ``image_size`` when the prepared size differs; with ``augment`` the training cases
    are drawn anew at every access (:class:`AugmentedCaseDataset`)."""
    from ..data.augment import AugmentedCaseDataset
    from ..data.datasets import PreparedCaseDataset

    if not data.is_dir():
        raise InputError(f"prepared data folder not found: {data}")
    train = PreparedCaseDataset(data, "train", image_size=image_size)
    val = PreparedCaseDataset(data, "val", image_size=image_size)
    if augment and image_size and len(train) and tuple(PreparedCaseDataset(data, "train")[0]["drr"].shape[-2:]) != (image_size,) * 2:
        raise InputError(f"augment=true re-renders the radiographs at the prepared size, which differs from the "
                         f"model's {image_size}×{image_size}: choose the preset of the prepared data's size")
    if augment and len(train):
        train = AugmentedCaseDataset(train)
    return train, (val if len(val) else None)


def resume_hint() -> str:
    """The command line that continues this run (the current one with --resume)."""
    argv = [a for a in sys.argv[1:] if a != "--overwrite"]
    if "--resume" not in argv:
        argv.append("--resume")
    prefix = "torchrun … -m DCTNetLib" if "RANK" in __import__("os").environ else "dctnet"
    return f"{prefix} {shlex.join(argv)}"


def report(result: dict[str, Any], info: Any) -> int:
    """Print how the run ended (rank 0) and return the exit code (130 after an interruption)."""
    if info.is_main:
        if result["status"] == "interrupted":
            print(f"stopped at step {result['step']} (epoch {result['epoch']}); checkpoint {result['latest']}\n"
                  f"resume with:\n  {resume_hint()}", file=sys.stderr)
        else:
            best = result["best_metric"]
            best_text = f", best validation PSNR {best:.3f} dB" if best is not None else ""
            print(f"finished at step {result['step']} (epoch {result['epoch']}){best_text}; "
                  f"checkpoints in {Path(result['latest']).parent}")
    return 130 if result["status"] == "interrupted" else 0


def run(args: argparse.Namespace) -> int:
    from ..training.cdm_trainer import CDMTrainer, build_cdm_model
    from ..training.config import CDMTrainConfig
    from ..training.distributed import barrier, cleanup
    from ..training.rng import seed_everything

    config = resolve_run_config(CDMTrainConfig, args)
    try:
        seed_everything(config.seed)
        diffusion = build_cdm_model(config.preset, config.model)
        train_set, val_set = load_splits(args.data, config.augment, diffusion.config.image_size)
        check_image_size(train_set, diffusion.config.image_size, f"{config.preset} CDM preset")
        device, info = setup_run(config, args)  # the run folder is made only once there is data to train on
        trainer = CDMTrainer(config, args.output, train_set=train_set, val_set=val_set, diffusion=diffusion,
                             device=device, dist_info=info)
        result = trainer.fit(resume=args.resume)
        barrier()  # no rank tears the process group down while another is still writing its last checkpoint
        return report(result, info)
    finally:
        cleanup()
