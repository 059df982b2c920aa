"""A DFOSD model with its adapter scaled: W = W_prior + s (W_dfosd - W_prior), the LoRA scale of diffusers'
`lora_scale` applied to the merged weights (s = 1: the model; s = 0: the prior read at T_L).

    python configs/dfosd/scale_adapter.py PRIOR_DIR DFOSD_RUN SCALE OUT_DIR
"""

import shutil
import sys
from pathlib import Path

import torch

from instantsr.model import SRModel

if len(sys.argv) != 5:
    sys.exit(__doc__)
prior_dir, run, scale, out = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
prior, dfosd = SRModel.from_pretrained(prior_dir), SRModel.from_pretrained(run)
base = prior.backbone.state_dict()
with torch.no_grad():
    for k, w in dfosd.backbone.state_dict().items():
        w.copy_(base[k] + scale * (w - base[k]))
dfosd.extra["adapter_scale"] = scale  # kept in model_index.json
dfosd.save_pretrained(out)
if (run / "config.toml").is_file():  # the run's resolved config, as configs/export_fp16.py keeps it
    shutil.copy(run / "config.toml", out / "training_config.toml")
