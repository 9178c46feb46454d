"""``dctnet reproduce`` — fill DCT-Net's Table 1 (LIDC-IDRI) from a LIDC-IDRI download, end to end.

``scripts/reproduce_table1.sh DATA_ROOT OUT`` calls this command. Stages, each run as its own ``dctnet``
process (so that training can run under torchrun) and each marked done in ``OUT/stages/<stage>.json``:

1. ``prepare``   ``dctnet prepare --dataset lidc-idri --unit scan`` → ``OUT/prepared`` (1,018 CT scans → the
   paper's 854 / 72 / 92 split when the download is complete; ``splits/split.json`` says what was used, and is
   copied to ``OUT/split/`` beside the results);
2. ``train-cdm``  the bone-suppression CDM (``full`` preset) → ``OUT/runs/cdm``;
3. ``train-<row>`` for every Table 1 row the project implements, in the table's order: ``x2ct-baseline`` (X2CT-GAN,
   its own published recipe), ``ablation-no-dual-branch``, ``ablation-no-recon-gan``, ``ablation-no-perceptual``
   and ``dctnet`` (DCT-Net §3.1's recipe) → ``OUT/runs/<row>``;
4. ``eval-<row>``  ``dctnet evaluate`` of each row's ``best.pt`` on the test split → ``OUT/eval/<row>``;
5. the table: ``OUT/table1.md`` (the paper's format — Method | PSNR | SSIM | LPIPS | Params — with our plain
   PSNR and X2CT-GAN's PSNR variant side by side, next to the paper's numbers) and ``OUT/table1.json``.

Re-running the same command resumes: finished stages are skipped, an interrupted training continues from its
``latest.pt`` (``--resume``), an unfinished evaluation starts again. ``OUT/commands.sh`` lists every command run.

Several GPUs: ``--nproc N`` runs the trainings under ``torchrun --standalone --nproc_per_node=N`` (DDP). The
per-process batch is the recipe's global batch divided by N when it divides (X2CT-GAN's 4 on 2 or 4 GPUs);
DCT-Net's batch of 1 cannot be split, so its rows then train with a global batch of N — a deviation from the
paper that the table states. To keep batch 1, run rows side by side instead, one GPU each, after the CDM::

    CUDA_VISIBLE_DEVICES=1 scripts/reproduce_table1.sh DATA OUT --rows ablation-no-perceptual &

``--dry-run`` runs the whole chain in a few minutes on a CPU: the first two scans of DATA_ROOT, down-sampled to
the ``tiny`` preset's 32³, one epoch per model, every case in every split (a smoke test of the chain, not a
result). CI runs it (``Testing/Python/test_reproduce.py``).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..cli import main as dctnet
from ..errors import InputError, OutputError
from ..io.atomic import atomic_write_text
from ..training.run_folder import RUN_FILES

# torch, numpy and the modules that import them, and training.config (YAML files), are imported inside the
# functions: every dctnet run imports every command module (DCTNetLib.cli), so `dctnet --help` stays fast
# and a reconstruction loads nothing it does not need.

HELP = "reproduce DCT-Net Table 1 on LIDC-IDRI: prepare, train the CDM and every row, evaluate, write the table"

# Rows of DCT-Net Table 1 (LIDC-IDRI) as printed: (method, our variant or None, PSNR, SSIM, LPIPS) with the
# paper's (mean, ±) values.
PAPER_TABLE1: tuple[tuple[str, str | None, tuple[float, float], tuple[float, float], tuple[float, float]], ...] = (
    ("PerX2CT [37]", None, (27.248, 0.004), (0.637, 0.005), (0.253, 0.003)),
    ("X2CT [22]", "x2ct-baseline", (26.769, 0.040), (0.622, 0.001), (0.307, 0.002)),
    ("RT-SRTS [38]", None, (25.311, 0.010), (0.570, 0.001), (0.323, 0.003)),
    ("X-Recon [23]", None, (27.120, 0.001), (0.619, 0.002), (0.292, 0.004)),
    ("SdCT-GAN [21]", None, (27.054, 0.010), (0.596, 0.003), (0.322, 0.020)),
    ("w/o Dual-branch", "ablation-no-dual-branch", (27.226, 0.030), (0.620, 0.005), (0.285, 0.001)),
    ("w/o Recon-GAN", "ablation-no-recon-gan", (27.562, 0.001), (0.648, 0.008), (0.251, 0.004)),
    ("w/o ℓ_perceptual", "ablation-no-perceptual", (27.602, 0.003), (0.651, 0.003), (0.283, 0.001)),
    ("DCT-Net (ours)", "dctnet", (27.928, 0.040), (0.703, 0.001), (0.221, 0.004)),
)
ROWS = tuple(variant for _, variant, *_ in PAPER_TABLE1 if variant)
UNTIL = ("prepare", "cdm", "train", "table")
DRY_RUN_CASES = 2
DRY_RUN_SIZE = 32  # the tiny preset's image size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = ("examples:\n  dctnet reproduce ~/TCIA/LIDC-IDRI runs/table1\n"
                     "  dctnet reproduce ~/TCIA/LIDC-IDRI runs/table1 --nproc 4\n"
                     "  dctnet reproduce ~/TCIA/LIDC-IDRI /tmp/dry --dry-run")
    parser.add_argument("data_root", type=Path, metavar="DATA_ROOT",
                        help="LIDC-IDRI as downloaded from TCIA (folders LIDC-IDRI-XXXX/…/*.dcm anywhere below)")
    parser.add_argument("out", type=Path, metavar="OUT", help="where everything is written; re-run to resume")
    parser.add_argument("--dry-run", action="store_true",
                        help="the whole chain on 2 scans at the tiny preset, 1 epoch each (minutes on a CPU)")
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"comma-separated rows to train and evaluate (default: all: {','.join(ROWS)})")
    parser.add_argument("--nproc", type=int, default=1, help="GPUs per training (torchrun DDP); default 1")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision on CUDA (off by default: the paper does not use it)")
    parser.add_argument("--unit", choices=("scan", "patient"), default="scan",
                        help="LIDC-IDRI case unit for prepare (default scan: the paper's 1,018 CTs)")
    parser.add_argument("--workers", type=int, default=None, help="prepare's worker processes")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra training config override for every GAN row (e.g. epochs=50)")
    parser.add_argument("--table-only", action="store_true", help="only (re)write the table from what exists")
    parser.add_argument("--until", choices=UNTIL, default="table",
                        help="stop after this stage: prepare, cdm (prepare + the CDM, e.g. before starting one row "
                             "per GPU), train, table (default: everything)")


# ---------------------------------------------------------------------------------------------- the plan
def _launcher(nproc: int) -> list[str]:
    """How a ``dctnet`` sub-command is started: this interpreter, or torchrun with ``nproc`` processes."""
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "DCTNetLib"]
    return [sys.executable, "-m", "DCTNetLib"]


def per_process_batch(global_batch: int, nproc: int) -> tuple[int, int]:
    """``(per-process batch, resulting global batch)`` for a recipe's global batch on ``nproc`` processes."""
    if nproc <= 1:
        return global_batch, global_batch
    if global_batch % nproc == 0:
        return global_batch // nproc, global_batch
    return max(1, global_batch // nproc), max(1, global_batch // nproc) * nproc


class Reproduction:
    """The stages of one ``dctnet reproduce`` run (see the module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        from ..models.presets import recipe_for

        self.args = args
        self.out: Path = args.out
        self.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
        unknown = sorted(set(self.rows) - set(ROWS))
        if unknown:
            raise InputError(f"--rows: unknown rows {unknown}; valid: {', '.join(ROWS)}")
        self.rows = [r for r in ROWS if r in self.rows]  # the table's order
        if args.nproc < 1:
            raise InputError(f"--nproc must be >= 1, got {args.nproc}")
        self.prepared = self.out / "prepared"
        self.data = self.out / ("prepared-tiny" if args.dry_run else "prepared")
        self.recipes = {row: recipe_for(row) for row in ROWS}

    # ------------------------------------------------------------------ helpers
    def marker(self, stage: str) -> Path:
        return self.out / "stages" / f"{stage}.json"

    def run_stage(self, stage: str, argv: list[str], launcher: list[str] | None = None) -> None:
        """Run ``dctnet ARGV`` unless ``stage`` is done; mark it done when it exits with 0."""
        if self.marker(stage).is_file():
            print(f"[reproduce] {stage}: done earlier, skipped", flush=True)
            return
        command = [*(launcher or _launcher(1)), *argv]  # launcher None: this interpreter
        line = shlex.join(command)
        print(f"[reproduce] {stage}: {line}", flush=True)
        with open(self.out / "commands.sh", "a", encoding="utf-8") as handle:
            handle.write(f"# {stage} ({datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')})"
                         f"\n{line}\n")
        start = time.perf_counter()
        if launcher is None and self.args.dry_run:
            # dry run: in this process (saves a Python + torch start per stage); real runs get one process per
            # stage, which hands the GPU back clean after each
            code = dctnet(argv)
        else:
            code = subprocess.run(command, check=False).returncode
        if code == 130:
            raise KeyboardInterrupt
        if code != 0:
            raise OutputError(f"stage {stage} failed with exit code {code} (command: {line}); fix the cause and "
                              f"re-run the same reproduce command: finished stages are kept, training resumes")
        self.marker(stage).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.marker(stage), json.dumps({"command": command, "seconds": round(
            time.perf_counter() - start, 1)}, indent=2) + "\n")

    def launcher(self) -> list[str] | None:
        """torchrun for trainings on several processes; None = the default (see :meth:`run_stage`)."""
        return _launcher(self.args.nproc) if self.args.nproc > 1 else None

    def common_training(self) -> list[str]:
        args = self.args
        argv = ["--device", args.device]
        if args.amp:
            argv += ["--set", "amp=true"]
        if args.dry_run:
            argv += ["--preset", "tiny", "--epochs", "1", "--set", "num_workers=0", "--set", "log_every=1",
                     "--set", "progress=false"]
        else:
            argv += ["--preset", "full"]
        return argv

    @staticmethod
    def resume_flag(run_dir: Path) -> list[str]:
        """``--resume`` after an interruption, ``--overwrite`` for a run that died before its first checkpoint."""
        if (run_dir / "latest.pt").is_file():
            return ["--resume"]
        if any((run_dir / name).exists() for name in RUN_FILES):
            return ["--overwrite"]
        return []

    def checkpoint(self, run_dir: Path) -> Path:
        for name in ("best.pt", "latest.pt"):
            if (run_dir / name).is_file():
                return run_dir / name
        raise OutputError(f"no checkpoint in {run_dir}; re-run to train it")

    # ------------------------------------------------------------------ stages
    def prepare(self) -> None:
        argv = ["prepare", "--dataset", "lidc-idri", "--source", str(self.args.data_root),
                "--output", str(self.prepared), "--unit", self.args.unit]
        if self.args.workers:
            argv += ["--workers", str(self.args.workers)]
        if self.args.dry_run:
            argv += ["--limit", str(DRY_RUN_CASES)]
        self.run_stage("prepare", argv)
        if self.args.dry_run and not self.marker("dry-run-data").is_file():
            make_dry_run_data(self.prepared, self.data)
            self.marker("dry-run-data").write_text("{}\n", encoding="utf-8")
        split = self.out / "split"
        split.mkdir(exist_ok=True)
        for path in sorted((self.data / "splits").iterdir()):  # the split ships with the results
            shutil.copy2(path, split / path.name)

    def train_cdm(self) -> None:
        from ..training.config import CDMTrainConfig

        run_dir = self.out / "runs" / "cdm"
        argv = ["train-cdm", "--data", str(self.data), "--output", str(run_dir), *self.common_training()]
        batch = CDMTrainConfig().batch_size
        if self.args.dry_run:
            batch = 2
            argv += ["--set", "val_samples=1"]
        argv += ["--set", f"batch_size={per_process_batch(batch, self.args.nproc)[0]}"]
        self.run_stage("train-cdm", argv + self.resume_flag(run_dir), self.launcher())

    def train_row(self, row: str) -> None:
        run_dir = self.out / "runs" / row
        argv = ["train", "--data", str(self.data), "--output", str(run_dir), "--variant", row,
                *self.common_training()]
        if row not in ("x2ct-baseline", "ablation-no-dual-branch"):  # rows with G(X) need the CDM's samples
            argv += ["--cdm", str(self.checkpoint(self.out / "runs" / "cdm"))]
        per_process, _ = per_process_batch(self.recipes[row].batch_size, self.args.nproc)
        if self.args.nproc > 1:
            argv += ["--set", f"batch_size={per_process}"]
        for pair in self.args.set:
            argv += ["--set", pair]
        self.run_stage(f"train-{row}", argv + self.resume_flag(run_dir), self.launcher())

    def evaluate_row(self, row: str) -> None:
        output = self.out / "eval" / row
        argv = ["evaluate", "--data", str(self.data), "--split", "test", "--output", str(output),
                "--checkpoint", str(self.checkpoint(self.out / "runs" / row)), "--device", self.args.device]
        if output.exists():
            argv.append("--overwrite")
        self.run_stage(f"eval-{row}", argv)

    def run(self) -> Path | None:
        self.out.mkdir(parents=True, exist_ok=True)
        if not self.args.table_only:
            if not self.args.data_root.is_dir():
                raise InputError(f"DATA_ROOT is not a folder: {self.args.data_root}")
            until = UNTIL.index(self.args.until)
            self.prepare()
            if until == 0:
                return None
            if until == 1 or any(row not in ("x2ct-baseline", "ablation-no-dual-branch") for row in self.rows):
                self.train_cdm()
            if until == 1:
                return None
            for row in self.rows:
                self.train_row(row)
            if until == 2:
                return None
            for row in self.rows:
                self.evaluate_row(row)
        return write_table(self.out, dry_run=self.args.dry_run, nproc=self.args.nproc)


# ---------------------------------------------------------------------------------------------- dry-run data
def make_dry_run_data(prepared: Path, output: Path, size: int = DRY_RUN_SIZE) -> None:
    """The prepared cases down-sampled to ``size`` (mean pooling) for the tiny preset, every case in every split.

    A smoke test of the chain only: the test cases are also trained on, and ``split.json`` says so.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ..data import datasets

    ids = [c for name in datasets.SPLITS for c in datasets.read_split(prepared, name)]
    if not ids:
        raise InputError(f"--dry-run: no case could be prepared from the data root (see {prepared / 'failed.txt'})")
    for case_id in ids:
        folder = prepared / datasets.CASES_DIR / case_id
        ct = torch.from_numpy(np.load(folder / datasets.CASE_FILES["ct"]).astype(np.float32))
        factor = ct.shape[-1] // size
        small_ct = F.avg_pool3d(ct[None, None], factor)[0, 0].numpy()
        pool2 = (lambda name: F.avg_pool2d(torch.from_numpy(np.load(folder / datasets.CASE_FILES[name]))[None],
                                           factor)[0].numpy())
        meta = {**(datasets.read_meta(folder) or {}), "dry_run": f"mean-pooled {factor}x from {folder}"}
        meta.pop("files", None)
        datasets.write_case(output / datasets.CASES_DIR / case_id, small_ct, pool2("drr"), pool2("drr_bs"), meta)
    splits = {name: sorted(ids) for name in datasets.SPLITS}
    datasets.write_splits(output, splits)
    record = datasets.split_record(splits, "lidc-idri", seed=0, unit="scan")
    record["dry_run"] = "every case in train, val and test: a smoke test of the chain, not a held-out result"
    datasets.write_split_record(output, record)


# ---------------------------------------------------------------------------------------------- the table
def _read_cases(path: Path) -> list[dict[str, float]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: (float(v) if k != "case" and v != "" else v) for k, v in row.items()}
                for row in csv.DictReader(handle)]


