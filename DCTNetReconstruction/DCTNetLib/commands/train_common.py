"""What ``dctnet train-cdm`` and ``dctnet train`` share on the command line: their common arguments (with the
torchrun lines of their help), the run config they resolve from them, and the report of how a run ended.

Not a sub-command itself (``cli.COMMANDS`` does not list it). Like a command module it imports nothing heavy at
module level, nor training.config (which reads YAML files): every ``dctnet`` run imports it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from ..training.run_folder import saved_run_config

__all__ = ["TORCHRUN_EPILOG", "add_common_arguments", "resolve_run_config", "resume_hint", "report"]

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


def resolve_run_config(config_cls: type, args: argparse.Namespace, extra_flags: dict[str, Any] | None = None) -> Any:
    """The run's config: saved run config (on --resume) < --config < --set < flags (see training.config)."""
    from ..training.config import resolve_config

    if args.max_steps is not None and args.max_steps < 1:  # 0 would read as "no limit" and train every epoch
        from ..errors import InputError

        raise InputError(f"--max-steps must be at least 1, got {args.max_steps}")
    saved = saved_run_config(args.output) if args.resume else None
    flags = {"size": args.preset, "device": args.device, "epochs": args.epochs, "max_steps": args.max_steps,
             **(extra_flags or {})}
    config = resolve_config(config_cls, saved=saved, config_file=args.config, set_pairs=args.set, flags=flags)
    check_learning_rate(config.lr)
    return config


# The optimisers keep their state in float32: a learning rate beyond its largest value overflows inside Adam's step.
_FLOAT32_MAX = 3.4028234663852886e38


def check_learning_rate(lr: float) -> None:
    """Refuse, before the run folder is made, a learning rate the optimiser cannot step with.

    Raises:
        InputError: ``lr`` is not a positive number below float32's largest value (NaN, inf, 1e300, 0, negative).
    """
    from ..errors import InputError

    if not 0 < lr < _FLOAT32_MAX:  # also false for NaN
        raise InputError(f"learning rate lr={lr:g} is not a positive number below {_FLOAT32_MAX:.3g} (float32's "
                         "largest); set a usual one, e.g. --set lr=2e-4")


def resume_hint() -> str:
    """The command line that continues this run (the current one with --resume)."""
    argv = [a for a in sys.argv[1:] if a != "--overwrite"]
    if "--resume" not in argv:
        argv.append("--resume")
    prefix = "torchrun … -m DCTNetLib" if "RANK" in os.environ else "dctnet"
    return f"{prefix} {shlex.join(argv)}"


def report(result: Any, info: Any) -> int:
    """Print how the run ended (rank 0) and return the exit code (130 after an interruption).

    Args:
        result: the :class:`~DCTNetLib.training.loop.FitResult` of the run.
        info: the process's :class:`~DCTNetLib.training.distributed.DistInfo`.
    """
    if info.is_main:
        if result.status == "interrupted":
            print(f"stopped at step {result.step} (epoch {result.epoch}); checkpoint {result.latest}\n"
                  f"resume with:\n  {resume_hint()}", file=sys.stderr)
        else:
            best_text = f", best validation PSNR {result.best_metric:.3f} dB" if result.best_metric is not None else ""
            print(f"finished at step {result.step} (epoch {result.epoch}){best_text}; "
                  f"checkpoints in {Path(result.latest).parent}")
    return 130 if result.status == "interrupted" else 0
