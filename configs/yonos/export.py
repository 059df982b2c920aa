"""Store the runs of configs/yonos/run.sh as the fp16 model folders under models/yonos/ (loaded as fp32 by
default), each with the resolved config of its run (training_config.toml); models/yonos/README.md has the commands.

    python configs/yonos/export.py [RUNS] [MODELS] [PREFIX]

PREFIX is run.sh's P (yonos; yonos_px for the pixel-space study); a run that is not there (no decoder fine-tune
in the pixel-space study) is skipped.
"""

import shutil
import sys
from pathlib import Path

import torch

from instantsr.model import SRModel

runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs")
models = Path(sys.argv[2] if len(sys.argv) > 2 else "models/yonos")
prefix = sys.argv[3] if len(sys.argv) > 3 else "yonos"
for run, name in [("x4_direct", "x4_direct"), ("x4", "x4_distilled"), ("x4_decoder", "x4_distilled_decoder"),
                  ("x8_direct", "x8_direct"), ("x8", "x8_distilled")]:
    run = f"{prefix}_{run}"
    if not (runs / run / "model").is_dir():
        print(f"{runs / run}: no model, skipped")
        continue
    model = SRModel.from_pretrained(runs / run).to(torch.float16)
    if (models / name).exists():
        shutil.rmtree(models / name)
    model.save_pretrained(models / name)
    shutil.copy(runs / run / "config.toml", models / name / "training_config.toml")
    size = sum(f.stat().st_size for f in (models / name).rglob("*")) / 2**20
    print(f"{models / name}: {sum(p.numel() for p in model.parameters()):,} parameters, {size:.1f} MiB")