def _row_info(out: Path, row: str) -> dict[str, Any] | None:
    """Measured metrics and how the row was trained, or None when it has not been evaluated."""
    from ..evaluation.tables import summarize
    from ..training.config import TrainConfig
    from ..checkpoints.networks import load_gan_generators

    cases_csv = out / "eval" / row / "cases.csv"
    if not cases_csv.is_file():
        return None
    cases = _read_cases(cases_csv)
    run_dir = out / "runs" / row
    checkpoint = next((run_dir / n for n in ("best.pt", "latest.pt") if (run_dir / n).is_file()), None)
    params_m = load_gan_generators(checkpoint)[3] if checkpoint else None
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8")) if \
        (run_dir / "config.json").is_file() else {}
    run_info = json.loads((run_dir / "run.json").read_text(encoding="utf-8")) if \
        (run_dir / "run.json").is_file() else {}
    world = (run_info.get("environment") or {}).get("world_size", 1)
    metrics = {key: summarize(cases, key) for key in ("psnr", "psnr_x2ct", "ssim", "lpips", "mae_hu")}
    return {"cases": len(cases), "metrics": metrics, "params_m": params_m, "recipe": config.get("recipe"),
            "epochs": config.get("epochs"), "betas": config.get("betas"), "amp": config.get("amp"),
            "global_batch": (config.get("batch_size") or 1) * (world or 1),
            "preset": TrainConfig.upgrade(dict(config)).get("size"),
            "gpu": (run_info.get("environment") or {}).get("gpu")}


