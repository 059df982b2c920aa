#!/usr/bin/env bash
# Scores the models of the YONOS-SR study (models/yonos: configs/yonos/run.sh, then export_fp16.py) at 1, 4 and 16
# DDIM steps into docs/bench/yonos/ (docs/yonos.md):
#   x4: RealSR's real pairs;
#   x8: Set14 and the RealSR HR crops, each degraded x8 by bicubic and by average pooling (the paper's protocol).
#   bash configs/yonos/evaluate.sh [x4 | x8 set14|realsr bicubic|avgpool | all]   (MODELS, RUNS, IMAGES: pairs
#   per set, OUT, from the environment; the pixel-space study: MODELS=models/yonos_px OUT=${OUT:-docs/bench/yonos}_px)
set -euo pipefail
MODELS=${MODELS:-models/yonos}
RUNS=${RUNS:-runs}  # where the x8 test pairs go
IMAGES=${IMAGES:-10}
T=../shared/data/test
PAIRS=$RUNS/yonos_pairs
OUT=${OUT:-docs/bench/yonos}
bench() { instantsr bench --steps 1,4,16 --no-speed --max-images $IMAGES --strip-images 3 "$@"; }

x4() {
    local models=(-m x4-direct=$MODELS/x4_direct -m x4-distilled=$MODELS/x4_distilled)
    [ -d $MODELS/x4_distilled_decoder ] && models+=(-m x4-distilled+decoder=$MODELS/x4_distilled_decoder)
    bench "${models[@]}" --lr $T/realsr/lr --hr $T/realsr/hr -o $OUT/x4_realsr
}
x8() {  # x8 SET PRESET
    local models=(-m x8-direct=$MODELS/x8_direct -m x8-distilled=$MODELS/x8_distilled) pairs=$PAIRS/${1}_x8_$2
    [ -d $pairs/lr ] || instantsr degrade -i $T/$1/hr -o $pairs -s 8 --preset $2
    bench "${models[@]}" --lr $pairs/lr --hr $pairs/hr -o $OUT/x8_${1}_$2
}
case ${1:-all} in
x4) x4 ;;
x8) x8 $2 $3 ;;
all) x4; for set in set14 realsr; do for preset in bicubic avgpool; do x8 $set $preset; done; done ;;
esac
