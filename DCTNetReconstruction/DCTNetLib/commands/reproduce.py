"""``dctnet reproduce`` — fill DCT-Net's Table 1 (LIDC-IDRI) or Table 2 (CTSpine1K) from a download, end to end.

``scripts/reproduce_table1.sh DATA_ROOT OUT`` (and ``scripts/reproduce_table2.sh``, which adds
``--dataset ctspine1k``) call this command. Stages, each run as its own ``dctnet`` process (so that training can
run under torchrun) and each marked done in ``OUT/stages/<stage>.json``:

1. ``prepare``   ``dctnet prepare --dataset lidc-idri --unit scan`` → ``OUT/prepared`` (1,018 CT scans → the
   paper's 854 / 72 / 92 split when the download is complete; CTSpine1K: every CT found, in the paper's
   650 / 60 / 74 proportions; ``splits/split.json`` says what was used, and is copied to ``OUT/split/`` beside
   the results);
2. ``train-cdm``  the bone-suppression CDM (``full`` preset) → ``OUT/runs/cdm``;
3. ``train-<row>`` for every row of the table the project implements, in the table's order. Table 1:
   ``x2ct-baseline`` (X2CT-GAN, its own published recipe), ``ablation-no-dual-branch``, ``ablation-no-recon-gan``,
   ``ablation-no-perceptual`` and ``dctnet`` (DCT-Net §3.1's recipe); Table 2: ``x2ct-baseline`` and ``dctnet``
   → ``OUT/runs/<row>`` (``OUT/runs/<row>-seed<k>`` with ``--seeds``);
4. ``eval-<row>``  ``dctnet evaluate`` of each row's ``best.pt`` on the test split → ``OUT/eval/<row>``;
5. the table: ``OUT/table1.md`` / ``OUT/table2.md`` (the paper's format — Method | PSNR | SSIM | LPIPS | Params —
   with our plain PSNR and X2CT-GAN's PSNR variant side by side, next to the paper's numbers) and the same
   numbers as JSON.

Re-running the same command resumes: finished stages are skipped, an interrupted training continues from its
``latest.pt`` (``--resume``), an unfinished evaluation starts again. ``OUT/commands.sh`` lists every command run.

Several GPUs, two ways:

- ``--gpus N`` (faithful): up to N trainings at once, one GPU each (``CUDA_VISIBLE_DEVICES``), every row at its
  recipe's batch — DCT-Net's batch 1 stays 1. The CDM trains first on one GPU.
- ``--nproc N``: every training under ``torchrun --standalone --nproc_per_node=N`` (DDP). The per-process batch
  is the recipe's global batch divided by N when it divides (X2CT-GAN's 4 on 2 or 4 GPUs); DCT-Net's batch of
  1 cannot be split, so its rows then train with a global batch of N — a deviation from the paper that the
  table states.

``--seeds 0,1,2`` trains and evaluates every row once per seed (``--set seed=k``; one CDM serves them all) and
reports each metric as the mean over the seeds ± their standard deviation, the reading of the paper's ± that
fits its size (±0.001 dB cannot be a spread over 92 patients).

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
from ..conventions import PAPER_DATASETS
from ..errors import InputError, OutputError
from ..io.atomic import atomic_write_text
from ..training.recipes import recipe_for
from ..training.run_folder import RUN_FILES

# torch, numpy and the modules that import them, and training.config (YAML files), are imported inside the
# functions: every dctnet run imports every command module (DCTNetLib.cli), so `dctnet --help` stays fast
# and a reconstruction loads nothing it does not need.

HELP = ("reproduce DCT-Net Table 1 (LIDC-IDRI) or Table 2 (CTSpine1K): prepare, train the CDM and every row, "
        "evaluate, write the table")

# Rows of DCT-Net Table 1 (LIDC-IDRI) as printed: (method, our variant or None, PSNR, SSIM, LPIPS) with the
# paper's (mean, ±) values.
PaperRows = tuple[tuple[str, str | None, tuple[float, float], tuple[float, float], tuple[float, float]], ...]
PAPER_TABLE1: PaperRows = (
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
# DCT-Net Table 2 (CTSpine1K), same layout; the paper lists no ablations there.
PAPER_TABLE2: PaperRows = (
    ("PerX2CT [37]", None, (25.575, 0.010), (0.614, 0.001), (0.282, 0.003)),
    ("X2CT [22]", "x2ct-baseline", (24.927, 0.001), (0.616, 0.008), (0.334, 0.001)),
    ("RT-SRTS [38]", None, (23.518, 0.020), (0.523, 0.002), (0.348, 0.005)),
    ("X-Recon [23]", None, (24.715, 0.010), (0.594, 0.003), (0.330, 0.001)),
    ("SdCT-GAN [21]", None, (25.124, 0.040), (0.541, 0.003), (0.336, 0.002)),
    ("DCT-Net (ours)", "dctnet", (26.600, 0.003), (0.691, 0.010), (0.234, 0.030)),
)
# dataset → (table number, the paper's rows)
TABLES = {"lidc-idri": (1, PAPER_TABLE1), "ctspine1k": (2, PAPER_TABLE2)}
ROWS = tuple(variant for _, variant, *_ in PAPER_TABLE1 if variant)
NO_CDM_ROWS = ("x2ct-baseline", "ablation-no-dual-branch")  # rows without G(X): they need no CDM
UNTIL = ("prepare", "cdm", "train", "table")
DRY_RUN_CASES = 2
DRY_RUN_SIZE = 32  # the tiny preset's image size


def rows_of(dataset: str) -> tuple[str, ...]:
    """The rows of ``dataset``'s table that the project implements, in the table's order."""
    return tuple(variant for _, variant, *_ in TABLES[dataset][1] if variant)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = ("examples:\n  dctnet reproduce ~/TCIA/LIDC-IDRI runs/table1\n"
                     "  dctnet reproduce ~/TCIA/LIDC-IDRI runs/table1 --gpus 5          # one row per GPU\n"
                     "  dctnet reproduce ~/TCIA/LIDC-IDRI runs/table1 --seeds 0,1,2     # the ± over runs\n"
                     "  dctnet reproduce ~/CTSpine1K runs/table2 --dataset ctspine1k\n"
                     "  dctnet reproduce ~/TCIA/LIDC-IDRI /tmp/dry --dry-run")
    parser.add_argument("data_root", type=Path, metavar="DATA_ROOT",
                        help="LIDC-IDRI as downloaded from TCIA (folders LIDC-IDRI-XXXX/…/*.dcm anywhere below), "
                             "or CTSpine1K's NIfTI files with --dataset ctspine1k")
    parser.add_argument("out", type=Path, metavar="OUT", help="where everything is written; re-run to resume")
    parser.add_argument("--dataset", choices=tuple(TABLES), default="lidc-idri",
                        help="lidc-idri: the paper's Table 1 (default); ctspine1k: its Table 2")
    parser.add_argument("--dry-run", action="store_true",
                        help="the whole chain on 2 scans at the tiny preset, 1 epoch each (minutes on a CPU)")
    parser.add_argument("--rows", default=None,
                        help="comma-separated rows to train and evaluate (default: every implemented row of the "
                             f"table; Table 1: {','.join(ROWS)}; Table 2: {','.join(rows_of('ctspine1k'))})")
    parser.add_argument("--gpus", type=int, default=1,
                        help="train up to N rows (or seeds) at once, one GPU each, every row at its recipe's batch "
                             "(the faithful multi-GPU mode); default 1")
    parser.add_argument("--nproc", type=int, default=1,
                        help="GPUs per training (torchrun DDP; batch-1 rows then train with a global batch of N); "
                             "default 1")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated training seeds, e.g. 0,1,2: every row once per seed, the table "
                             "reports mean ± std over the seeds (default: one run per row at the config's seed)")
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


def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    """``"0,1,2"`` → ``(0, 1, 2)``; None stays None (one run per row, no seed suffix)."""
    if text is None:
        return None
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(f"--seeds: comma-separated integers expected, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds: give distinct seeds, e.g. 0,1,2 (got {text!r})")
    return seeds


def run_name(row: str, seed: int | None) -> str:
    """The run (and evaluation) folder name of ``row`` trained with ``seed`` (None: the plain row name)."""
    return row if seed is None else f"{row}-seed{seed}"


class Reproduction:
    """The stages of one ``dctnet reproduce`` run (see the module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.dataset: str = getattr(args, "dataset", "lidc-idri")
        self.table_rows = rows_of(self.dataset)
        requested = self.table_rows if args.rows is None else [r.strip() for r in args.rows.split(",") if r.strip()]
        unknown = sorted(set(requested) - set(self.table_rows))
        if unknown:
            raise InputError(f"--rows: unknown rows {unknown} for Table {TABLES[self.dataset][0]}; valid: "
                             f"{', '.join(self.table_rows)}")
        self.rows = [r for r in self.table_rows if r in requested]  # the table's order
        if args.nproc < 1 or args.gpus < 1:
            raise InputError(f"--nproc and --gpus must be >= 1, got {args.nproc} and {args.gpus}")
        if args.nproc > 1 and args.gpus > 1:
            raise InputError("--gpus (one training per GPU) and --nproc (one training over several GPUs) exclude "
                             "each other: choose one")
        self.seeds = parse_seeds(args.seeds)
        self.prepared = self.out / "prepared"
        self.data = self.out / ("prepared-tiny" if args.dry_run else "prepared")
        self.recipes = {row: recipe_for(row) for row in self.table_rows}

    # ------------------------------------------------------------------ helpers
    def marker(self, stage: str) -> Path:
        return self.out / "stages" / f"{stage}.json"

    def runs(self) -> list[tuple[str, str, int | None]]:
        """``(row, run name, seed)`` of every training this reproduction makes, in the table's order."""
        return [(row, run_name(row, seed), seed) for row in self.rows for seed in (self.seeds or (None,))]

    def _begin(self, stage: str, argv: list[str], launcher: list[str] | None, env: dict[str, str] | None = None
               ) -> list[str] | None:
        """The command of ``stage``, logged to ``commands.sh``; None when the stage is done already."""
        if self.marker(stage).is_file():
            print(f"[reproduce] {stage}: done earlier, skipped", flush=True)
            return None
        command = [*(launcher or _launcher(1)), *argv]  # launcher None: this interpreter
        line = " ".join([*(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()), shlex.join(command)])
        print(f"[reproduce] {stage}: {line}", flush=True)
        with open(self.out / "commands.sh", "a", encoding="utf-8") as handle:
            handle.write(f"# {stage} ({datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')})"
                         f"\n{line}\n")
        return command

    def _end(self, stage: str, command: list[str], code: int, start: float) -> None:
        """Mark ``stage`` done (exit code 0), or raise."""
        if code in (130, 143):  # the stage was stopped by Ctrl-C or SIGTERM: stop here too
            raise KeyboardInterrupt
        if code != 0:
            raise OutputError(f"stage {stage} failed with exit code {code} (command: {shlex.join(command)}); fix the "
                              f"cause and re-run the same reproduce command: finished stages are kept, training "
                              f"resumes")
        self.marker(stage).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.marker(stage), json.dumps({"command": command, "started": round(start, 3),
                                                          "seconds": round(time.time() - start, 1)}, indent=2) + "\n")

    def run_stage(self, stage: str, argv: list[str], launcher: list[str] | None = None) -> None:
        """Run ``dctnet ARGV`` unless ``stage`` is done; mark it done when it exits with 0."""
        command = self._begin(stage, argv, launcher)
        if command is None:
            return
        start = time.time()
        if launcher is None and self.args.dry_run:
            # dry run: in this process (saves a Python + torch start per stage); real runs get one process per
            # stage, which hands the GPU back clean after each
            code = dctnet(argv)
        else:
            code = subprocess.run(command, check=False).returncode
        self._end(stage, command, code, start)

    def run_on_gpus(self, stages: list[tuple[str, list[str]]]) -> None:
        """Run the stages side by side, at most ``--gpus`` at once, each alone on its GPU (CUDA_VISIBLE_DEVICES)."""
        import os

        waiting = list(stages)
        running: dict[int, tuple[str, list[str], subprocess.Popen, float]] = {}  # GPU → the stage on it
        failed: list[str] = []
        try:
            while waiting or running:
                while waiting and not failed and len(running) < self.args.gpus:
                    stage, argv = waiting.pop(0)
                    gpu = min(set(range(self.args.gpus)) - set(running))
                    env = {"CUDA_VISIBLE_DEVICES": str(gpu)}
                    command = self._begin(stage, argv, _launcher(1), env)
                    if command is not None:
                        running[gpu] = (stage, command, subprocess.Popen(command, env={**os.environ, **env}),
                                        time.time())
                if not running:
                    break
                time.sleep(0.5)
                for gpu, (stage, command, process, start) in list(running.items()):
                    if process.poll() is None:
                        continue
                    del running[gpu]
                    try:
                        self._end(stage, command, process.returncode, start)
                    except OutputError as exc:
                        failed.append(str(exc))
        except KeyboardInterrupt:  # the trainings got the same Ctrl-C: they stop at a step boundary and save
            for _, _, process, _ in running.values():
                process.wait()
            raise
        if failed:
            raise OutputError("; ".join(failed))

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
        argv = ["prepare", "--dataset", self.dataset, "--source", str(self.args.data_root),
                "--output", str(self.prepared), "--unit", self.args.unit]
        if self.args.workers:
            argv += ["--workers", str(self.args.workers)]
        if self.args.dry_run:
            argv += ["--limit", str(DRY_RUN_CASES)]
        self.run_stage("prepare", argv)
        if self.args.dry_run and not self.marker("dry-run-data").is_file():
            make_dry_run_data(self.prepared, self.data, dataset=self.dataset)
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

    def train_argv(self, row: str, name: str, seed: int | None) -> list[str]:
        """The ``dctnet train`` arguments of one run of ``row``."""
        run_dir = self.out / "runs" / name
        argv = ["train", "--data", str(self.data), "--output", str(run_dir), "--variant", row,
                *self.common_training()]
        if row not in NO_CDM_ROWS:  # rows with G(X) need the CDM's samples
            argv += ["--cdm", str(self.checkpoint(self.out / "runs" / "cdm"))]
        per_process, _ = per_process_batch(self.recipes[row].batch_size, self.args.nproc)
        if self.args.nproc > 1:
            argv += ["--set", f"batch_size={per_process}"]
        if seed is not None:
            argv += ["--set", f"seed={seed}"]
        for pair in self.args.set:
            argv += ["--set", pair]
        return argv + self.resume_flag(run_dir)

    def train_rows(self) -> None:
        stages = [(f"train-{name}", self.train_argv(row, name, seed)) for row, name, seed in self.runs()]
        if self.args.gpus > 1:
            self.run_on_gpus(stages)
            return
        for stage, argv in stages:
            self.run_stage(stage, argv, self.launcher())

    def evaluate_run(self, name: str) -> None:
        output = self.out / "eval" / name
        argv = ["evaluate", "--data", str(self.data), "--split", "test", "--output", str(output),
                "--checkpoint", str(self.checkpoint(self.out / "runs" / name)), "--device", self.args.device]
        if output.exists():
            argv.append("--overwrite")
        self.run_stage(f"eval-{name}", argv)

    def run(self) -> Path | None:
        self.out.mkdir(parents=True, exist_ok=True)
        if not self.args.table_only:
            if not self.args.data_root.is_dir():
                raise InputError(f"DATA_ROOT is not a folder: {self.args.data_root}")
            until = UNTIL.index(self.args.until)
            self.prepare()
            if until == 0:
                return None
            if until == 1 or any(row not in NO_CDM_ROWS for row in self.rows):
                self.train_cdm()
            if until == 1:
                return None
            self.train_rows()
            if until == 2:
                return None
            for _, name, _ in self.runs():
                self.evaluate_run(name)
        return write_table(self.out, dry_run=self.args.dry_run, nproc=self.args.nproc, dataset=self.dataset,
                           seeds=self.seeds)


