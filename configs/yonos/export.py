"""Store the runs of configs/yonos/run.sh as the fp16 model folders under models/yonos/ (loaded as fp32 by
default), each with the resolved config of its run (training_config.toml); models/yonos/README.md has the commands.

    python configs/yonos/export.py [RUNS] [MODELS]
"""

import shutil
import sys
from pathlib import Path

import torch

from instantsr.model import SRModel

runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs")
models = Path(sys.argv[2] if len(sys.argv) > 2 else "models/yonos")
for run, name in [("yonos_x4_direct", "x4_direct"), ("yonos_x4", "x4_distilled"),
                  ("yonos_x4_decoder", "x4_distilled_decoder"), ("yonos_x8_direct", "x8_direct"),
                  ("yonos_x8", "x8_distilled")]:
    model = SRModel.from_pretrained(runs / run).to(torch.float16)
    if (models / name).exists():
        shutil.rmtree(models / name)
    model.save_pretrained(models / name)
    shutil.copy(runs / run / "config.toml", models / name / "training_config.toml")
    size = sum(f.stat().st_size for f in (models / name).rglob("*")) / 2**20
    print(f"{models / name}: {sum(p.numel() for p in model.parameters()):,} parameters, {size:.1f} MiB")
