"""Checkpoints of a decoder run as model folders, to be scored on the validation split (the run's own export is
its last step only), or one checkpoint's decoder put on another model of the same codec (e.g. the decoder trained
on DFOSD at adapter scale 0.8, on the same DFOSD at another scale).

    python configs/decoder/checkpoints.py RUN OUT                     -> OUT/step_0000100/, OUT/step_0000200/, ...
    python configs/decoder/checkpoints.py RUN OUT --step 480 --onto MODEL     -> OUT (MODEL with that decoder)

Each folder is the frozen model (the run's `[decoder] model`, or MODEL) with the decoder's EMA weights of that step.
"""

import argparse
from pathlib import Path

from safetensors.torch import load_file

from instantsr.config import read_config
from instantsr.methods.decoder import DecoderConfig, trainable_decoder
from instantsr.model import SRModel
from instantsr.train import dataclass_from_dict

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("run")
ap.add_argument("out")
ap.add_argument("--step", type=int, help="one checkpoint, written to OUT itself")
ap.add_argument("--onto", help="the model to put the decoder on (default: the run's own)")
args = ap.parse_args()
run, out = Path(args.run), Path(args.out)
raw = read_config(run / "config.toml")
config = dataclass_from_dict(DecoderConfig, raw[raw["method"]])
ckpts = [run / "checkpoints" / f"step_{args.step:07d}"] if args.step else sorted((run / "checkpoints").glob("step_*"))
for ckpt in ckpts:
    model = SRModel.from_pretrained(args.onto or config.model)
    trainable_decoder(model, config).load_state_dict(load_file(str(ckpt / "ema.safetensors")))
    folder = out if args.step else out / ckpt.name
    model.save_pretrained(folder)
    print(folder)
