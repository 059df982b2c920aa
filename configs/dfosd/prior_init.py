"""The warm start of our VP prior for DFOSD: the shipped default's ResShift UNet carried over to a YONOS-layout x4
VP model on the pixel-unshuffle latent (concat(z_t, y), y the 48-channel latent of the bicubic-upsampled LR).

The paper starts its prior from Stable Diffusion's weights; we have none, so the prior starts from the best
network we have and is then trained as a VP model (`configs/dfosd/prior_cpu.toml`). Every weight carries over
but the input convolution's condition columns: the default reads the LR image (3 channels), the VP model y, whose
16 channels per colour are the pixel-unshuffled bicubic upsample, each close to the LR pixel. Each LR column is
spread over its colour's 16 y columns (divided by 16), so the new net first reads y as the old one read the LR.

    python configs/dfosd/prior_init.py runs/dfosd_prior_init [--scale S]

`--scale 2` or `8` writes the same net as a x2 or x8 model on the same latent (pixel_unshuffle:4): the warm start
of the pixel-space YONOS-SR study (configs/yonos/pixel_cpu.toml).
"""

import argparse

import torch

from instantsr.codecs import PixelUnshuffleCodec
from instantsr.diffusion.vp import VPSchedule
from instantsr.model import SRModel
from instantsr.nets.unet import ConditionalUNet
from instantsr.pipeline import DEFAULT_MODEL_DIR

p = argparse.ArgumentParser()
p.add_argument("out", nargs="?", default="runs/dfosd_prior_init")
p.add_argument("--scale", type=int, default=4, choices=[2, 4, 8])
args = p.parse_args()
default = SRModel.from_pretrained(DEFAULT_MODEL_DIR)
old = default.backbone
cfg = {k: v for k, v in old.config.items() if not k.startswith("_")}
latent, f2 = cfg["latent_channels"], default.scale**2
net = ConditionalUNet(**{**cfg, "cond_channels": latent})
state = old.state_dict()
w = state["unet.conv_in.weight"]  # (out, latent + 3, 3, 3)
y_cols = w[:, latent:].repeat_interleave(f2, dim=1) / f2  # pixel_unshuffle orders channels colour-major
state["unet.conv_in.weight"] = torch.cat([w[:, :latent], y_cols], 1)
net.load_state_dict(state)
model = SRModel(net, PixelUnshuffleCodec(factor=default.scale), VPSchedule(), scale=args.scale, method="yonos",
                family="vp", parameterization="v", steps=1, sampler="ddim")
model.save_pretrained(args.out)
print(f"wrote {args.out} (x{args.scale})")
