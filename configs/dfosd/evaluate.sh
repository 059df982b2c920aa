#!/usr/bin/env bash
# Scores the DFOSD study (docs/dfosd.md) on all 100 RealSR x4 pairs at one step:
#   bash configs/dfosd/evaluate.sh ablations   the generator before training and the five ablation models
#                                               (MODELS: models/dfosd, models/dfosd/README.md), quality only
#   bash configs/dfosd/evaluate.sh final NAME=DIR   one model beside the shipped default, quality
#   bash configs/dfosd/evaluate.sh teacher          DFOSD on the ResShift teacher (run.sh default): both runs beside
#                                                   the teacher (the default until issue 21) and Real-ESRGAN x4plus
#   bash configs/dfosd/evaluate.sh speed NAME=DIR   one model beside the teacher, s/img at 64->256 and 128->512
#                                                   (on idle cores)
# MODELS, RUNS (where the untrained start is written) and IMAGES (pairs, default all 100) come from the environment.
set -euo pipefail
MODELS=${MODELS:-models/dfosd}
RUNS=${RUNS:-runs}
IMAGES=${IMAGES:-100}
T=../shared/data/test/realsr
OUT=docs/bench/dfosd
quality=(--lr $T/lr --hr $T/hr --max-images $IMAGES --steps 1 --strip-images 4)
case ${1:-} in
ablations)
    # the generator before training: Eq. 1 with the prior's weights, at the runs' T_L
    t_l=$(python -c "import json; print(json.load(open('$MODELS/nad_eadists/model_index.json'))['schedule']['start'])")
    [ -d $RUNS/dfosd_start ] || python configs/dfosd/pick_t_l.py $MODELS/prior --candidates $t_l --crops 8 \
        --export $RUNS/dfosd_start
    models=(-m start=$RUNS/dfosd_start)
    for run in nad_eadists vanilla_eadists none_eadists nad_dists nad_mse; do
        models+=(-m ${run/_/+}=$MODELS/$run)
    done
    instantsr bench "${models[@]}" "${quality[@]}" --no-speed -o $OUT/ablations ;;
final)  # BASELINE=1: Real-ESRGAN x4plus too (about 20 more minutes on one core)
    instantsr bench -m default=instantsr/default_model -m "${2:?give NAME=DIR}" ${BASELINE:+--baseline realesrgan} \
        "${quality[@]}" --no-speed -o $OUT/final ;;
teacher)
    instantsr bench -m teacher=models/teacher -m dfosd_0.3=$RUNS/dfosd_default_eadists_0.3 \
        -m dfosd_0.1=$RUNS/dfosd_default_eadists_0.1 --baseline realesrgan "${quality[@]}" --no-speed \
        -o $OUT/on_teacher ;;
speed)  # on idle cores
    instantsr bench -m teacher=models/teacher -m "${2:?give NAME=DIR}" --sizes 64,128 --batch 1 --tile 0 \
        --no-quality -o $OUT/speed ;;
*) echo "usage: evaluate.sh ablations | final NAME=DIR | teacher | speed NAME=DIR" >&2; exit 2 ;;
esac
