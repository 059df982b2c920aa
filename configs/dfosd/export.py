"""Store the DFOSD study's runs (configs/dfosd/run.sh) as fp16 model folders under models/dfosd/ (loaded as fp32
by default), each with the resolved config of its run (training_config.toml): the prior and the five ablations.

    python configs/dfosd/export.py [RUNS] [MODELS]
"""

import shutil
import sys
from pathlib import Path

import torch

from instantsr.model import SRModel

runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs")
models = Path(sys.argv[2] if len(sys.argv) > 2 else "models/dfosd")
for name in ["prior", "nad_eadists", "none_eadists", "vanilla_eadists", "nad_dists", "nad_mse"]:
    run = runs / f"dfosd_{name}"
    model = SRModel.from_pretrained(run).to(torch.float16)
    shutil.rmtree(models / name, ignore_errors=True)
    model.save_pretrained(models / name)
    shutil.copy(run / "config.toml", models / name / "training_config.toml")
    size = sum(f.stat().st_size for f in (models / name).rglob("*")) / 2**20
    print(f"{models / name}: {sum(p.numel() for p in model.parameters()):,} parameters, {size:.1f} MiB")
