"""``dctnet info`` — the model card of the shipped (or a given) model, parameter counts of a model preset, and the
machine / device the models would run on.

Examples::

    dctnet info                                   # machine, model card and parameter counts of the shipped model
    dctnet info --weights my_model.pt             # the card in the manifest.json beside your bundle
    dctnet info --preset x2ct-baseline            # the X2CT-GAN baseline (paper Table 2: 73.15 M)
    dctnet info --preset ablation-no-perceptual@small --json
    dctnet info --all                             # the machine, then one total line per preset

The model card is read from the weights' ``manifest.json`` (its optional ``model_card`` section, written by
``scripts/write_weights_manifest.py``): intended use, training data, measured performance, licence and version.
Counting builds the modules on PyTorch's "meta" device: no memory is allocated and no weights are needed, so
even the full presets are counted in well under a second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..helpers import count_parameters
from ..checkpoints.manifest import read_manifest as read_checked, recorded_sha256

HELP = "show the model card of the weights, parameter counts of a model preset and the torch / CUDA setup"

# Parameter totals reported by DCT-Net Table 2 (M): DCT-Net itself and X2CT-GAN (its G 61.7 M + D 11.1 M).
PAPER_TOTALS_M = {"dctnet@full": 60.70, "x2ct-baseline@full": 73.15}
# Model-card fields in display order: (key in the manifest's "model_card", title).
MODEL_CARD_FIELDS = (
    ("model", "Model"),
    ("version", "Version"),
    ("intended_use", "Intended use"),
    ("not_intended_for", "Not intended for"),
    ("training_data", "Training data"),
    ("performance", "Measured performance"),
    ("limitations", "Limitations"),
    ("licence", "Licence"),
    ("citation", "Citation"),
)
NOT_RECORDED = "not recorded in the manifest"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..models.presets import ABLATIONS, SIZES

    parser.add_argument("--preset", default=None, metavar="NAME",
                        help=f"GAN preset: {', '.join(SIZES + ABLATIONS)}, or VARIANT@SIZE (default: the model "
                             "of --weights, or the shipped one)")
    parser.add_argument("--weights", type=Path, metavar="BUNDLE",
                        help="show the model card in the manifest.json beside this bundle (default: the shipped one)")
    parser.add_argument("--all", action="store_true", help="one total line for every preset at every size")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def machine_info() -> dict[str, Any]:
    """Python, torch, CUDA and CPU facts relevant to training and inference speed."""
    import torch

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


def _module_rows(prefix: str, module: Any) -> list[tuple[str, int]]:
    """One row per direct child holding parameters, then the module's total."""
    rows = [(f"{prefix}.{child_name}", count_parameters(child)) for child_name, child in module.named_children()]
    rows = [row for row in rows if row[1]]
    return rows + [(f"{prefix} total", count_parameters(module))]


def parameter_table(preset: Any) -> dict[str, Any]:
    """Parameter counts of ``preset``: per-module rows, the trainable total G(Y) [+ G(X)] + D, and the CDM.

    The CDM (§2.1) is pre-trained and frozen while the GAN trains, so it is listed but not part of the total;
    the paper's 60.70 M (Table 2) is compared with G(Y) + G(X) + D.
    """
    import torch

    from ..models.presets import build_discriminator, build_generator, describe

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
                           "total": total, "paper_total": PAPER_TOTALS_M.get(preset.name)}
    if preset.loss.dual_branch:
        out["cdm"] = _cdm_parameters(preset.size)
    return out


def _cdm_parameters(size: str) -> int | None:
    """Parameters of the CDM preset of the same size (``None`` if the CDM package is unavailable)."""
    import torch

    try:
        from ..models.diffusion import CDMConfig, ConditionalUNet
    except ImportError:
        return None
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


def manifest_path_for(weights: Path | None) -> Path:
    """The manifest.json describing ``weights`` (beside it), or the shipped bundle's."""
    if weights is None:
        return Path(__file__).resolve().parents[1] / "resources" / "weights" / "manifest.json"
    if not weights.is_file():
        raise InputError(f"--weights {weights}: file not found")
    return weights.with_name("manifest.json")


