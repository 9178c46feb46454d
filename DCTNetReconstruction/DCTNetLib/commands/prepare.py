"""``dctnet prepare`` — turn LIDC-IDRI or CTSpine1K downloads, or your own CTs, into training cases.

Examples::

    dctnet prepare --dataset lidc-idri --source ~/TCIA/LIDC-IDRI --output data/lidc --workers 4
    dctnet prepare --dataset ctspine1k --source ~/CTSpine1K --output data/ctspine1k
    dctnet prepare --dataset generic --source ~/my_cts --output data/mine            # your own CTs (any layout)
    dctnet prepare --dataset generic --source cases.csv --output data/mine           # path,id,split,patient
    dctnet prepare ... --limit 5            # a quick trial on the first five cases
    dctnet prepare --dataset lidc-idri ... --unit patient   # one CT per patient instead of every CT scan

Per case: read the CT (:func:`DCTNetLib.io.ct.read_ct`), preprocess it as X2CT-GAN did
(:func:`DCTNetLib.data.preprocess.preprocess_ct`: 1 mm → 320³ → 128³ → [0, 1]), render PA + lateral DRRs
(``DCTNetLib.data.drr.make_drrs``) and bone-suppressed DRRs (``DCTNetLib.data.bone.bone_suppressed_drrs``),
and write the case folder described in :mod:`DCTNetLib.data.prepared_cases` (``meta.json`` last, as the "done" marker).

Re-running resumes: finished cases are skipped. A case that cannot be read is logged with a one-line reason
and listed in ``failed.txt``; it never stops the run. At the end the train/val/test split files are rewritten
from every finished case (paper sizes, or its proportions for other case counts; fixed ``--seed``; the scans of
one patient stay in one split) and ``splits/split.json`` records how: dataset, discovery unit, case and patient
counts, sizes against the paper's, seed and the sha256 of each list. The last line printed says the same.

LIDC-IDRI is discovered per CT scan by default (``--unit scan``): DCT-Net's 1,018 LIDC-IDRI CTs are scans
(of 1,010 patients), so a complete download gives the paper's 854 / 72 / 92 split sizes.
``--unit patient`` keeps one scan per patient (≤ 1,010 cases, the paper's proportions).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..conventions import DATASETS

# torch, numpy and the modules that import them are imported inside the functions: `dctnet --help` imports
# every command module (DCTNetLib.cli) and stays fast.

__all__ = ["HELP", "add_arguments", "run"]

HELP = "prepare LIDC-IDRI / CTSpine1K / your own CTs (generic): CT → 128³ volume + PA/lateral DRRs + bone-suppressed DRRs, and splits"

DEFAULT_WORKERS = max(1, min(4, (os.cpu_count() or 1) // 2))  # each worker needs ~1.5 GB at 512²×133 input


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..data.case_discovery import LIDC_UNITS
    from ..data.case_splits import SPLIT_SEED

    parser.add_argument("--dataset", required=True, choices=DATASETS, help="which dataset layout to read")
    parser.add_argument("--source", required=True, metavar="DIR",
                        help="the download: folder holding LIDC-IDRI-XXXX/ case folders, or CTSpine1K NIfTI files; "
                             "generic: a folder of CT files / DICOM CT series, or a .csv/.json case list (columns "
                             "path, and optionally id, split, patient)")
    parser.add_argument("--output", required=True, metavar="DIR", help="where cases/ and splits/ are written")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"parallel processes (default {DEFAULT_WORKERS}; each uses one torch thread)")
    parser.add_argument("--seed", type=int, default=SPLIT_SEED,
                        help=f"split seed (default {SPLIT_SEED})")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N cases (trial runs)")
    parser.add_argument("--unit", choices=LIDC_UNITS, default="scan",
                        help="LIDC-IDRI: one case per CT scan (default; the paper's 1,018) or per patient")


def run(args: argparse.Namespace) -> int:
    from ..data.case_splits import SPLIT_RECORD, SPLITS_DIR
    from ..data.prepare import prepare_dataset

    summary = prepare_dataset(args.dataset, args.source, args.output, workers=args.workers, seed=args.seed,
                              limit=args.limit, unit=args.unit)
    print(f"dctnet prepare: {summary.line()}", flush=True)
    print(f"dctnet prepare: {summary.split_line()}; recorded in "
          f"{Path(args.output) / SPLITS_DIR / SPLIT_RECORD}", flush=True)
    return 0 if (summary.done or summary.skipped) or not summary.failed else 1
