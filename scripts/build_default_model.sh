#!/usr/bin/env bash
# Recipe of the default model (DCTNetLib/resources/weights/dctnet_small.pt + manifest.json). It now holds the
# latest *candidate's* recipe (v5, not shipped: README, "The shipped model"); the shipped v3 was built by this
# script at code revision d1ae894 (`git show d1ae894:scripts/build_default_model.sh`).
# Small presets on a 2-core CPU: the GAN and the CDM train at once, one thread each.
# Usage: scripts/build_default_model.sh WORKDIR [GAN_EPOCHS] [CDM_STEPS] [CDM_CHECKPOINT] [INIT]
#   Training resumes: run the same line again after an interruption (the trainings continue from latest.pt).
#   CDM_CHECKPOINT: reuse a trained bone-suppression CDM instead of training one (the GAN does not need it: its
#   G(X) branch learns from the synthetic bone-suppressed DRRs; only the exported bundle carries the CDM).
#   INIT: start the CDM and the generators from this model bundle (v5 started from the v3 bundle of code
#   revision d1ae894: `git show d1ae894:DCTNetReconstruction/DCTNetLib/resources/weights/dctnet_small.pt`).
#   v5: AVERAGE_EPOCHS=1 scripts/build_default_model.sh WORK 26 0 v3_cdm.pt v3_bundle.pt, where v3_cdm.pt is
#   the v3 bundle's CDM (its CDM is reused, not retrained); the measured candidate stopped at epoch 22 of 26.
set -euo pipefail
work=${1:?work folder}; gan_epochs=${2:-70}; cdm_steps=${3:-2900}; cdm_from=${4:-}; init=${5:-}
average=${AVERAGE_EPOCHS:-8}  # epochs at the end whose checkpoints are averaged
here="$(cd "$(dirname "$0")/.." && pwd)"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ ! -f "$work/prepared/splits/train.txt" ]; then
    # 9 real chest CTs, the abdomen and 4 phantoms train; LIDC-IDRI-0001 validates; 3 real chest CTs are the
    # test set that no choice looks at (make_default_training_set.py TEST_CHEST).
    python "$here/scripts/make_default_training_set.py" sources --output "$work/source" --phantoms 4
    dctnet prepare --dataset ctspine1k --source "$work/source" --output "$work/prepared" --workers 2
    # Split: validation = LIDC-IDRI-0001 only; each real chest CT listed 4 times in train.
    python "$here/scripts/make_default_training_set.py" splits --prepared "$work/prepared" --sources "$work/source"
fi
resume() { [ -f "$1/latest.pt" ] && echo --resume || true; }
# Every sample is a new pose (scale 0.85–1.3: real PA films frame the chest up to ~1.25× tighter than the DRRs;
# per-axis scale ±10 %) with re-rendered DRRs in a random film-like appearance.
common=(--data "$work/prepared" --preset small --set augment=true --set augment_film=true
        --set augment_anisotropy=0.1 --set "augment_scale=[0.85,1.3]" --set num_workers=0 --set progress=false)
# CDM: residual target (small preset), every sample a new pose with re-rendered DRRs.
if [ -z "$cdm_from" ]; then
    cdm_from="$work/runs/cdm/latest.pt"
    dctnet train-cdm "${common[@]}" --output "$work/runs/cdm" $(resume "$work/runs/cdm") --epochs 100000 \
        --max-steps "$cdm_steps" --set log_every=10 --set checkpoint_every=50 --set val_every=25 --set val_samples=2 \
        ${init:+--init "$init"} &
fi
# GAN: G(X) learns from the re-rendered synthetic bone-suppressed DRRs (bs_source=target); lr 5e-4 (fine-tuning
# from INIT; v3 used 1e-3 from scratch) with X2CT-GAN's linear decay over the second half (the CPU budget is
# ~3,000 steps, not the paper's ~85,000 at 2e-4). Bone terms (LossConfig): bone voxels weigh 16× in the MSE
# (bone_weight 15: bone is 2–4 % of the training chests at ≥ 200 HU, so it then carries about a third of the
# term) and the bone-component projection L1 weighs 100 (λ_bone·ℓ_bone ≈ λ4·ℓ_proj on the v3 model's outputs:
# ℓ_bone ≈ 0.002, ℓ_proj ≈ 0.02). The exported generators are the mean of the checkpoints at the last
# AVERAGE_EPOCHS epoch ends (scripts/average_checkpoints.py); resuming is bit-exact, so stopping at each epoch end
# to keep its checkpoint changes nothing else.
# v5 adds the product path (model.product_channels=8, ViewProductPath: PA × lateral maps crossed at full
# resolution), started at zero when INIT has none and trained at 10× the generators' lr (product_lr_scale).
gan=(dctnet train "${common[@]}" --output "$work/runs/gan" --bs-source target --epochs "$gan_epochs" --set lr=5e-4
     --set lr_schedule=x2ct --set loss.bone_weight=15 --set loss.lambda_bone_proj=100 --set log_every=10
     --set checkpoint_every=100 --set val_every=5 --set model.product_channels=8 --set product_lr_scale=10
     ${init:+--init "$init"})
(
    per_epoch=$(wc -l < "$work/prepared/splits/train.txt")
    first=$((gan_epochs - average + 1))
    "${gan[@]}" $(resume "$work/runs/gan") --max-steps $((first * per_epoch))
    mkdir -p "$work/snapshots"
    for epoch in $(seq "$first" "$gan_epochs"); do
        "${gan[@]}" --resume --max-steps $((epoch * per_epoch))
        cp "$work/runs/gan/latest.pt" "$work/snapshots/epoch_$(printf %03d "$epoch").pt"
    done
    python "$here/scripts/average_checkpoints.py" --output "$work/gan_averaged.pt" "$work/snapshots"/epoch_*.pt
) &
wait
# The CDM's online weights, 4 DDIM steps started at 0.35·T: chosen from the curve in docs/cdm.md.
dctnet export --gan "$work/gan_averaged.pt" --cdm "$cdm_from" --cdm-weights online --steps 4 \
    --strength 0.35 --output "$here/DCTNetReconstruction/DCTNetLib/resources/weights/dctnet_small.pt" --overwrite
python "$here/scripts/write_weights_manifest.py" --work "$work"
dctnet demo --output "$work/demo" --overwrite
python "$here/scripts/write_weights_manifest.py" --work "$work" --demo-report "$work/demo/report.json"
