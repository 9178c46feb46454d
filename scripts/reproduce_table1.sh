#!/usr/bin/env bash
# Reproduce DCT-Net Table 1 (LIDC-IDRI): prepare the data, train the bone-suppression CDM, train every Table 1 row
# the project implements (X2CT-GAN baseline, the three ablations, DCT-Net), evaluate each on the test split and
# write OUT/table1.md beside the paper's numbers. Re-run the same line to resume. Full guide: docs/reproduction.md.
#
#   scripts/reproduce_table1.sh DATA_ROOT OUT                 # one GPU
#   scripts/reproduce_table1.sh DATA_ROOT OUT --gpus 5        # 5 GPUs: one row each, the paper's batch kept
#   scripts/reproduce_table1.sh DATA_ROOT OUT --seeds 0,1,2   # every row 3 times: the ± over runs
#   scripts/reproduce_table1.sh DATA_ROOT OUT --dry-run       # the whole chain on 2 scans, tiny preset, CPU minutes
#
# DATA_ROOT: LIDC-IDRI as downloaded from TCIA (LIDC-IDRI-XXXX/<study>/<series>/*.dcm anywhere below it).
# Table 2 (CTSpine1K): scripts/reproduce_table2.sh. Options: `dctnet reproduce --help`.
# The interpreter is $PYTHON, else the checkout's .venv, else python3.
set -euo pipefail
if [[ $# -lt 2 || "$1" == "-h" || "$1" == "--help" ]]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]] && exit 0 || exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
exec "$PYTHON" -m DCTNetLib reproduce "$@"
