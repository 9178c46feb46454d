#!/usr/bin/env bash
# Recipe of the shipped default model (DCTNetLib/resources/weights/dctnet_small.pt + manifest.json).
# Small presets on a 2-core CPU; one thread per process (two processes share the two cores).
# Usage: scripts/build_default_model.sh WORKDIR [CDM_STEPS] [GAN_STEPS]
set -euo pipefail
work=${1:?work folder}; cdm_steps=${2:-3000}; gan_steps=${3:-4000}
here="$(cd "$(dirname "$0")/.." && pwd)"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
python "$here/scripts/make_default_training_set.py" --output "$work/source" --phantoms 32 --real-copies 8
dctnet prepare --dataset ctspine1k --source "$work/source" --output "$work/prepared" --workers 2
common=(--data "$work/prepared" --preset small --epochs 1000 --set num_workers=0 --set progress=false)
dctnet train-cdm "${common[@]}" --output "$work/runs/cdm" --max-steps "$cdm_steps" --set log_every=10 \
    --set checkpoint_every=100 --set val_samples=4 --set val_every=40 &
# G(X) learns from the prepared synthetic bone-suppressed DRRs (bs_source=target) so both trainings run at once.
dctnet train "${common[@]}" --output "$work/runs/gan" --bs-source target --max-steps "$gan_steps" --set model.slices_per_plane=16 --set log_every=5 \
    --set checkpoint_every=50 --set val_every=10 &
wait
dctnet export --gan "$work/runs/gan/latest.pt" --cdm "$work/runs/cdm/latest.pt" \
    --cdm-weights online --steps 4 --output "$here/DCTNetReconstruction/DCTNetLib/resources/weights/dctnet_small.pt" --overwrite
python "$here/scripts/write_weights_manifest.py" --work "$work"
