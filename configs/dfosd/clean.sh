#!/usr/bin/env bash
# DFOSD with the colour and grid terms (configs/dfosd/clean_cpu.toml; docs/decoder.md, "DFOSD without the grid and
# the cast"), on the training part of the validation split (configs/validation/split.py), one CPU core per run.
#   bash configs/dfosd/clean.sh [train args]      two DFOSD runs, 50 minutes each:
#       warm:  from the earlier DFOSD (models/dfosd/teacher_eadists_0.3) as the prior, lambda1 = 0.02
#       fresh: from the teacher (models/teacher), lambda1 = 0.01 (half the GAN weight)
#   bash configs/dfosd/clean.sh decoder           a learned decoder on each run's last export, 40 minutes each
#       (configs/decoder/decoder_cpu.toml, plus the grid's ratio term: grid_ratio_weight 0.05 on warm, 0.3 on fresh)
#   bash configs/dfosd/clean.sh val               DFOSD at steps 400 and last of each run, and the decoders at
#       steps 200, 400, 600 and last, scored on val/ and val_bicubic/ beside the teacher and Real-ESRGAN x4plus, then the choice
#       (configs/validation/choose.py)
#   bash configs/dfosd/clean.sh self              a decoder on the warm run that keeps the model's own output and
#       takes out its grid (target = model), 25 minutes
#   bash configs/dfosd/clean.sh ratio             the warm run's export trained on with the grid's ratio term
#       (grid_ratio_weight 0.3 and 1.0, two runs, 55 minutes each): the power term alone left flat areas at 1.35
#   bash configs/dfosd/clean.sh val_ratio         those two runs at steps 300, 500 and last, scored on val/ and
#       val_bicubic/ and chosen among with every candidate above (their rows from `val`)
#   bash configs/dfosd/clean.sh test MODEL        the chosen model on RealSR and RealSet65 (test sets: reported)
# Re-running a training stage resumes it. DATA, SPLIT and RUNS come from the environment.
set -euo pipefail
DATA=${DATA:-../shared/data/train}
SPLIT=${SPLIT:-.carry/split}
RUNS=${RUNS:-runs}
OUT=docs/bench/dfosd_clean
export OMP_NUM_THREADS=1
[ -d $SPLIT/val_bicubic ] || python configs/validation/split.py "$DATA" $SPLIT
case ${1:-train} in
decoder)
    # on each run's last export: the grid's power term (as configs/decoder/) and its ratio term, at two weights
    for spec in "warm 0.05" "fresh 0.3"; do
        set -- $spec
        instantsr train decoder --config configs/decoder/decoder_cpu.toml --model $RUNS/dfosd_clean_$1/model \
            --data $SPLIT/train --out $RUNS/clean_dec_$1 --set grid_weight=1000 --set grid_ratio_weight=$2 \
            --time-limit ${MINUTES:-40} > $RUNS/clean_dec_$1.out 2>&1 &
    done
    wait ;;
self)
    # a decoder on the warm run's export that learns to keep the model's own output (target = model) and take out
    # its grid (power and ratio terms): the decoders above, trained against HR, gave back LPIPS and colour
    instantsr train decoder --config configs/decoder/decoder_cpu.toml --model $RUNS/dfosd_clean_warm/model \
        --data $SPLIT/train --out $RUNS/clean_dec_self --set target=\"model\" --set grid_weight=1000 \
        --set grid_ratio_weight=0.3 --time-limit ${MINUTES:-25} > $RUNS/clean_dec_self.out 2>&1 ;;
