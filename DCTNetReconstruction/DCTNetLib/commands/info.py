"""``dctnet info`` — parameter counts of a model preset, and the machine / device the models would run on.

Examples::

    dctnet info                                   # full DCT-Net: G(Y), G(X), D, CDM, total vs the paper
    dctnet info --preset x2ct-baseline            # the X2CT-GAN baseline (paper Table 2: 73.15 M)
    dctnet info --preset ablation-no-perceptual@small --json
    dctnet info --all                             # one total line per preset

Counting builds the modules on PyTorch's "meta" device: no memory is allocated and no weights are needed, so
even the full presets are counted in well under a second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any

import torch
from torch import nn

from ..models.blocks import count_parameters
from ..models.presets import ABLATIONS, SIZES, GANPreset, build_discriminator, build_generator, describe, gan_preset

HELP = "show parameter counts of a model preset (generator, discriminator, CDM) and the torch / CUDA setup"

# Parameter totals reported by DCT-Net Table 2 (M): DCT-Net itself and X2CT-GAN (its G 61.7 M + D 11.1 M).
PAPER_TOTALS_M = {"dctnet@full": 60.70, "x2ct-baseline@full": 73.15}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="full", metavar="NAME",
                        help=f"GAN preset: {', '.join(SIZES + ABLATIONS)}, or VARIANT@SIZE (default: full)")
    parser.add_argument("--all", action="store_true", help="one total line for every preset at every size")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def machine_info() -> dict[str, Any]:
    """Python, torch, CUDA and CPU facts relevant to training and inference speed."""
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def _canonical(name: str) -> str:
    """``VARIANT@SIZE`` spelling of a preset name (``full`` → ``dctnet@full``)."""
    if "@" in name:
        return name
    return f"dctnet@{name}" if name in SIZES else f"{name}@full"


def _module_rows(prefix: str, module: nn.Module) -> list[tuple[str, int]]:
    """One row per direct child holding parameters, then the module's total."""
    rows = [(f"{prefix}.{child_name}", count_parameters(child)) for child_name, child in module.named_children()]
    rows = [row for row in rows if row[1]]
    return rows + [(f"{prefix} total", count_parameters(module))]


def parameter_table(preset: GANPreset) -> dict[str, Any]:
    """Parameter counts of ``preset``: per-module rows, the trainable total G(Y) [+ G(X)] + D, and the CDM.

    The CDM (§2.1) is pre-trained and frozen while the GAN trains, so it is listed but not part of the total;
    the paper's 60.70 M (Table 2) is compared with G(Y) + G(X) + D.
    """
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        generator = build_generator(preset.generator)
        discriminator = build_discriminator(preset.discriminator)
    rows = _module_rows("G(Y)", generator)
    g_params = count_parameters(generator)
    total = g_params + count_parameters(discriminator)
    if preset.loss.dual_branch:
        rows.append(("G(X) total (G(Y)'s architecture)", g_params))
        total += g_params
    rows += _module_rows("D", discriminator)
    out: dict[str, Any] = {"preset": preset.name, "description": describe(preset.name), "rows": rows,
                           "total": total, "paper_total": PAPER_TOTALS_M.get(_canonical(preset.name))}
    if preset.loss.dual_branch:
        out["cdm"] = _cdm_parameters(preset.name)
    return out


def _cdm_parameters(name: str) -> int | None:
    """Parameters of the CDM preset of the same size (``None`` if the CDM package is unavailable)."""
    try:
        from ..models.diffusion import CDMConfig, ConditionalUNet
    except ImportError:
        return None
    size = _canonical(name).split("@")[1]
    with torch.device("meta"):
        return count_parameters(ConditionalUNet(getattr(CDMConfig, size)()))


def _print_table(table: dict[str, Any]) -> None:
    print(f"preset {table['preset']}: {table['description']}")
    cdm_label = "CDM (frozen, not in total)"
    width = max([len(label) for label, _ in table["rows"]] + [len(cdm_label)]) + 2

    def line(label: str, count: int, note: str = "") -> None:
        print(f"  {label:<{width}}{count:>13,}  {count / 1e6:>8.3f} M{note}")

    for label, count in table["rows"]:
        line(label, count)
    if table.get("cdm") is not None:
        line(cdm_label, table["cdm"])
    paper = table["paper_total"]
    line("total", table["total"],
         f"   (paper: {paper:.2f} M, {100 * (table['total'] / 1e6 / paper - 1):+.1f} %)" if paper else "")


def run(args: argparse.Namespace) -> int:
    machine = machine_info()
    if args.all:
        names = [f"{variant}@{size}" for variant in ("dctnet",) + ABLATIONS for size in SIZES]
        tables = [parameter_table(gan_preset(name)) for name in names]
        if args.json:
            print(json.dumps({"machine": machine, "presets": tables}, indent=2))
            return 0
        for table in tables:
            print(f"{table['preset']:<32}{table['total'] / 1e6:>10.3f} M")
        return 0
    preset = gan_preset(args.preset)
    table = parameter_table(preset)
    if args.json:
        print(json.dumps({"machine": machine, "config": preset.to_dict(), **table}, indent=2))
        return 0
    gpus = ", ".join(machine["gpus"]) or "none"
    print(f"python {machine['python']} on {machine['platform']}; torch {machine['torch']}, "
          f"CUDA {machine['cuda_version'] or 'not built'} ({'available' if machine['cuda_available'] else 'unavailable'}), "
          f"GPUs: {gpus}; {machine['cpu_count']} CPUs, {machine['torch_threads']} torch threads")
    _print_table(table)
    sys.stdout.flush()
    return 0
