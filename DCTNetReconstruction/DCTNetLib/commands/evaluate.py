"""``dctnet evaluate`` — metrics of trained GAN checkpoints on a prepared split, as tables like the paper's.

One checkpoint::

    dctnet evaluate --data PREP --split test --checkpoint runs/gan/best.pt --output eval/gan
    dctnet evaluate --data PREP --checkpoint runs/gan --output eval/gan --method "DCT-Net small, 300 steps"

The Table 1 ablations (``--ablations``): one run folder per variant under ``--runs``, named after the variant
(``dctnet``, ``ablation-no-dual-branch``, ``ablation-no-recon-gan``, ``ablation-no-perceptual``,
``x2ct-baseline``); each folder's ``best.pt`` (else ``latest.pt``) is evaluated::

    dctnet evaluate --data PREP --ablations --runs runs/ablations --output eval/ablations
    dctnet evaluate --data PREP --ablations --runs runs/ablations --output eval/ablations \\
        --train-epochs 10 --preset small --bs-source target      # train the missing / unfinished runs first

Evaluation never trains behind the user's back: without ``--train-epochs`` a variant with no checkpoint is
reported and skipped. With it, each variant is trained (or resumed, when its run stopped early) by
``dctnet train`` with the same data, size preset and inputs, for that many epochs, then evaluated.

The prediction is G(Y) (the raw-radiograph generator; G(X) only serves training). Per case: PSNR, tri-plane
SSIM and LPIPS, MAE and X2CT-GAN's PSNR (:func:`DCTNetLib.evaluation.metrics.evaluate_volume`). Written to
``--output`` (atomically; an existing result is not overwritten without ``--overwrite``):

- ``cases.csv`` (one checkpoint) or ``cases_<variant>.csv`` (ablations): one row per case;
- ``table.md``: the paper's table (Method | PSNR | SSIM | LPIPS | Params (M), mean ± std) and a second table
  with MAE (HU) and X2CT-PSNR; Params counts every trained network (G(Y), G(X), D), as in the paper's Table 2;
- ``metrics.jsonl``: one ``{"event": "eval", "case", …}`` record per case (read by the Slicer training module).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from ..cli import main as dctnet
from ..errors import InputError, OutputError, WeightsError
from ..helpers import count_parameters
from ..io.atomic import atomic_write_text, check_writable_dir, display_path
from ..training.run_folder import training_run_files
from .reconstruct import refinement_config

# torch, numpy and the modules that import them are imported inside the functions: `dctnet --help` imports
# every command module (DCTNetLib.cli) and stays fast.

HELP = "evaluate GAN checkpoints on a prepared split: PSNR/SSIM/LPIPS/MAE/X2CT-PSNR, per-case CSV + paper table"

log = logging.getLogger("dctnet.evaluate")

# Row names of DCT-Net Table 1 per variant, in the table's order (comparison, ablations, ours).
ROW_NAMES = {
    "x2ct-baseline": "X2CT-GAN",
    "ablation-no-dual-branch": "w/o Dual-branch",
    "ablation-no-recon-gan": "w/o Recon-GAN",
    "ablation-no-perceptual": "w/o ℓ_perceptual",
    "dctnet": "DCT-Net (ours)",
}
# Extra columns beyond the paper's: (result key, header).
EXTRA_METRICS = (("mae_hu", "MAE (HU, ↓)"), ("psnr_x2ct", "X2CT-PSNR (↑)"), ("bone_dice", "Bone Dice > 300 HU (↑)"),
                 ("p999_hu", "99.9th pct (HU)"))
OUTPUT_FILES = ("table.md", "metrics.jsonl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="prepared data folder (`dctnet prepare`)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="default: test")
    parser.add_argument("--output", required=True, type=Path, help="folder for cases*.csv, table.md, metrics.jsonl")
    parser.add_argument("--checkpoint", type=Path,
                        help="a `dctnet train` checkpoint (best.pt / latest.pt), its run folder (best.pt there, "
                             "else latest.pt), or a model bundle (`dctnet export`, the shipped weights)")
    parser.add_argument("--method", help="row name in the table (default: the checkpoint's preset, file and step; "
                                          "with --ablations the paper's Table 1 row names)")
    parser.add_argument("--ablations", action="store_true", help="evaluate the Table 1 variants found in --runs")
    parser.add_argument("--runs", type=Path, help="with --ablations: folder of one run folder per variant")
    parser.add_argument("--train-epochs", type=int, metavar="N",
                        help="with --ablations: train (or finish) each variant for N epochs before evaluating")
    parser.add_argument("--preset", choices=("tiny", "small", "full"), default="small",
                        help="with --train-epochs: model size of the trained variants (default small)")
    parser.add_argument("--cdm", type=Path, help="with --train-epochs: CDM checkpoint for G(X)'s inputs")
    parser.add_argument("--bs-source", choices=("cdm", "target"), help="with --train-epochs: see `dctnet train`")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="with --train-epochs: training config overrides passed to `dctnet train`")
    parser.add_argument("--no-lpips", action="store_true", help="skip LPIPS (needs ImageNet AlexNet weights)")
    parser.add_argument("--lpips-stride", type=int, default=1, help="LPIPS on every N-th slice (default 1: all)")
    parser.add_argument("--imagenet-weights", type=Path, help="AlexNet ImageNet weights file for LPIPS")
    parser.add_argument("--refine", action="store_true",
                        help="score the CT after the projection refinement of `dctnet reconstruct --refine` (128² "
                             "models); the row is named '… + refinement: registration (80) + SIRT (10)'")
    parser.add_argument("--atlas", action="store_true",
                        help="with --refine: with the atlas prior of `dctnet reconstruct --refine --atlas`")
    parser.add_argument("--atlas-bank", type=Path, metavar="NPZ",
                        help="an atlas bank of your own, for the default atlas prior (--fusion mean) or --atlas")
    parser.add_argument("--fusion", choices=("raw", "mean"), default="raw",
                        help="raw (default): score G(Y), as the paper's tables do; mean: score what `dctnet "
                             "reconstruct` writes, the mean of G(Y) and G(X) from the CDM's bone-suppressed pair "
                             "after its default registration and atlas prior (model bundles with a CDM only); the "
                             "row is named '… + branch mean + refinement: registration (40, film-robust) + atlas "
                             "prior (median of best 5, film-robust)'")
    parser.add_argument("--no-registration", action="store_true",
                        help="with --fusion mean: score the branch mean before the default registration and atlas "
                             "prior")
    parser.add_argument("--no-atlas", action="store_true",
                        help="with --fusion mean: score the branch mean after the default registration, without "
                             "the atlas prior")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --output")


# ---------------------------------------------------------------------------------------------- one checkpoint
def evaluate_checkpoint(checkpoint: Path, dataset: Any, device: Any, lpips_model: Any = None,
                        lpips_stride: int = 1, log_records: Any = None, method: str | None = None,
                        refine: Any = False, fusion: str = "raw") -> Any:
    """Per-case metrics of G(Y) of ``checkpoint`` on ``dataset``, as a :class:`MethodResult`.

    Args:
        checkpoint: GAN training checkpoint.
        dataset: :class:`~DCTNetLib.data.prepared_cases.PreparedCaseDataset` of the split.
        device: where G(Y) runs.
        lpips_model: :func:`~DCTNetLib.evaluation.lpips_metric.build_lpips` model, or None (no LPIPS).
        lpips_stride: LPIPS on every n-th slice.
        log_records: a :class:`~DCTNetLib.training.runlog.MetricsLog` to append ``eval`` records to, or None.
        method: row name; defaults to the variant's Table 1 name.
        refine: apply the projection refinement (:class:`~DCTNetLib.models.projection_refinement.ProjectionRefinement`;
            True: default settings, a deformation fitted to the radiographs, then SIRT; or a
            :class:`~DCTNetLib.models.projection_refinement.RefinementConfig`; 128² models only). Defaults to
            False.
        fusion: "raw" scores G(Y); "mean" scores the mean of G(Y) and G(X), G(X) from the CDM's bone-suppressed
            pair (:class:`~DCTNetLib.inference.Reconstructor`'s default output; model bundles with a CDM). Defaults
            to "raw".
    """
    import torch

    with torch.no_grad():
        return _evaluate_checkpoint(checkpoint, dataset, device, lpips_model, lpips_stride, log_records, method,
                                    refine, fusion)


def _second_branch(checkpoint: Path, device: Any) -> Any:
    """The :class:`~DCTNetLib.inference.Reconstructor` of a model bundle whose CDM and G(X) give the second
    branch, or an :class:`InputError` naming what is missing."""
    from ..inference import Reconstructor

    model = Reconstructor.load(checkpoint, device)
    if model.cdm is None or model.g_bs is None:
        raise InputError(f"--fusion mean needs a model bundle with the bone-suppression CDM and G(X) (`dctnet "
                         f"export`); {checkpoint} has no {'CDM' if model.cdm is None else 'G(X)'}")
    return model


def _evaluate_checkpoint(checkpoint: Path, dataset: Any, device: Any, lpips_model: Any, lpips_stride: int,
                         log_records: Any, method: str | None, refine: Any, fusion: str) -> Any:
    from ..evaluation.metrics import evaluate_volume
    from ..evaluation.tables import MethodResult
    from ..models.projection_refinement import ProjectionRefinement, RefinementConfig

    g_raw, preset, params_m = _load_g_raw(checkpoint, device)
    second = _second_branch(checkpoint, device) if fusion == "mean" else None
    size = preset.image_size
    chosen = refine if isinstance(refine, RefinementConfig) else RefinementConfig() if refine else RefinementConfig.off()
    refinement = ProjectionRefinement(chosen)
    if refine and not refinement.applies_to(size):
        log.warning("%s is a %d² model: the projection refinement needs the %d² detector and is skipped", checkpoint,
                    size, refinement.geometry.image_size)
        refinement = ProjectionRefinement(RefinementConfig.off())
    if second is not None:
        second.use_refinement(refinement.config)
    if getattr(dataset, "split", None) and hasattr(dataset, "image_size") and len(dataset) and \
            tuple(dataset[0]["drr"].shape[-2:]) != (size, size):
        from ..data.prepared_cases import PreparedCaseDataset

        log.warning("%s is a %d² model: the prepared cases are resampled to %d² / %d³ (its metrics are on that grid)",
                    checkpoint, size, size, size)
        dataset = PreparedCaseDataset(dataset.root, dataset.split, image_size=size)
    method = method or ROW_NAMES.get(preset.variant, preset.name)
    if second is not None:
        method = f"{method} + branch mean"
    if refinement.enabled:
        method = f"{method} + refinement: {refinement.describe()}"
    result = MethodResult(method, params_m=params_m)
    for index in range(len(dataset)):
        item = dataset[index]
        y = item["drr"][None].to(device)
        if tuple(y.shape[-2:]) != (size, size):
            raise InputError(f"case {item['case_id']} of {getattr(dataset, 'root', 'the data')}: radiographs are "
                             f"{tuple(y.shape[-2:])}, but {checkpoint} expects {size}×{size}")
        if second is not None:  # the product's own path: the CT `dctnet reconstruct` writes (the CDM's preview, seed 0)
            pred = second.reconstruct(*y[0].cpu().numpy(), check_inputs=False).ct_unit
        else:
            pred = refinement(g_raw(y).float(), y)[0, 0].cpu().numpy()
        gt = item["ct"][0].float().numpy()
        metrics = evaluate_volume(pred, gt, lpips_model, lpips_slice_stride=lpips_stride)
        row = {"case": item["case_id"], **metrics}
        result.cases.append(row)
        if log_records is not None:
            log_records.write("eval", method=result.method, checkpoint=str(checkpoint), **row)
    return result


def _load_g_raw(path: Path, device: Any) -> tuple[Any, Any, float]:
    """G(Y), the preset and the parameter count (M) of a GAN checkpoint (G(Y), G(X) and D: the paper's "Params")
    or of a model bundle (its generators)."""
    from ..checkpoints.bundle import load_generators
    from ..checkpoints.networks import load_gan_generators
    from ..models.presets import GANPreset

    try:
        g_raw, _, preset, params_m = load_gan_generators(path, device)
        return g_raw, preset, params_m
    except WeightsError:
        preset_dict, networks = load_generators(path)  # a model bundle; refuses anything else with its own reason
    params_m = sum(count_parameters(m, trainable_only=False) for m in networks.values()) / 1e6
    return networks["g_raw"].to(device), GANPreset.from_dict(preset_dict), params_m


def extra_table(results: list[Any]) -> str:
    """Markdown table of the metrics beyond the paper's (MAE in HU, X2CT-GAN's PSNR), mean ± std."""
    from ..evaluation.tables import format_mean_std, summarize

    header = ["Method", *(title for _, title in EXTRA_METRICS), "Cases"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] * len(header)) + "|"]
    for result in results:
        cells = [result.method.replace("|", "\\|")]
        cells += [format_mean_std(summarize(result.cases, key)) for key, _ in EXTRA_METRICS]
        cells.append(str(len(result.cases)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(results: list[Any], output: Path, split: str) -> Path:
    """``table.md``: the paper-format table, then the extra-metrics table."""
    from ..evaluation.tables import markdown_table

    text = (f"Results on the {split} split (mean ± std over cases; PSNR on the [0, 1] HU window).\n\n"
            + markdown_table(results) + "\n" + extra_table(results))
    return atomic_write_text(output / "table.md", text)


def checkpoint_label(path: Path, state: dict[str, Any]) -> str:
    """What a single evaluated model is, for its table row: preset, checkpoint file and training step (the
    paper's "DCT-Net (ours)" names only the rows of ``--ablations``, which reproduce its Table 1)."""
    config = state.get("model_config") or {}
    name = config.get("name") if isinstance(config, dict) else None
    step = (state.get("progress") or {}).get("step")
    where = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
    return f"{name or 'GAN'}: {where}" + (f", step {step}" if step is not None else "")


# ---------------------------------------------------------------------------------------------- ablations
def _variant_checkpoint(run_dir: Path) -> Path | None:
    for name in ("best.pt", "latest.pt"):
        if (run_dir / name).is_file():
            return run_dir / name
    return None


def _trained_epochs(run_dir: Path) -> int:
    from ..checkpoints.checkpoint import load_checkpoint

    if not (run_dir / "latest.pt").is_file():
        return 0
    return int(load_checkpoint(run_dir / "latest.pt", kind="gan")["progress"]["epoch"])


def train_variant(variant: str, args: argparse.Namespace) -> None:
    """Train (or resume) ``args.runs / variant`` with ``dctnet train`` until ``args.train_epochs`` epochs."""
    run_dir = args.runs / variant
    done = _trained_epochs(run_dir)
    if done >= args.train_epochs:
        return
    argv = ["train", "--data", str(args.data), "--output", str(run_dir), "--variant", variant,
            "--preset", args.preset, "--epochs", str(args.train_epochs)]
    if done > 0 or (run_dir / "latest.pt").is_file():
        argv.append("--resume")
    if args.cdm:
        argv += ["--cdm", str(args.cdm)]
    if args.bs_source:
        argv += ["--bs-source", args.bs_source]
    if args.device != "auto":
        argv += ["--device", args.device]
    for pair in args.set:
        argv += ["--set", pair]
    log.info("training %s: dctnet %s", variant, " ".join(argv))
    code = dctnet(argv)
    if code != 0:
        raise OutputError(f"training the {variant} variant in {run_dir} stopped (exit code {code}); "
                          f"re-run the same command to resume it")


def ablation_checkpoints(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """``[(variant, checkpoint)]`` in Table 1 order, training first when ``--train-epochs`` is given."""
    if args.runs is None:
        raise InputError("--ablations needs --runs DIR (one run folder per variant, e.g. DIR/dctnet)")
    found = []
    for variant in ROW_NAMES:
        if args.train_epochs:
            train_variant(variant, args)
        checkpoint = _variant_checkpoint(args.runs / variant)
        if checkpoint is None:
            log.warning("%s: no checkpoint in %s, skipped (add --train-epochs N to train it)", variant,
                        args.runs / variant)
            continue
        found.append((variant, checkpoint))
    if not found:
        raise InputError(f"no variant checkpoints found under {args.runs} (expected folders "
                         f"{', '.join(ROW_NAMES)} with best.pt or latest.pt)")
    return found


# ---------------------------------------------------------------------------------------------- command
def _prepare_output(output: Path, overwrite: bool) -> list[str]:
    """Check ``output`` can take the results; returns the names of earlier results there (replaced at the end).

    A training run folder is refused even with ``--overwrite``: its ``metrics.jsonl`` is the run's log, which the
    evaluation's own would replace.
    """
    run_files = training_run_files(output)
    if run_files:
        raise OutputError(f"--output {display_path(output)} is a training run folder ({', '.join(run_files)}); its "
                          "metrics.jsonl would be replaced by the evaluation's (even with --overwrite): choose "
                          "another --output folder")
    existing = sorted(p.name for p in output.glob("cases*.csv")) + [n for n in OUTPUT_FILES if (output / n).exists()]
    if existing and not overwrite:
        raise InputError(f"{output} already holds evaluation results ({', '.join(existing)}); add --overwrite "
                         "or choose another --output folder")
    output.mkdir(parents=True, exist_ok=True)
    check_writable_dir(output)
    return existing


def run(args: argparse.Namespace) -> int:
    from ..data.prepared_cases import PreparedCaseDataset
    from ..evaluation.tables import write_case_csv
    from ..devices import select_device
    from ..training.runlog import MetricsLog

    if args.ablations == (args.checkpoint is not None):
        raise InputError("give either --checkpoint CKPT or --ablations --runs DIR")
    if args.train_epochs is not None and not args.ablations:
        raise InputError("--train-epochs only applies with --ablations")
    if args.lpips_stride < 1:
        raise InputError(f"--lpips-stride must be >= 1, got {args.lpips_stride}")
    refinement = refinement_config(args)  # --atlas needs --refine; --no-registration excludes it
    if args.fusion == "raw" and not args.refine and (args.no_atlas or args.atlas_bank is not None):
        raise InputError("--no-atlas and --atlas-bank (without --refine) change the default refinement of "
                         "`dctnet reconstruct`, which --fusion mean scores: add --fusion mean")
    if refinement is None and args.fusion == "mean":  # what `dctnet reconstruct` writes: registration + atlas prior
        from ..models.projection_refinement import RefinementConfig

        refinement = RefinementConfig.film_robust()
    if not args.data.is_dir():
        raise InputError(f"prepared data folder not found: {args.data}")
    if args.checkpoint is not None:
        from ..checkpoints.checkpoint import resolve_checkpoint

        args.checkpoint = resolve_checkpoint(args.checkpoint)
    dataset = PreparedCaseDataset(args.data, args.split)
    if len(dataset) == 0:
        raise InputError(f"the {args.split} split of {args.data} is empty")
    earlier = _prepare_output(args.output, args.overwrite)
    targets = ablation_checkpoints(args) if args.ablations else [(None, args.checkpoint)]
    from ..checkpoints.checkpoint import load_checkpoint

    labels = {}
    for variant, checkpoint in targets:  # every checkpoint is validated before anything is computed or replaced
        try:
            state = load_checkpoint(checkpoint, kind="gan")
        except WeightsError:
            from ..checkpoints.bundle import load_generators

            preset, _ = load_generators(checkpoint)  # a model bundle, or the reason it is neither
            state = {"model_config": {"name": f"{preset.get('variant', 'GAN')}@{preset.get('size', '?')} bundle"}}
        labels[checkpoint] = args.method or (checkpoint_label(checkpoint, state) if variant is None else None)
        del state
    device = select_device(args.device, missing_cuda="raise", local_rank=0)
    lpips_model = None
    if not args.no_lpips:
        from ..evaluation.lpips_metric import build_lpips

        lpips_model = build_lpips(args.imagenet_weights, device)
    # Earlier results stay as they are until every new one exists: the records go to a hidden staging file that
    # replaces metrics.jsonl last, the tables are written atomically, stale files of the earlier run go at the end.
    staging = args.output / f".tmp-dctnet-{os.getpid()}-{secrets.token_hex(4)}-metrics.jsonl"  # io.atomic's form
    records = MetricsLog(staging)
    results = []
    try:
        for variant, checkpoint in targets:
            results.append((variant, evaluate_checkpoint(checkpoint, dataset, device, lpips_model, args.lpips_stride,
                                                         records, method=labels[checkpoint],
                                                         refine=refinement or False,
                                                         fusion=args.fusion)))
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    written = set()
    for variant, result in results:
        written.add(write_case_csv(result.cases, args.output / ("cases.csv" if variant is None
                                                                 else f"cases_{variant}.csv")).name)
    table = write_tables([result for _, result in results], args.output, args.split)
    os.replace(staging, args.output / "metrics.jsonl")
    for name in set(earlier) - written - set(OUTPUT_FILES):
        (args.output / name).unlink(missing_ok=True)
    print(table.read_text(encoding="utf-8"), end="")
    print(f"per-case results and table in {args.output}")
    return 0
