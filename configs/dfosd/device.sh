#!/usr/bin/env bash
# The DFOSD study (configs/dfosd/run.sh) on one lent GPU through the device tool: the VP prior (prior_gpu.toml),
# T_L, then the full method and the ablations (dfosd_gpu.toml), each run bounded by its time_limit_min.
# Carry: .carry/train (configs/default/pack_data.py, --max-side 512), .carry/whl (the diffusers wheel) and
# .carry/cache (configs/dfosd/carry_weights.py: VGG-16, DISTS, LPIPS in fp16, 33 MiB). Writes the runs' models
# (fp16), logs and T_L to $OUT. Dry-run on the CPU (session 14): DATA=../shared/data/train ARGS="--steps 2
# --batch-size 2 --num-workers 0" bash configs/dfosd/device.sh
#   bash configs/dfosd/device.sh [all|nad]   (nad: the full method only, no ablations; ARGS: more train arguments
#   for every run, e.g. ARGS="--steps 2 --batch-size 2" for a dry run on the CPU)
set -uo pipefail
OUT=${OUT:-runs/device_out}
export RUNS=${RUNS:-/tmp/dfosd_runs} DATA=${DATA:-.carry/train}
mkdir -p "$OUT" "$RUNS"
source configs/device_env.sh  # diffusers from .carry/whl, weights from .carry/cache
train() { python3 -m instantsr.cli train "$@" --data "$DATA" ${ARGS:-}; }
python3 configs/dfosd/prior_init.py $RUNS/dfosd_prior_init
train yonos --config configs/dfosd/prior_gpu.toml --out $RUNS/dfosd_prior --set "init=\"$RUNS/dfosd_prior_init\""
T_L=$(python3 configs/dfosd/pick_t_l.py $RUNS/dfosd_prior/model "$DATA" | tee $OUT/t_l.txt | awk '/best T_L/ {print $NF}')
runs=("nad_eadists nad ea-dists")
[ "${1:-all}" = all ] && runs+=("none_eadists none ea-dists" "vanilla_eadists vanilla ea-dists" "nad_dists nad dists"
                                "nad_mse nad mse")
for spec in "${runs[@]}"; do
    set -- $spec
    train dfosd --config configs/dfosd/dfosd_gpu.toml --out $RUNS/dfosd_$1 --prior $RUNS/dfosd_prior/model \
        --set t_l=$T_L --set discriminator=$2 --set perceptual=$3 > $RUNS/dfosd_$1.log 2>&1
    tr '\r' '\n' < $RUNS/dfosd_$1.log | grep -v "it/s]$" | tail -n 3
done
python3 configs/export_fp16.py $OUT/models $RUNS/dfosd_*/
for run in $RUNS/dfosd_*/; do [ -f $run/log.csv ] && cp $run/log.csv $OUT/$(basename $run)_log.csv; done
ls -la $OUT $OUT/models
