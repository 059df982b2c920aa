"""How good is a VP model's x0 estimate at each t, against y itself? On degraded training crops (`--preset`,
by default Real-ESRGAN with a quarter bicubic, as `yonos_cpu.toml` trains): PSNR-Y of decode(x0_hat(x_t, t, y))
with x_t ~ q(x_t | x0) at several t, beside PSNR-Y of decode(y) (y: the latent of the bicubic upsample); and the
latent MSE against z0 = encode(HR) of x0_hat and of y, the quantity the loss minimises. The MSE-optimal x0 estimate
is at least as good as y at every t (y is one estimate); a model whose x0_hat at high t is worse than y is underfit
there, and its one-step sample (t = T-1) shows it.

    python configs/yonos/x0_by_t.py MODEL_DIR [MODEL_DIR ...] [--data DIR] [--crops 16] [--preset bicubic]
"""

import argparse

import torch

from instantsr.data import HRCropDataset, degrade_collate, degrade_pairs
from instantsr.diffusion.vp import q_sample
from instantsr.metrics import psnr
from instantsr.model import SRModel

p = argparse.ArgumentParser()
p.add_argument("models", nargs="+")
p.add_argument("--data", default="../shared/data/train")
p.add_argument("--crops", type=int, default=16)
p.add_argument("--t", default="10,200,500,999")
p.add_argument("--preset", default="realesrgan", help="the LR degradation (a quarter of the crops bicubic)")
args = p.parse_args()

torch.manual_seed(0)
data = HRCropDataset(args.data, crop=128)
items = [data[(i * 7 % len(data), i)] for i in range(args.crops)]
for folder in args.models:
    m = SRModel.from_pretrained(folder)
    hr, lr = degrade_pairs(degrade_collate(items, m.scale), "cpu", m.scale, args.preset, 0.25)  # a no-op for bicubic
    with torch.no_grad():
        cond = m.condition(lr)
        z = m.codec.encode(hr * 2 - 1)
        cells = []
        for t in (int(s) for s in args.t.split(",")):
            t_index = torch.full((len(items),), t)
            x0 = m.denoiser(q_sample(z, t_index, torch.randn_like(z), m.schedule), t_index, cond)
            mse = float((x0 - z).pow(2).mean())
            cells.append(f"t={t}: {float(psnr(m.decode(x0), hr).mean()):.2f} dB, {mse:.3f}")
        y_cell = f"{float(psnr(m.decode(cond.y), hr).mean()):.2f} dB, {float((cond.y - z).pow(2).mean()):.3f}"
        print(f"{folder}: y {y_cell} | x0_hat " + "; ".join(cells))
