"""Pick DFOSD's T_L for a prior by measuring its one-step output from z_L (Eq. 1, no LoRA yet) against the HR
crops, on Real-ESRGAN-degraded crops of the training photos (not a test set). The paper gives no T_L for SD; a
prior of ours reads z_L as the noisy latent x_t, so T_L should be where x_t looks most like z_L.

    python configs/dfosd/pick_t_l.py PRIOR_DIR [DATA_DIR] [--crops 48] [--export DIR]

Prints PSNR and LPIPS-Alex of decode(z_hat) per candidate T_L and picks the one of best LPIPS among those within
0.5 dB PSNR-Y of the best PSNR (a perceptual method's start that keeps the fidelity; the issue's tolerance);
`--export DIR` writes that start as a model folder (the DFOSD generator before any training: zero LoRA).
"""

import argparse

import numpy as np
import torch

from instantsr.data import HRCropDataset, degrade_collate, degrade_pairs
from instantsr.metrics import LPIPS, psnr
from instantsr.model import SRModel

p = argparse.ArgumentParser()
p.add_argument("prior")
p.add_argument("data", nargs="?", default="../shared/data/train")
p.add_argument("--crops", type=int, default=48)
p.add_argument("--candidates", help="comma-separated T_L; default 1,5,...,999 for a VP prior, every index for "
               "a ResShift one")
p.add_argument("--export", help="write the prior at the picked T_L as a one-step model folder (vp_lr, resshift_lr)")
args = p.parse_args()

prior = SRModel.from_pretrained(args.prior)
data = HRCropDataset(args.data, crop=128, scales=(1.0, 0.75, 0.5))
rng = np.random.default_rng(0)
items = [data[(int(i), k)] for k, i in enumerate(rng.choice(len(data), args.crops, replace=len(data) < args.crops))]
hr, lr = degrade_pairs(degrade_collate(items, prior.scale), "cpu", prior.scale, "realesrgan", 0.25)
lpips = LPIPS("alex")
with torch.no_grad():
    cond = prior.condition(lr)
    if args.candidates:
        candidates = [int(c) for c in args.candidates.split(",")]
    elif prior.family.startswith("resshift"):
        candidates = list(range(prior.schedule.T))
    else:
        candidates = [1, 5, 10, 20, 50, 100, 200, 400, 700, 999]
    rows = []
    for t_l in candidates:
        t = torch.full((hr.shape[0],), t_l, dtype=torch.long)
        sr = prior.decode(prior.denoiser(cond.y, t, cond))  # z_L read as x_{T_L}, no noise added
        rows.append((t_l, float(psnr(sr, hr).mean()), float(lpips(sr, hr).mean())))
    z_l = prior.decode(cond.y)
    print(f"z_L itself (bicubic): PSNR-Y {float(psnr(z_l, hr).mean()):.2f}  LPIPS {float(lpips(z_l, hr).mean()):.4f}")
for t_l, ps, lp in rows:
    print(f"T_L {t_l:4d}: PSNR-Y {ps:.2f}  LPIPS {lp:.4f}")
top = max(r[1] for r in rows)
best = min((r for r in rows if r[1] >= top - 0.5), key=lambda r: r[2])[0]
if args.export:
    from instantsr.methods.dfosd import DFOSDConfig, DFOSDRecipe
    from instantsr.train import merge_lora

    start = DFOSDRecipe(DFOSDConfig(prior=args.prior, t_l=best, discriminator="none", perceptual="mse"), prior=prior)
    merge_lora(start.sr_model()).save_pretrained(args.export)  # LoRA's B is zero: the prior's own weights
print("best T_L:", best)