def _fmt(stats: tuple[float, float] | None) -> str:
    from ..evaluation.tables import format_mean_std

    return format_mean_std(stats)


def write_table(out: Path, dry_run: bool = False, nproc: int = 1) -> Path:
    """``OUT/table1.md`` and ``OUT/table1.json`` from the evaluated rows (rows not run read "not run")."""
    rows = {row: _row_info(out, row) for row in ROWS}
    header = ["Method", "PSNR (↑)", "PSNR, X2CT-GAN variant (↑)", "SSIM (↑)", "LPIPS (↓)", "Params (M)",
              "Paper PSNR", "Paper SSIM", "Paper LPIPS"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] * len(header)) + "|"]
    for method, variant, p_psnr, p_ssim, p_lpips in PAPER_TABLE1:
        info = rows.get(variant) if variant else None
        if variant is None:
            ours = ["not implemented"] + ["—"] * 4
        elif info is None:
            ours = ["not run"] + ["—"] * 4
        else:
            m = info["metrics"]
            params = "—" if info["params_m"] is None else f"{info['params_m']:.2f}"
            ours = [_fmt(m["psnr"]), _fmt(m["psnr_x2ct"]), _fmt(m["ssim"]), _fmt(m["lpips"]), params]
        paper = [f"{v:.3f} ± {s:.3f}" for v, s in (p_psnr, p_ssim, p_lpips)]
        lines.append("| " + " | ".join([method.replace("|", "\\|"), *ours, *paper]) + " |")
    split = {}
    split_json = out / "split" / "split.json"
    if split_json.is_file():
        split = json.loads(split_json.read_text(encoding="utf-8"))
    notes = []
    if dry_run:
        notes.append("**DRY RUN** — tiny preset, 2 scans down-sampled to 32³, one epoch, test cases also trained "
                     "on: these numbers only show that the chain runs.")
    if split:
        from ..data.datasets import describe_split

        notes.append(f"Data: {describe_split(split)}; lists in `split/` (sha256 in `split/split.json`).")
    for row in ROWS:
        info = rows[row]
        if info:
            gpu = f", {info['gpu']}" if info.get("gpu") else ""
            notes.append(f"`{row}`: preset {info['preset']}, recipe {info['recipe']} (β {info['betas']}, "
                         f"epochs {info['epochs']}, global batch {info['global_batch']}, AMP "
                         f"{'on' if info['amp'] else 'off'}{gpu}), {info['cases']} test cases.")
    notes.append("PSNR: 3D PSNR of the [0, 1] HU window; X2CT-GAN variant: kylekma/X2CT's PSNR "
                 "(`DCTNetLib.evaluation.metrics.x2ct_psnr`) — the paper does not say which it used. SSIM: 2D, "
                 "mean over the axial, coronal and sagittal slices; LPIPS: AlexNet, same planes. "
                 "Params: G(Y) + G(X) + D (trainable). Paper: DCT-Net Table 1 (mean ± as printed).")
    text = ("# DCT-Net Table 1 (LIDC-IDRI), reproduced\n\n" + "\n".join(lines) + "\n\n"
            + "\n".join(f"- {n}" for n in notes) + "\n")
    atomic_write_text(out / "table1.md", text)
    payload = {"dry_run": dry_run, "split": split,
               "rows": {row: (None if info is None else {**info, "metrics": {
                   k: (None if v is None else {"mean": v[0], "std": None if math.isnan(v[1]) else v[1]})
                   for k, v in info["metrics"].items()}}) for row, info in rows.items()},
               "paper": {variant or method: {"method": method, "psnr": psnr_, "ssim": ssim_, "lpips": lpips_}
                         for method, variant, psnr_, ssim_, lpips_ in PAPER_TABLE1}}
    atomic_write_text(out / "table1.json", json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return out / "table1.md"


def run(args: argparse.Namespace) -> int:
    reproduction = Reproduction(args)
    try:
        table = reproduction.run()
    except KeyboardInterrupt:
        print("[reproduce] interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    if table is None:
        print(f"[reproduce] stopped after the {args.until} stage as asked (--until); re-run without it to go on")
        return 0
    print(table.read_text(encoding="utf-8"), end="")
    print(f"[reproduce] table written to {table}")
    return 0
