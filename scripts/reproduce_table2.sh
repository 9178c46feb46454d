#!/usr/bin/env bash
# Reproduce DCT-Net Table 2 (CTSpine1K): scripts/reproduce_table1.sh with --dataset ctspine1k (the X2CT-GAN
# baseline and DCT-Net, the rows of Table 2 the project implements). Full guide: docs/reproduction.md.
#
#   scripts/reproduce_table2.sh DATA_ROOT OUT [options of scripts/reproduce_table1.sh]
#
# DATA_ROOT: CTSpine1K's CT NIfTI files anywhere below it (label maps are skipped); OUT/table2.md is the result.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/reproduce_table1.sh" "$@" --dataset ctspine1k
