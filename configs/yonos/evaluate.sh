#!/usr/bin/env bash
# Scores the models of a YONOS-SR study (configs/yonos/run.sh, then export_fp16.py) at 1, 4 and 16 DDIM steps into
# docs/bench/yonos/ (docs/yonos.md):
#   x4 realsr: RealSR's real pairs;  x4 SET PRESET: SET's HR degraded x4 by `instantsr degrade --preset PRESET`;
#   x8 SET PRESET: Set14 and the RealSR HR crops, each degraded x8 by bicubic and by average pooling (the paper's
#   x8 protocol).
#   bash configs/yonos/evaluate.sh [x4 realsr | x4 SET PRESET | x8 SET PRESET | all]
# From the environment: MODELS, RUNS (where the degraded test pairs go), IMAGES (pairs per set), STEPS (DDIM step
# counts), OUT. The bicubic study: MODELS=models/yonos_bicubic OUT=docs/bench/yonos_bicubic.
set -euo pipefail
MODELS=${MODELS:-models/yonos}
RUNS=${RUNS:-runs}
IMAGES=${IMAGES:-10}
STEPS=${STEPS:-1,4,16}
T=../shared/data/test
PAIRS=$RUNS/yonos_pairs
OUT=${OUT:-docs/bench/yonos}
bench() { instantsr bench --steps $STEPS --no-speed --max-images $IMAGES --strip-images 3 "$@"; }

score() {  # SCALE SET [PRESET]: without a preset, the set's own LR (RealSR's real pairs)
    local s=$1 set=$2 preset=${3:-} models=(-m x$1-direct=$MODELS/x$1_direct -m x$1-distilled=$MODELS/x$1_distilled)
    [ -d $MODELS/x${s}_distilled_decoder ] && models+=(-m x$s-distilled+decoder=$MODELS/x${s}_distilled_decoder)
    if [ -z "$preset" ]; then
        bench "${models[@]}" --lr $T/$set/lr --hr $T/$set/hr -o $OUT/x${s}_$set
    else
        local pairs=$PAIRS/${set}_x${s}_$preset
        [ -d $pairs/lr ] || instantsr degrade -i $T/$set/hr -o $pairs -s $s --preset $preset
        bench "${models[@]}" --lr $pairs/lr --hr $pairs/hr -o $OUT/x${s}_${set}_$preset
    fi
}
case ${1:-all} in
x4|x8) score ${1#x} ${2:-realsr} ${3:-} ;;
all) score 4 realsr; for set in set14 realsr; do for preset in bicubic avgpool; do score 8 $set $preset; done; done ;;
*) echo "usage: evaluate.sh [x4 realsr | x4 SET PRESET | x8 SET PRESET | all]" >&2; exit 2 ;;
esac