val)
    # DFOSD at steps 400 and last of each run beside the teacher and Real-ESRGAN x4plus; the decoders at steps
    # 200, 400, 600 and last
    ARTIFACTS=psnr,ssim,lpips,dists,grid,grid_levels,color
    models=(-m teacher=models/teacher)
    for run in warm fresh; do
        python configs/dfosd/checkpoints.py $RUNS/dfosd_clean_$run $RUNS/dfosd_clean_${run}_ckpts > /dev/null
        last=$(ls -d $RUNS/dfosd_clean_${run}_ckpts/step_* | tail -1)
        for ckpt in $RUNS/dfosd_clean_${run}_ckpts/step_0000400 $last; do
            models+=(-m $run@$((10#${ckpt##*step_}))=$ckpt)
        done
    done
    decoders=()
    for run in warm fresh; do
        python configs/decoder/checkpoints.py $RUNS/clean_dec_$run $RUNS/clean_dec_${run}_ckpts > /dev/null
        last=$(ls -d $RUNS/clean_dec_${run}_ckpts/step_* | tail -1)
        for ckpt in $RUNS/clean_dec_${run}_ckpts/step_000{02,04,06}00 $last; do
            decoders+=(-m $run+dec@$((10#${ckpt##*step_}))=$ckpt)
        done
    done
    for set in val val_bicubic; do
        instantsr bench "${models[@]}" --baseline realesrgan --lr $SPLIT/$set/lr --hr $SPLIT/$set/hr --max-images 0 \
            --steps 1 --no-speed --metrics $ARTIFACTS --strip-images 4 -o $OUT/$set
        instantsr bench "${decoders[@]}" --lr $SPLIT/$set/lr --hr $SPLIT/$set/hr --max-images 0 \
            --steps 1 --no-speed --metrics $ARTIFACTS --strip-images 0 -o $OUT/${set}_decoders
    done
    if [ -d $RUNS/clean_dec_self/checkpoints ]; then  # the decoder that keeps the model's output: 200 and last
        python configs/decoder/checkpoints.py $RUNS/clean_dec_self $RUNS/clean_dec_self_ckpts > /dev/null
        last=$(ls -d $RUNS/clean_dec_self_ckpts/step_* | tail -1)
        for set in val_bicubic val; do
            instantsr bench -m self+dec@200=$RUNS/clean_dec_self_ckpts/step_0000200 \
                -m self+dec@$((10#${last##*step_}))=$last --lr $SPLIT/$set/lr --hr $SPLIT/$set/hr --max-images 0 \
                --steps 1 --no-speed --metrics $ARTIFACTS --strip-images 0 -o $OUT/${set}_self
        done
    fi
    python configs/validation/choose.py $OUT/val/bench.csv,$OUT/val_decoders/bench.csv,$OUT/val_self/bench.csv \
        $OUT/val_bicubic/bench.csv,$OUT/val_bicubic_decoders/bench.csv,$OUT/val_bicubic_self/bench.csv \
        | tee $OUT/choice.md ;;
val_ratio)
    ARTIFACTS=psnr,ssim,lpips,dists,grid,grid_levels,color
    models=()
    for w in 0.3 1.0; do
        python configs/dfosd/checkpoints.py $RUNS/dfosd_ratio_$w $RUNS/dfosd_ratio_${w}_ckpts > /dev/null
        last=$(ls -d $RUNS/dfosd_ratio_${w}_ckpts/step_* | tail -1)
        for ckpt in $RUNS/dfosd_ratio_${w}_ckpts/step_000{03,05}00 $last; do
            models+=(-m ratio$w@$((10#${ckpt##*step_}))=$ckpt)
        done
    done
    for set in val val_bicubic; do
        instantsr bench "${models[@]}" --lr $SPLIT/$set/lr --hr $SPLIT/$set/hr --max-images 0 \
            --steps 1 --no-speed --metrics $ARTIFACTS --strip-images 0 -o $OUT/${set}_ratio
    done
    python configs/validation/choose.py \
        $OUT/val/bench.csv,$OUT/val_decoders/bench.csv,$OUT/val_self/bench.csv,$OUT/val_ratio/bench.csv \
        $OUT/val_bicubic/bench.csv,$OUT/val_bicubic_decoders/bench.csv,$OUT/val_bicubic_self/bench.csv,$OUT/val_bicubic_ratio/bench.csv \
        | tee $OUT/choice.md ;;
test)
    # the chosen model on the test sets, reported and never chosen on: the 100 RealSR pairs beside the teacher,
    # RealSet65 (LR only) grid and colour with the outputs kept for the README strip
    model=${2:?give the chosen model folder}
    T=../shared/data/test
    OMP_NUM_THREADS=2 instantsr bench -m teacher=models/teacher -m chosen=$model --lr $T/realsr/lr --hr $T/realsr/hr \
        --max-images 0 --steps 1 --no-speed --strip-images 4 -o $OUT/realsr
    OMP_NUM_THREADS=2 instantsr bench -m teacher=models/teacher -m chosen=$model --lr $T/realset65 --max-images 0 \
        --steps 1 --no-speed --metrics grid,grid_levels,color --strip-images 0 --save-sr -o $RUNS/realset65_clean ;;
ratio)
    # from models/dfosd/clean_warm (the warm run at step 718) with the ratio term on top of its recipe
    for w in 0.3 1.0; do
        instantsr train dfosd --config configs/dfosd/clean_cpu.toml --data $SPLIT/train --out $RUNS/dfosd_ratio_$w \
            --prior models/dfosd/clean_warm --set gan_weight=0.02 --set grid_ratio_weight=$w \
            --time-limit ${MINUTES:-55} > $RUNS/dfosd_ratio_$w.out 2>&1 &
    done
    wait ;;
train)
    EXTRA=("${@:2}")
    for spec in "warm models/dfosd/teacher_eadists_0.3 0.02" "fresh models/teacher 0.01"; do
        set -- $spec
        instantsr train dfosd --config configs/dfosd/clean_cpu.toml --data $SPLIT/train --out $RUNS/dfosd_clean_$1 \
            --prior $2 --set gan_weight=$3 --time-limit ${MINUTES:-50} "${EXTRA[@]}" > $RUNS/dfosd_clean_$1.out 2>&1 &
    done
    wait ;;
*) echo "usage: clean.sh [train|decoder|self|ratio|val|val_ratio|test MODEL]" >&2; exit 2 ;;
esac
