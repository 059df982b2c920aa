"""Give a KL codec trained here unit-variance latents, as Stable Diffusion's VAE does with 0.18215: measure the
standard deviation of its latents on random training crops and store scaling_factor = 1 / std in its folder.
The VP schedule assumes data of about unit variance (the prior N(0, I) and the SNR of each step are set by it).

    python configs/yonos/latent_scale.py CODEC_DIR HR_DIR [CROPS]
"""

import sys

import torch

from instantsr.codecs import KLCodec
from instantsr.data import HRCropDataset

folder, data = sys.argv[1], sys.argv[2]
crops = int(sys.argv[3]) if len(sys.argv) > 3 else 256
codec = KLCodec.from_pretrained(folder).eval()
dataset = HRCropDataset(data, crop=128, scales=(1.0, 0.75, 0.5))
generator = torch.Generator().manual_seed(0)
picks = torch.randint(len(dataset), (crops,), generator=generator).tolist()
images = [dataset[(i, seed)][0] for seed, i in enumerate(picks)]  # (file, seed): reproducible crops
with torch.no_grad():
    latents = torch.cat([codec.encode(torch.stack(images[j:j + 32]) * 2 - 1) for j in range(0, crops, 32)])
std = float(latents.std() / codec.config.scaling_factor)
codec.register_to_config(scaling_factor=1 / std)
codec.vae.register_to_config(scaling_factor=1 / std)
codec.save_pretrained(folder)
print(f"{folder}: latent std {std:.4f} over {crops} crops of 128 px; scaling_factor = {1 / std:.5f}")
