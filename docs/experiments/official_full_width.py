"""Full-width official-layout checkpoints with random weights (ResShift's Swin-UNet, 118.6M parameters, and its
VQ-f4 autoencoder, 55.3M: the released files' shapes) and LR photos of 80x48 and 200x160 px, to measure time and
peak memory of `instantsr convert` + `instantsr upscale` at real size without the released files:

    python docs/experiments/official_full_width.py OUT_DIR
    cd OUT_DIR && instantsr convert --unet SinSR_v1.pth --autoencoder autoencoder_vq_f4.pth --method sinsr -o sinsr_full
    /usr/bin/time -v instantsr upscale -m sinsr_full -i lr_200x160.png -o out_200x160.png

(docs/upscaling.md has the figures.) The weights are random, so the pictures mean nothing; time and memory do.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from instantsr.nets.swin_unet import ResShiftSwinUNet
from instantsr.nets.vqgan import ResShiftVQGAN

out = Path(sys.argv[1] if len(sys.argv) > 1 else "official_full_width")
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
torch.save({"state_dict": ResShiftSwinUNet().state_dict()}, out / "SinSR_v1.pth")  # the official defaults
torch.save({"state_dict": ResShiftVQGAN().state_dict()}, out / "autoencoder_vq_f4.pth")
photo = Image.open(Path(__file__).resolve().parents[2] / "examples" / "hr" / "aitzgorri.png").convert("RGB")
for w, h in ((80, 48), (200, 160)):
    Image.fromarray(np.asarray(photo.resize((w, h), Image.BICUBIC))).save(out / f"lr_{w}x{h}.png")
print(out)
