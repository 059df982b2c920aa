#!/usr/bin/env bash
# The YONOS-SR study (configs/yonos/run.sh) on one lent GPU through the device tool, with yonos_gpu.toml.
# Carry: .carry/train (configs/default/pack_data.py), .carry/whl (the diffusers wheel), .carry/cache (LPIPS
# weights: `INSTANTSR_CACHE=.carry/cache instantsr weights fetch`) and .carry/yonos_ae (the KL codec's model folder,
# already given its scaling_factor by latent_scale.py). Writes the five models of the study in fp16 (export_fp16.py) and
# the runs' logs to $OUT.
#   bash configs/yonos/device.sh [train arguments]      (N: the chain's steps per stage; run.sh's environment)
set -uo pipefail
OUT=${OUT:-runs/device_out}
export RUNS=${RUNS:-/tmp/yonos_runs} DATA=${DATA:-.carry/train} CFG=${CFG:-configs/yonos/yonos_gpu.toml}
mkdir -p "$OUT" "$RUNS"
source configs/device_env.sh  # diffusers from .carry/whl, weights from .carry/cache
instantsr() { python3 -m instantsr.cli "$@"; }
export -f instantsr
[ -d $RUNS/yonos_ae/model ] || { mkdir -p $RUNS/yonos_ae && cp -r .carry/yonos_ae $RUNS/yonos_ae/model; }  # no codec run
bash configs/yonos/run.sh all "$@"
tr '\r' '\n' < $RUNS/yonos_chain.log | grep -v "it/s]$" | tail -n 4; tr '\r' '\n' < $RUNS/yonos_direct.log | grep -v "it/s]$" | tail -n 4
python3 configs/export_fp16.py $OUT/models $RUNS/yonos_x4_direct=x4_direct $RUNS/yonos_x4=x4_distilled \
    $RUNS/yonos_x4_decoder=x4_distilled_decoder $RUNS/yonos_x8_direct=x8_direct $RUNS/yonos_x8=x8_distilled
for run in $RUNS/yonos_*/; do [ -f $run/log.csv ] && cp $run/log.csv $OUT/$(basename $run)_log.csv; done
ls -la $OUT
