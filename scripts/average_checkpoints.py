"""Average the weights of several ``dctnet train`` checkpoints of one run (stochastic weight averaging).

Averaging the weights visited at the end of training, while the learning rate decays, gives a flatter, less noisy
solution than the last step alone (Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
Generalization", UAI 2018). The generators have no batch-norm statistics (instance norm), so the average needs no
recalibration. The output is a checkpoint of the same format — the last input's, with every model's weights
replaced by the mean — that ``dctnet export`` and ``dctnet evaluate`` read like any other.

    python scripts/average_checkpoints.py --output WORK/gan_swa.pt WORK/snapshots/epoch_*.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from DCTNetLib.io.atomic import atomic_path
from DCTNetLib.checkpoints.checkpoint import load_checkpoint


def average(paths: list[Path]) -> dict:
    """The last checkpoint of ``paths`` with each model's floating-point weights averaged over all of them."""
    states = [load_checkpoint(path, kind="gan") for path in paths]
    steps = [int(s["progress"]["step"]) for s in states]
    if len(set(steps)) != len(steps):
        raise SystemExit(f"the checkpoints repeat a step ({steps}): each step must count once")
    out = states[-1]
    for name, weights in out["models"].items():
        out["models"][name] = {
            key: (torch.stack([s["models"][name][key].float() for s in states]).mean(0).to(value.dtype)
                  if value.is_floating_point() else value)
            for key, value in weights.items()}
    out["averaged_steps"] = steps
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, help="GAN checkpoints of one run, oldest first")
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)
    state = average(sorted(args.checkpoints, key=lambda p: load_checkpoint(p, kind="gan")["progress"]["step"]))
    with atomic_path(args.output) as tmp:
        torch.save(state, tmp)
    print(json.dumps({"output": str(args.output), "averaged_steps": state["averaged_steps"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
