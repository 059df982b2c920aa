#!/usr/bin/env bash
# Scores the learned-decoder study (docs/decoder.md). Every choice is made on the validation split; the test sets
# are scored once, for the report:
#   bash configs/decoder/evaluate.sh val        every checkpoint of both runs (configs/decoder/checkpoints.py),
#                                               the teacher, the DFOSD default and Real-ESRGAN x4plus on val/ and
#                                               val_bicubic/, then the choice (configs/validation/choose.py)
#   bash configs/decoder/evaluate.sh realset65  RealSet65 (LR only): grid and colour shift of the teacher, the
#                                               DFOSD default of issue 21, DFOSD + decoder, Real-ESRGAN x4plus
# SPLIT and RUNS come from the environment.
set -euo pipefail
SPLIT=${SPLIT:-.carry/split}
RUNS=${RUNS:-runs}
OUT=docs/bench/decoder
ARTIFACTS=psnr,ssim,lpips,dists,grid,grid_levels,color
old=(-m teacher=models/teacher -m dfosd=models/dfosd/default_0.8)
case ${1:-} in
val)
    models=("${old[@]}")
    for run in teacher dfosd; do
        python configs/decoder/checkpoints.py $RUNS/decg_$run $RUNS/decg_${run}_ckpts > /dev/null
        for ckpt in $RUNS/decg_${run}_ckpts/step_*; do
            step=${ckpt##*step_}
            models+=(-m ${run}+dec@$((10#$step))=$ckpt)
        done
    done
    for set in val val_bicubic; do
        instantsr bench "${models[@]}" --baseline realesrgan --lr $SPLIT/$set/lr --hr $SPLIT/$set/hr --max-images 0 \
            --steps 1 --no-speed --metrics $ARTIFACTS --strip-images 4 -o $OUT/$set
    done
    # the adapter scale of DFOSD (issue 21 picked 0.8 on the test set): 0.5-0.7 with the decoder of the 0.8 run
    scaled=(-m teacher=models/teacher)
    for s in 0.5 0.6 0.7; do
        python configs/dfosd/scale_adapter.py models/teacher models/dfosd/teacher_eadists_0.3 $s $RUNS/dfosd_s$s
        python configs/decoder/checkpoints.py $RUNS/decg_dfosd $RUNS/dfosd_s${s}_dec --step 480 --onto $RUNS/dfosd_s$s
        scaled+=(-m dfosd@$s+dec@480=$RUNS/dfosd_s${s}_dec)
    done
    for set in val val_bicubic; do
        instantsr bench "${scaled[@]}" --baseline realesrgan --lr $SPLIT/$set/lr --hr $SPLIT/$set/hr --max-images 0 \
            --steps 1 --no-speed --metrics $ARTIFACTS --strip-images 0 -o $OUT/${set}_scale
    done
    python configs/validation/choose.py $OUT/val/bench.csv,$OUT/val_scale/bench.csv \
        $OUT/val_bicubic/bench.csv,$OUT/val_bicubic_scale/bench.csv | tee $OUT/choice.md ;;
realset65)
    # the models (whole images, saved); Real-ESRGAN x4plus in a run of its own that saves its outputs as it goes
    # (over a minute an image on 2 shared cores: the committed figures cover the first 31 of 65 by name, scored
    # with `instantsr eval --sr OUT/sr/realesrgan-s1 --lr $T --metrics grid,grid_levels,color`)
    T=../shared/data/test/realset65
    instantsr bench -m teacher=models/teacher -m dfosd=models/dfosd/default_0.8 -m dfosd+dec@480=models/decoder/dfosd_dec \
        --lr $T --max-images 0 --steps 1 --no-speed --metrics grid,grid_levels,color --strip-images 0 --save-sr \
        -o $RUNS/realset65_models
    instantsr bench --baseline realesrgan --lr $T --max-images 0 --no-speed --metrics grid,grid_levels,color \
        --strip-images 0 --save-sr -o $RUNS/realset65_resrgan ;;
*) echo "usage: evaluate.sh val | realset65" >&2; exit 2 ;;
esac
