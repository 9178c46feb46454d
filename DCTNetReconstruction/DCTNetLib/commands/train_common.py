"""What ``dctnet train-cdm`` and ``dctnet train`` share on the command line: their common arguments (with the
torchrun lines of their help), the run config they resolve from them, and the report of how a run ended.

Not a sub-command itself (``cli.COMMANDS`` does not list it). Like a command module it imports nothing heavy at
module level, nor training.config (which reads YAML files): every ``dctnet`` run imports it.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..training.run_folder import honour_resume, saved_run_config
from ..errors import InputError

__all__ = ["TORCHRUN_EPILOG", "add_common_arguments", "resolve_run_config", "resume_hint", "report", "CPUCost",
           "CPU_STEP_COST", "warn_full_preset_on_cpu"]

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
        raise InputError(f"--max-steps must be at least 1, got {args.max_steps}")
    args.resume = honour_resume(args.output, args.resume)  # a folder without any checkpoint starts afresh
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
    if not 0 < lr < _FLOAT32_MAX:  # also false for NaN
        raise InputError(f"learning rate lr={lr:g} is not a positive number below {_FLOAT32_MAX:.3g} (float32's "
                         "largest); set a usual one, e.g. --set lr=2e-4")


@dataclass(frozen=True)
class CPUCost:
    """One training step on a CPU: wall time and peak resident memory of the process, at a batch of ``batch``."""

    step_s: float
    peak_gb: float
    batch: int


# Measured by `benchmarks/run_all.py --only training` on the project's 2-core CPU with 2 threads
# (benchmarks/results/training_report.json): a full-preset GAN step (batch 1, all four loss terms) takes 36.3 s at a
# peak of 7.6 GB, a small one 0.82 s at 1.3 GB, a small CDM step (8 radiographs) 0.40 s at 1.5 GB. The full CDM was
# not timed on a CPU: its step is the full GAN's scaled by their FLOPs per step (2.36 against 6.47 TFLOP,
# docs/reproduction.md §5), its memory the fp32 peak estimated there (6.3 GB).
_FULL_GAN_STEP_S, _FULL_GAN_TFLOP, _FULL_CDM_TFLOP = 36.3, 6.47, 2.36
CPU_STEP_COST = {
    ("gan", "full"): CPUCost(_FULL_GAN_STEP_S, 7.6, batch=1),
    ("gan", "small"): CPUCost(0.82, 1.3, batch=1),
    ("cdm", "full"): CPUCost(round(_FULL_GAN_STEP_S * _FULL_CDM_TFLOP / _FULL_GAN_TFLOP, 1), 6.3, batch=8),
    ("cdm", "small"): CPUCost(0.40, 1.5, batch=8),
}


def _duration(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours / 24:.0f} days" if hours >= 48 else f"{hours:.1f} h" if hours >= 1 else f"{seconds / 60:.0f} min"


def warn_full_preset_on_cpu(kind: str, config: Any, device: Any, train_samples: int) -> str | None:
    """Warn (and return the text) when a ``full``-preset training starts on a CPU: what a step costs there, how
    long the run would take and how much memory it needs, and that ``--preset small`` is the CPU's size.

    Args:
        kind: ``"gan"`` (``dctnet train``) or ``"cdm"`` (``dctnet train-cdm``).
        config: the resolved training config (``size``, ``epochs``, ``max_steps``, ``batch_size``).
        device: the torch device the run trains on.
        train_samples: samples per epoch (the training split's length).
    """
    if config.size != "full" or getattr(device, "type", str(device)) != "cpu":
        return None
    full, small = CPU_STEP_COST[(kind, "full")], CPU_STEP_COST[(kind, "small")]
    steps = config.epochs * math.ceil(train_samples / config.batch_size)
    steps = min(steps, config.max_steps) if config.max_steps else steps
    step_full, step_small = (cost.step_s * config.batch_size / cost.batch for cost in (full, small))  # ∝ batch
    text = (f"the full preset is meant for a GPU: on a CPU one step (batch {config.batch_size}) takes about "
            f"{step_full:.0f} s (measured on a 2-core CPU), so these {steps:,} steps would take about "
            f"{_duration(steps * step_full)}, with about {full.peak_gb:.1f} GB of memory at batch {full.batch}. On a "
            f"CPU use --preset small (about {step_small:.1f} s a step, {small.peak_gb:.1f} GB: "
            f"{_duration(steps * step_small)} for as many steps), or --device cuda")
    warnings.warn(text, stacklevel=2)
    return text


def resume_hint() -> str:
    """The command line that continues this run (the current one with --resume)."""
    argv = [a for a in sys.argv[1:] if a != "--overwrite"]
    if "--resume" not in argv:
        argv.append("--resume")
    prefix = "torchrun … -m DCTNetLib" if "RANK" in os.environ else "dctnet"
    return f"{prefix} {shlex.join(argv)}"


def report(result: Any, info: Any) -> int:
    """Print how the run ended (rank 0) and return the exit code: 0, or after an interruption 143 (128 + 15) when
    SIGTERM asked for it, as a shell reports a process SIGTERM ended, and 130 otherwise (Ctrl-C, the stop file).

    Args:
        result: the :class:`~DCTNetLib.training.loop.FitResult` of the run.
        info: the process's :class:`~DCTNetLib.training.distributed.DistInfo`.
    """
    if info.is_main:
        if result.status == "interrupted":
            print(f"stopped at step {result.step} (epoch {result.epoch}); checkpoint {result.latest}\n"
                  f"resume with:\n  {resume_hint()}", file=sys.stderr)
        else:
            from ..training.config import BEST_ON

            label = BEST_ON.get(result.best_key, result.best_key + " {:.3f}")
            best_text = "" if result.best_metric is None else f", best validation {label.format(result.best_metric)}"
            print(f"finished at step {result.step} (epoch {result.epoch}){best_text}; "
                  f"checkpoints in {Path(result.latest).parent}")
    if result.status != "interrupted":
        return 0
    return 143 if result.stopped_by == "SIGTERM" else 130