def read_manifest(path: Path, weights: Path | None = None) -> dict[str, Any] | None:
    """The manifest at ``path`` (None when there is none), once ``weights`` (by default the file it names) was
    checked against the sha256 it records: a card is never shown for a file it does not describe.

    Raises:
        WeightsError: the manifest is unreadable or malformed, or the weights do not match its sha256.
    """
    from ..io.safe_load import check_sha256  # numpy: kept off `dctnet --help`'s path

    manifest = read_checked(path)
    if manifest is not None and (weights is not None or manifest.get("file")):
        weights = weights or path.with_name(str(manifest["file"]))
        expected = recorded_sha256(manifest, weights, path)
        if expected is not None and weights.is_file():
            check_sha256(weights, expected)
    return manifest


def model_card(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``model_card`` section, with what the rest of the manifest records for fields it lacks
    (model, training data, version): every key of :data:`MODEL_CARD_FIELDS`, plus the file's name and sha256."""
    card = manifest.get("model_card")
    card = dict(card) if isinstance(card, dict) else {}
    if "model" not in card and manifest.get("model"):
        card["model"] = manifest["model"]
    if "training_data" not in card and manifest.get("training_cts"):
        cts = ", ".join(f"{name} ×{count}" if isinstance(count, int) else f"{name} ({count})"
                        for name, count in manifest["training_cts"].items())
        splits = manifest.get("splits")
        card["training_data"] = cts + (f"; splits {splits}" if splits else "")
    if "version" not in card and manifest.get("code_revision"):
        card["version"] = f"code revision {manifest['code_revision']}"
    out = {key: card.get(key, NOT_RECORDED) for key, _ in MODEL_CARD_FIELDS}
    out["file"] = manifest.get("file")
    out["sha256"] = manifest.get("sha256")
    return out


def _card_value(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_card_value(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return "; ".join(_card_value(item) for item in value)
    return str(value)


def print_model_card(card: dict[str, Any] | None, manifest: Path) -> None:
    if card is None:
        print(f"model card: none (no {manifest}); `dctnet export --manifest` writes one beside a bundle")
        return
    sha = (card.get("sha256") or "?")[:16]
    print(f"model card ({card.get('file')}, sha256 {sha}…, from {manifest}):")
    width = max(len(title) for _, title in MODEL_CARD_FIELDS) + 2
    for key, title in MODEL_CARD_FIELDS:
        print(f"  {title + ':':<{width}}{_card_value(card[key])}")


def _machine_line(machine: dict[str, Any]) -> str:
    gpus = ", ".join(machine["gpus"]) or "none"
    return (f"python {machine['python']} on {machine['platform']}; torch {machine['torch']}, "
            f"CUDA {machine['cuda_version'] or 'not built'} ({'available' if machine['cuda_available'] else 'unavailable'}), "
            f"GPUs: {gpus}; {machine['cpu_count']} CPUs, {machine['torch_threads']} torch threads")


def _model_preset(weights: Path | None) -> Any:
    """The GAN preset recorded in a model bundle (``None``: the shipped one), whose parameter table ``dctnet info``
    shows by default."""
    from ..checkpoints.bundle import default_weights_path, load_generators
    from ..models.presets import GANPreset

    preset, _ = load_generators(weights if weights is not None else default_weights_path())
    return GANPreset.from_dict(preset)


def run(args: argparse.Namespace) -> int:
    from ..models.presets import ABLATIONS, SIZES, gan_preset

    machine = machine_info()
    show_card = args.preset is None or args.weights is not None
    card = None
    if show_card:
        manifest_path = manifest_path_for(args.weights)
        manifest = read_manifest(manifest_path, args.weights)
        card = model_card(manifest) if manifest is not None else None
    if args.all:
        names = [f"{variant}@{size}" for variant in ("dctnet",) + ABLATIONS for size in SIZES]
        tables = [parameter_table(gan_preset(name)) for name in names]
        if args.json:
            print(json.dumps({"machine": machine, "model_card": card, "presets": tables}, indent=2))
            return 0
        print(_machine_line(machine))
        if show_card:
            print_model_card(card, manifest_path)
        for table in tables:
            print(f"{table['preset']:<32}{table['total'] / 1e6:>10.3f} M")
        return 0
    preset = gan_preset(args.preset) if args.preset else _model_preset(args.weights)
    table = parameter_table(preset)
    if args.json:
        print(json.dumps({"machine": machine, "model_card": card, "config": preset.to_dict(), **table}, indent=2))
        return 0
    print(_machine_line(machine))
    if show_card:
        print_model_card(card, manifest_path)
    _print_table(table)
    sys.stdout.flush()
    return 0
