#!/usr/bin/env bash
# The DFOSD study of docs/dfosd.md on 2 CPU cores: the VP prior, then the ablation runs, two at a time (one core
# each, or JOBS at a time), every run at the same budget (configs/dfosd/dfosd_cpu.toml). Re-running resumes every run.
# `default`: the method on the ResShift teacher (the default until issue 21) as the prior (default_cpu.toml).
#   bash configs/dfosd/run.sh [prior|ablations|all|default] [extra train arguments]
# DATA, RUNS and T_L (the prior's T_L: configs/dfosd/pick_t_l.py prints it) come from the environment.
set -euo pipefail
DATA=${DATA:-../shared/data/train}
RUNS=${RUNS:-runs}
mode=${1:-all}
shift || true
EXTRA=("$@")
export OMP_NUM_THREADS=1

prior() {
    [ -f $RUNS/dfosd_prior_init/model_index.json ] || python configs/dfosd/prior_init.py $RUNS/dfosd_prior_init
    instantsr train yonos --config configs/dfosd/prior_cpu.toml --data "$DATA" --out $RUNS/dfosd_prior \
        --set init=\"$RUNS/dfosd_prior_init\" "${EXTRA[@]}"
}
run() {  # run NAME DISCRIMINATOR PERCEPTUAL
    instantsr train dfosd --config configs/dfosd/dfosd_cpu.toml --data "$DATA" --out $RUNS/dfosd_$1 \
        --prior $RUNS/dfosd_prior/model --set t_l=${T_L:?set T_L (configs/dfosd/pick_t_l.py)} \
        --set discriminator=$2 --set perceptual=$3 "${EXTRA[@]}" > $RUNS/dfosd_$1.log 2>&1
}
ablations() {  # JOBS runs at a time (default 2: one per core)
    local spec
    for spec in "nad_eadists nad ea-dists" "none_eadists none ea-dists" "vanilla_eadists vanilla ea-dists" \
                "nad_dists nad dists" "nad_mse nad mse"; do
        while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-2}" ]; do wait -n; done
        run $spec &
    done
    wait
}
on_default() {  # DFOSD with the ResShift teacher (models/teacher) as the prior, T_L in default_cpu.toml, at two
    # weights of the perceptual term (lambda2 = 1 over-sharpened: docs/dfosd.md)
    local spec
    for spec in "eadists_0.3 0.3" "eadists_0.1 0.1"; do
        set -- $spec
        instantsr train dfosd --config configs/dfosd/default_cpu.toml --data "$DATA" --out $RUNS/dfosd_default_$1 \
            --set perceptual_weight=$2 "${EXTRA[@]}" > $RUNS/dfosd_default_$1.log 2>&1 &
    done
    wait
}
case $mode in
prior) prior ;;
ablations) ablations ;;
all) prior; T_L=${T_L:-$(python configs/dfosd/pick_t_l.py $RUNS/dfosd_prior/model "$DATA" | awk '/best T_L/ {print $NF}')}
     export T_L; ablations ;;
default) on_default ;;
*) echo "usage: run.sh [prior|ablations|all|default] [train arguments]" >&2; exit 2 ;;
esac
