"""Checkpoints of a DFOSD run as one-step model folders, to be scored on the validation split (the run's own
export is its last step only): the generator's EMA weights of each checkpoint, LoRA merged.

    python configs/dfosd/checkpoints.py RUN OUT [--every 100]   -> OUT/step_0000100/, OUT/step_0000200/, ...
"""

import argparse
import copy
import dataclasses
from pathlib import Path

from safetensors.torch import load_file

from instantsr.config import read_config
from instantsr.methods.dfosd import DFOSDConfig, DFOSDRecipe
from instantsr.train import EMA, dataclass_from_dict, merge_lora

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("run")
ap.add_argument("out")
ap.add_argument("--every", type=int, default=1, help="only the checkpoints whose step is a multiple of this")
args = ap.parse_args()
run, out = Path(args.run), Path(args.out)
raw = read_config(run / "config.toml")
# the generator alone: no discriminator to copy, no perceptual network to load
config = dataclasses.replace(dataclass_from_dict(DFOSDConfig, raw["dfosd"]), discriminator="none", perceptual="mse")
recipe = DFOSDRecipe(config)
for ckpt in sorted((run / "checkpoints").glob("step_*")):
    step = int(ckpt.name.split("_")[1])
    if step % args.every or not (ckpt / "state.json").is_file():
        continue
    ema = EMA(recipe.generator, 0.0)
    ema.shadow = load_file(str(ckpt / "ema.safetensors"))
    generator = copy.deepcopy(recipe.generator)
    ema.copy_to(generator)
    recipe.sr_model(merge_lora(generator)).save_pretrained(out / ckpt.name)
    print(out / ckpt.name)
