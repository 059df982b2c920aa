"""Every checkpoint of a decoder run as a model folder, to be scored on the validation split (the run's own
export is its last step only).

    python configs/decoder/checkpoints.py RUN OUT      -> OUT/step_0000100/, OUT/step_0000200/, ...

Each folder is the run's frozen model (its `[decoder] model`) with the decoder's EMA weights of that step.
"""

import sys
from pathlib import Path

from safetensors.torch import load_file

from instantsr.config import read_config
from instantsr.methods.decoder import DecoderConfig, trainable_decoder
from instantsr.model import SRModel
from instantsr.train import dataclass_from_dict

if len(sys.argv) != 3:
    sys.exit(__doc__)
run, out = Path(sys.argv[1]), Path(sys.argv[2])
raw = read_config(run / "config.toml")
config = dataclass_from_dict(DecoderConfig, raw[raw["method"]])
for ckpt in sorted((run / "checkpoints").glob("step_*")):
    model = SRModel.from_pretrained(config.model)
    trainable_decoder(model, config).load_state_dict(load_file(str(ckpt / "ema.safetensors")))
    model.save_pretrained(out / ckpt.name)
    print(out / ckpt.name)
