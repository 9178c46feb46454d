"""``dctnet plot`` — training curves of a run as a PNG, outside Slicer: the loss terms of every logged step and
the validation metrics of every epoch, read from the run's ``metrics.jsonl``.

Examples::

    dctnet plot runs/gan                          # writes runs/gan/curves.png
    dctnet plot runs/cdm --output cdm.png --log   # log-scaled losses, somewhere else
    dctnet plot runs/gan --overwrite              # redraw while the run goes on

The log is read the way the Slicer training module reads it (:class:`DCTNetLib.training.runlog.RunHistory`), so a
run that is still writing can be plotted; a half-written last line is skipped.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from ..errors import InputError, OutputError
from ..io.atomic import atomic_write_bytes, display_path

# torch, numpy and the modules that import them are imported inside the functions: `dctnet --help` imports
# every command module (DCTNetLib.cli) and stays fast.

HELP = "plot a training run's losses and validation metrics (metrics.jsonl) to a PNG"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="the run folder (or its metrics.jsonl)")
    parser.add_argument("--output", type=Path, help="PNG to write (default: curves.png in the run folder)")
    parser.add_argument("--log", action="store_true", help="logarithmic loss axis")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing PNG")


def plot_history(history, title: str, log_scale: bool = False) -> bytes:
    """PNG bytes: losses against step (left), validation metrics against epoch (right, one axis per metric)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses, validation = history.loss_series(), history.validation_series()
    panels = 1 + len(validation)
    fig, axes = plt.subplots(1, panels, figsize=(5.0 * panels, 3.6), squeeze=False)
    ax = axes[0][0]
    for name, (steps, values) in sorted(losses.items()):
        ax.plot(steps, values, label=name, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    if log_scale and losses:
        ax.set_yscale("log")
    if losses:
        ax.legend(fontsize=7)
    for ax, (name, (epochs, values)) in zip(axes[0][1:], sorted(validation.items())):
        ax.plot(epochs, values, marker="o", linewidth=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {name}")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def run(args: argparse.Namespace) -> int:
    from ..training.runlog import METRICS_FILENAME, MetricsTail, RunHistory

    log_path = args.run if args.run.is_file() else args.run / METRICS_FILENAME
    if not log_path.is_file():
        raise InputError(f"no {METRICS_FILENAME} in {display_path(args.run)} (is it a `dctnet train` or "
                         "`dctnet train-cdm` run folder?)")
    history = RunHistory()
    history.update(MetricsTail(log_path).read_new())
    if not history.losses and not history.validation:
        raise InputError(f"{display_path(log_path)} holds no training or validation records yet")
    output = args.output or log_path.parent / "curves.png"
    if not output.name.lower().endswith(".png"):
        raise OutputError(f"--output {display_path(output)}: the plot is a PNG, so its name must end in .png (a "
                          "run's metrics.jsonl or checkpoints are never replaced by it)")
    if output.exists() and not args.overwrite:
        raise OutputError(f"{display_path(output)} exists; pass --overwrite to replace it")
    title = f"{log_path.parent.name}: step {history.last_step}, epoch {history.last_epoch}"
    atomic_write_bytes(output, plot_history(history, title, args.log))
    print(f"dctnet plot: {display_path(output)} ({len(history.losses)} loss terms up to step {history.last_step}, "
          f"{len(history.validation)} validation metrics)")
    return 0
