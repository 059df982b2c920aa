#!/usr/bin/env bash
# Scores the DFOSD study (docs/dfosd.md) on all 100 RealSR x4 pairs at one step:
#   bash configs/dfosd/evaluate.sh ablations   the five ablation runs (RUNS/dfosd_*), quality only
#   bash configs/dfosd/evaluate.sh final NAME=DIR   one model beside the shipped default and Real-ESRGAN x4plus,
#                                               quality and speed (run it on idle cores)
# RUNS and IMAGES (pairs, default all 100) come from the environment.
set -euo pipefail
RUNS=${RUNS:-runs}
IMAGES=${IMAGES:-100}
T=../shared/data/test/realsr
OUT=docs/bench/dfosd
quality=(--lr $T/lr --hr $T/hr --max-images $IMAGES --steps 1 --strip-images 4)
case ${1:-} in
ablations)
    models=(-m start=$RUNS/dfosd_start)  # the generator before training (pick_t_l.py --export)
    for run in nad_eadists vanilla_eadists none_eadists nad_dists nad_mse; do
        [ -d $RUNS/dfosd_$run/model ] && models+=(-m ${run/_/+}=$RUNS/dfosd_$run)
    done
    instantsr bench "${models[@]}" "${quality[@]}" --no-speed -o $OUT/ablations ;;
final)
    instantsr bench -m default=instantsr/default_model -m "${2:?give NAME=DIR}" --baseline realesrgan \
        "${quality[@]}" --sizes 64,128 --batch 1 --tile 0 -o $OUT/final ;;
*) echo "usage: evaluate.sh ablations | final NAME=DIR" >&2; exit 2 ;;
esac
