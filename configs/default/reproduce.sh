#!/usr/bin/env bash
# The exact recipe of the shipped default model (instantsr/default_model) and of the tables in MODEL_CARD.md.
# Run from the repository root with ../shared/data beside it. 2 CPU cores: about 35 + 30 minutes of training.
set -euo pipefail
DATA=../shared/data
instantsr weights fetch

# 1. the ResShift teacher (stops after 35 minutes, see time_limit_min)
instantsr train resshift --config configs/default/teacher.toml --data $DATA/train --out runs/teacher \
    --val-lr $DATA/test/imagenet256/lq --val-hr $DATA/test/imagenet256/gt
# 2. its SinSR student
instantsr train sinsr --config configs/default/sinsr.toml --teacher runs/teacher --data $DATA/train --out runs/sinsr \
    --val-lr $DATA/test/imagenet256/lq --val-hr $DATA/test/imagenet256/gt
# 3. RealSR x4: bicubic, the teacher at 15 (stochastic, deterministic) and 1 step, the student
LR=$DATA/test/realsr/lr HR=$DATA/test/realsr/hr OUT=runs/realsr
instantsr upscale -i $LR -o $OUT/teacher15_stochastic -m runs/teacher/model --steps 15 --sampler stochastic --seed 0
instantsr upscale -i $LR -o $OUT/teacher15_deterministic -m runs/teacher/model --steps 15 --sampler deterministic
instantsr upscale -i $LR -o $OUT/teacher1 -m runs/teacher/model --steps 1
instantsr upscale -i $LR -o $OUT/sinsr1 -m runs/sinsr/model --seed 0
instantsr eval --baseline bicubic --lr $LR --hr $HR --json $OUT/bicubic.json
for m in teacher15_stochastic teacher15_deterministic teacher1 sinsr1; do
    instantsr eval --sr $OUT/$m --hr $HR --json $OUT/$m.json
done
# 4. ship the student
rm -rf instantsr/default_model && cp -r runs/sinsr/model instantsr/default_model
