#!/usr/bin/env bash
# The learned decoder of docs/decoder.md on 2 CPU cores, one run per core: the validation split, then the decoder
# on the ResShift teacher (models/teacher) and on the DFOSD default of issue 21 (models/dfosd/default_0.8), each
# the same recipe (configs/decoder/decoder_cpu.toml). Re-running resumes both runs.
#   bash configs/decoder/run.sh [extra train arguments]
# DATA, SPLIT and RUNS come from the environment.
set -euo pipefail
DATA=${DATA:-../shared/data/train}
SPLIT=${SPLIT:-.carry/split}
RUNS=${RUNS:-runs}
export OMP_NUM_THREADS=1
EXTRA=("$@")
[ -d $SPLIT/val_bicubic ] || python configs/validation/split.py "$DATA" $SPLIT
for spec in "teacher models/teacher" "dfosd models/dfosd/default_0.8"; do
    set -- $spec
    instantsr train decoder --config configs/decoder/decoder_cpu.toml --model $2 --data $SPLIT/train \
        --out $RUNS/decg_$1 --time-limit 45 "${EXTRA[@]}" > $RUNS/decg_$1.out 2>&1 &
done
wait
