#!/usr/bin/env bash
# Teacher, SinSR and RSD on one lent GPU through the device tool (MODEL_CARD.md has the whole recipe).
# Reads .carry/train (configs/default/pack_data.py), .carry/whl (diffusers wheel), .carry/cache (LPIPS weights),
# .carry/teacher_init (the teacher stage to continue) and, when the teacher is not trained in the same call,
# .carry/teacher.tar. Writes each run folder (without checkpoints) as a tar file to $OUT. STAGES picks the runs
# (default: teacher sinsr rsd, in order). Extra arguments go to every `instantsr train` (e.g. --batch-size 2
# --time-limit 0.1 for a dry run on the CPU).
set -uo pipefail
OUT=${OUT:-runs/gpu_out}
RUNS=${RUNS:-/tmp/instantsr_runs}
STAGES=${STAGES:-teacher sinsr rsd}  # teacher1: stage 1, from scratch; teacher_base: the next teacher
mkdir -p "$OUT" "$RUNS"
source configs/device_env.sh  # diffusers from .carry/whl, weights from .carry/cache
train() { python3 -m instantsr.cli train "$@" --data .carry/train 2>&1 | tr '\r' '\n' | grep -v "it/s]$" ; }
keep() { [ -d $RUNS/$1/model ] && tar -C $RUNS --exclude=checkpoints -cf $OUT/$1.tar $1; }  # after each run
for stage in $STAGES; do
    case $stage in
    teacher1) train resshift --config configs/default/teacher_stage1.toml --out $RUNS/teacher1 "$@" ;;
    teacher) train resshift --config configs/default/teacher.toml --out $RUNS/teacher "$@" ;;  # from .carry/teacher_init
    teacher_base) train resshift --config configs/default/teacher_base.toml --out $RUNS/teacher_base "$@" ;;
    sinsr|rsd)
        [ -d $RUNS/teacher/model ] || tar -C $RUNS -xf .carry/teacher.tar
        train $stage --config configs/default/$stage.toml --teacher $RUNS/teacher --out $RUNS/$stage "$@" ;;
    esac
    keep $stage
done
ls -la $OUT
