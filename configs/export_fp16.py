"""Store training runs as fp16 model folders (loaded as fp32 by default) for models/, each with the resolved
config of its run (training_config.toml), so that the tables in docs/ can be re-measured from the repository.

    python configs/export_fp16.py MODELS RUN[=NAME] ...     (NAME: the folder under MODELS; default the run's name)

RUN is a training run (RUN/model, RUN/config.toml) or a model folder (e.g. configs/dfosd/scale_adapter.py's, with
its training_config.toml). A run without an exported model is skipped with a line that says so.
"""

import shutil
import sys
from pathlib import Path

import torch

from instantsr.model import SRModel

if len(sys.argv) < 3:
    sys.exit(__doc__)
models = Path(sys.argv[1])
for spec in sys.argv[2:]:
    run, _, name = spec.partition("=")
    run = Path(run)
    name = name or run.name
    if not ((run / "model").is_dir() or (run / "model_index.json").is_file()):
        print(f"{run}: no model, skipped")
        continue
    model = SRModel.from_pretrained(run).to(torch.float16)
    shutil.rmtree(models / name, ignore_errors=True)
    model.save_pretrained(models / name)
    config = run / "config.toml" if (run / "config.toml").is_file() else run / "training_config.toml"
    shutil.copy(config, models / name / "training_config.toml")
    size = sum(f.stat().st_size for f in (models / name).rglob("*")) / 2**20
    print(f"{models / name}: {sum(p.numel() for p in model.parameters()):,} parameters, {size:.1f} MiB")