# ---------------------------------------------------------------------------------------------- dry-run data
def make_dry_run_data(prepared: Path, output: Path, size: int = DRY_RUN_SIZE, dataset: str = "lidc-idri") -> None:
    """The prepared cases down-sampled to ``size`` (mean pooling) for the tiny preset, every case in every split.

    A smoke test of the chain only: the test cases are also trained on, and ``split.json`` says so.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ..data.case_splits import SPLITS, read_split, split_record, write_split_record, write_splits
    from ..data.prepared_cases import CASE_FILES, CASES_DIR, read_meta, write_case

    ids = [c for name in SPLITS for c in read_split(prepared, name)]
    if not ids:
        raise InputError(f"--dry-run: no case could be prepared from the data root (see {prepared / 'failed.txt'})")
    for case_id in ids:
        folder = prepared / CASES_DIR / case_id
        ct = torch.from_numpy(np.load(folder / CASE_FILES["ct"]).astype(np.float32))
        factor = ct.shape[-1] // size
        small_ct = F.avg_pool3d(ct[None, None], factor)[0, 0].numpy()
        pool2 = (lambda name: F.avg_pool2d(torch.from_numpy(np.load(folder / CASE_FILES[name]))[None],
                                           factor)[0].numpy())
        meta = {**(read_meta(folder) or {}), "dry_run": f"mean-pooled {factor}x from {folder}"}
        meta.pop("files", None)
        write_case(output / CASES_DIR / case_id, small_ct, pool2("drr"), pool2("drr_bs"), meta)
    splits = {name: sorted(ids) for name in SPLITS}
    write_splits(output, splits)
    record = split_record(splits, dataset, seed=0, unit="scan")
    record["dry_run"] = "every case in train, val and test: a smoke test of the chain, not a held-out result"
    write_split_record(output, record)


# ---------------------------------------------------------------------------------------------- the table
def _read_cases(path: Path) -> list[dict[str, float]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: (float(v) if k != "case" and v != "" else v) for k, v in row.items()}
                for row in csv.DictReader(handle)]


METRICS = ("psnr", "psnr_x2ct", "ssim", "lpips", "mae_hu")


def _row_info(out: Path, name: str) -> dict[str, Any] | None:
    """Measured metrics of one run and how it was trained, or None when it has not been evaluated."""
    from ..evaluation.tables import summarize
    from ..training.config import TrainConfig
    from ..checkpoints.networks import load_gan_generators

    cases_csv = out / "eval" / name / "cases.csv"
    if not cases_csv.is_file():
        return None
    cases = _read_cases(cases_csv)
    run_dir = out / "runs" / name
    checkpoint = next((run_dir / n for n in ("best.pt", "latest.pt") if (run_dir / n).is_file()), None)
    params_m = load_gan_generators(checkpoint)[3] if checkpoint else None
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8")) if \
        (run_dir / "config.json").is_file() else {}
    run_info = json.loads((run_dir / "run.json").read_text(encoding="utf-8")) if \
        (run_dir / "run.json").is_file() else {}
    world = (run_info.get("environment") or {}).get("world_size", 1)
    metrics = {key: summarize(cases, key) for key in METRICS}
    return {"cases": len(cases), "metrics": metrics, "params_m": params_m, "recipe": config.get("recipe"),
            "epochs": config.get("epochs"), "betas": config.get("betas"), "amp": config.get("amp"),
            "global_batch": (config.get("batch_size") or 1) * (world or 1),
            "preset": TrainConfig.upgrade(dict(config)).get("size"), "seed": config.get("seed"),
            "gpu": (run_info.get("environment") or {}).get("gpu")}


def _over_seeds(runs: dict[int, dict[str, Any] | None]) -> dict[str, Any] | None:
    """One row from its runs with several seeds: each metric's mean over the runs' means ± their standard
    deviation (sample, n − 1); the rest from the first run, ``seeds`` lists the runs that exist."""
    from ..evaluation.tables import summarize

    done = {seed: info for seed, info in runs.items() if info is not None}
    if not done:
        return None
    first = next(iter(done.values()))
    metrics = {}
    for key in METRICS:
        means = [info["metrics"][key][0] for info in done.values() if info["metrics"][key] is not None]
        stats = summarize([{key: m} for m in means], key)
        if stats is not None:
            spread = stats[1] * math.sqrt(len(means) / (len(means) - 1)) if len(means) > 1 else math.nan
            stats = (stats[0], spread)
        metrics[key] = stats
    return {**first, "metrics": metrics, "seeds": sorted(done), "seeds_asked": sorted(runs),
            "per_seed": {str(seed): {k: (None if v is None else v[0]) for k, v in info["metrics"].items()}
                         for seed, info in done.items()}}


def _fmt(stats: tuple[float, float] | None) -> str:
    from ..evaluation.tables import format_mean_std

    return format_mean_std(stats)


def write_table(out: Path, dry_run: bool = False, nproc: int = 1, dataset: str = "lidc-idri",
                seeds: tuple[int, ...] | None = None) -> Path:
    """``OUT/table<N>.md`` and ``OUT/table<N>.json`` from the evaluated rows (rows not run read "not run").

    Without ``seeds`` the ± is the standard deviation over the test cases of one run per row; with ``seeds`` it
    is the standard deviation of the per-run means over the seeds.
    """
    number, paper_rows = TABLES[dataset]
    if seeds is None:
        rows = {row: _row_info(out, row) for row in rows_of(dataset)}
    else:
        rows = {row: _over_seeds({seed: _row_info(out, run_name(row, seed)) for seed in seeds})
                for row in rows_of(dataset)}
    header = ["Method", "PSNR (↑)", "PSNR, X2CT-GAN variant (↑)", "SSIM (↑)", "LPIPS (↓)", "Params (M)",
              "Paper PSNR", "Paper SSIM", "Paper LPIPS"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] * len(header)) + "|"]
    for method, variant, p_psnr, p_ssim, p_lpips in paper_rows:
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
        from ..data.case_splits import describe_split

        notes.append(f"Data: {describe_split(split)}; lists in `split/` (sha256 in `split/split.json`).")
    if seeds is None:
        notes.append("±: standard deviation over the test cases of one run per row (the paper's ± is most likely "
                     "over runs: `--seeds`).")
    else:
        notes.append(f"±: standard deviation over the training seeds {', '.join(map(str, seeds))} of each run's "
                     "mean over the test cases; one CDM serves every seed.")
    for row in rows_of(dataset):
        info = rows[row]
        if info:
            gpu = f", {info['gpu']}" if info.get("gpu") else ""
            runs = "" if seeds is None else f", seeds {info['seeds']} of {info['seeds_asked']}"
            notes.append(f"`{row}`: preset {info['preset']}, recipe {info['recipe']} (β {info['betas']}, "
                         f"epochs {info['epochs']}, global batch {info['global_batch']}, AMP "
                         f"{'on' if info['amp'] else 'off'}{gpu}), {info['cases']} test cases{runs}.")
    notes.append("PSNR: 3D PSNR of the [0, 1] HU window; X2CT-GAN variant: kylekma/X2CT's PSNR "
                 "(`DCTNetLib.evaluation.metrics.x2ct_psnr`) — the paper does not say which it used. SSIM: 2D, "
                 "mean over the axial, coronal and sagittal slices; LPIPS: AlexNet, same planes. "
                 f"Params: G(Y) + G(X) + D (trainable). Paper: DCT-Net Table {number} (mean ± as printed).")
    title = f"# DCT-Net Table {number} ({PAPER_DATASETS[dataset]}), reproduced"
    text = title + "\n\n" + "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    atomic_write_text(out / f"table{number}.md", text)
    payload = {"dry_run": dry_run, "dataset": dataset, "table": number, "seeds": list(seeds) if seeds else None,
               "split": split,
               "rows": {row: (None if info is None else {**info, "metrics": {
                   k: (None if v is None else {"mean": v[0], "std": None if math.isnan(v[1]) else v[1]})
                   for k, v in info["metrics"].items()}}) for row, info in rows.items()},
               "paper": {variant or method: {"method": method, "psnr": psnr_, "ssim": ssim_, "lpips": lpips_}
                         for method, variant, psnr_, ssim_, lpips_ in paper_rows}}
    atomic_write_text(out / f"table{number}.json", json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return out / f"table{number}.md"


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
