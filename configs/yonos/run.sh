#!/usr/bin/env bash
# The YONOS-SR study of docs/yonos.md: a KL-f4 codec, then two lanes side by side (one CPU core each):
#   chain:  x2 on raw data -> x4 by scale distillation -> x8 by scale distillation -> the x4 decoder fine-tune
#   direct: x4 and x8 on raw data, each with the budget of the chain that made its distilled rival
# A distilled step costs about 4/3 of a direct one (one more forward pass, the teacher's), so the direct runs get
# N2 + 4/3 N steps (x4) and N2 + 8/3 N steps (x8). Re-running resumes every run from its last checkpoint.
#   bash configs/yonos/run.sh [ae|chain|direct|all] [extra train arguments, e.g. --batch-size 2 for a dry run]
# From the environment: DATA, RUNS, N (steps per distillation stage), N2 (the x2 model's steps; N by default), CFG
# (the yonos config), DEC_CFG and DEC_STEPS (the decoder fine-tune's; DEC_STEPS=0: none, as for a codec without a
# decoder) and P (the run names' prefix).
# The pixel-space study: CFG=configs/yonos/pixel_cpu.toml P=yonos_px DEC_STEPS=0 bash configs/yonos/run.sh chain
# On a GPU:
# configs/yonos/device.sh.
set -euo pipefail
DATA=${DATA:-../shared/data/train}
RUNS=${RUNS:-runs}
N=${N:-800}
N2=${N2:-$N}
CFG=${CFG:-configs/yonos/yonos_cpu.toml}
DEC_CFG=${DEC_CFG:-configs/yonos/decoder_cpu.toml}
DEC_STEPS=${DEC_STEPS:-600}
P=${P:-yonos}
mode=${1:-all}
shift || true
train() { instantsr train "$@" --data "$DATA" "${EXTRA[@]}"; }
EXTRA=("$@")

ae() {
    train autoencoder --config configs/yonos/autoencoder.toml --out $RUNS/yonos_ae
    python configs/yonos/latent_scale.py $RUNS/yonos_ae/model "$DATA"
}
chain() {  # a student starts from its teacher, not from the config's init
    train yonos --config $CFG -s 2 --steps $N2 --out $RUNS/${P}_x2
    train yonos --config $CFG -s 4 --steps $N --teacher $RUNS/${P}_x2 --set 'init=""' --out $RUNS/${P}_x4
    train yonos --config $CFG -s 8 --steps $N --teacher $RUNS/${P}_x4 --set 'init=""' --out $RUNS/${P}_x8
    if [ "$DEC_STEPS" -gt 0 ]; then
        train yonos-decoder --config $DEC_CFG --steps $DEC_STEPS --model $RUNS/${P}_x4 --out $RUNS/${P}_x4_decoder
    fi
}
direct() {
    train yonos --config $CFG -s 4 --steps $((N2 + 4 * N / 3)) --out $RUNS/${P}_x4_direct
    train yonos --config $CFG -s 8 --steps $((N2 + 8 * N / 3)) --out $RUNS/${P}_x8_direct
}
case $mode in
ae) ae ;;
chain) OMP_NUM_THREADS=1 chain ;;
direct) OMP_NUM_THREADS=1 direct ;;
all) [ -f $RUNS/yonos_ae/model/config.json ] || ae
     OMP_NUM_THREADS=1 chain > $RUNS/yonos_chain.log 2>&1 &
     OMP_NUM_THREADS=1 direct > $RUNS/yonos_direct.log 2>&1
     wait ;;
*) echo "usage: run.sh [ae|chain|direct|all] [train arguments]" >&2; exit 2 ;;
esac
