"""A model folder with the learned decoder of a decoder-run checkpoint put on another model of the same codec
(e.g. the decoder trained on DFOSD at adapter scale 0.8, on the same DFOSD at another scale).

    python configs/decoder/with_decoder.py MODEL CHECKPOINT OUT      (CHECKPOINT: RUN/checkpoints/step_N)
"""

import sys
from pathlib import Path

from safetensors.torch import load_file

from instantsr.methods.decoder import DecoderConfig, trainable_decoder
from instantsr.model import SRModel

if len(sys.argv) != 4:
    sys.exit(__doc__)
model, ckpt, out = SRModel.from_pretrained(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
trainable_decoder(model, DecoderConfig()).load_state_dict(load_file(str(ckpt / "ema.safetensors")))
model.save_pretrained(out)
print(out)
