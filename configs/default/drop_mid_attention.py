"""The shipped default without its mid-block self-attention (issue 19): the stage-7 teacher's weights, the
attention's 66,304 parameters left out, stored in fp16.

That attention made time and memory grow with the square of the area (at the lowest resolution it attends over
every position of the whole image) and was worth nothing measurable (docs/experiments/local_statistics.py; the
bench in MODEL_CARD.md re-measures the result). Without it every layer is a convolution or a per-pixel operation,
so the cost is linear in the pixels and `--tile` stays exact.

    python configs/default/drop_mid_attention.py OLD_MODEL_DIR NEW_MODEL_DIR
    (OLD_MODEL_DIR: `git checkout 248f042 -- instantsr/default_model` gives the model with the attention)
"""

import sys

import torch

from instantsr.model import SRModel
from instantsr.nets.unet import ConditionalUNet

src, dst = sys.argv[1], sys.argv[2]
model = SRModel.from_pretrained(src)
config = {k: v for k, v in model.backbone.config.items() if not k.startswith("_")}
state = {k: v for k, v in model.backbone.state_dict().items() if ".attentions." not in k}
backbone = ConditionalUNet(**{**config, "mid_attention": False})
backbone.load_state_dict(state, strict=True)  # every other tensor carries over unchanged
model.backbone = backbone.to(torch.float16)
model.save_pretrained(dst)
print(f"wrote {dst}: {sum(p.numel() for p in backbone.parameters()):,} parameters")
