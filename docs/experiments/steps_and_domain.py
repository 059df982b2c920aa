"""Does a teacher get worse with more steps everywhere, or only on real photos? 1 vs 4 vs 15 steps, three inputs.

Scores (PSNR-Y / SSIM-Y / LPIPS / DISTS, outputs rounded to 8 bits) bicubic and a teacher at 1 step, 4 and 15
deterministic steps and 15 stochastic steps (seed 0) on:
  realsr      centre crops (96 px LR) of the first 20 RealSR x4 pairs: real camera LR;
  train-resr  16 training photos (256 px centre crops) through the training degradation (Real-ESRGAN);
  train-bic   the same crops, plain bicubic-downscaled: the mildest LR there is.
If the steps hurt on realsr and train-bic but not on train-resr, the sampler is sound and the model
over-restores LR milder than it was trained on (more steps, more of it).

Measured (2 CPU cores, 4-20 minutes a model depending on what else runs), PSNR-Y / LPIPS / DISTS:
                      bicubic                1 step                 15 det                 15 stoch
  stage 5 realsr      26.53 / 0.439 / 0.254  26.23 / 0.369 / 0.246  24.41 / 0.421 / 0.302  22.55 / 0.393 / 0.309
  stage 5 train-resr  26.80 / 0.664 / 0.367  29.13 / 0.444 / 0.317  28.58 / 0.436 / 0.319  28.02 / 0.415 / 0.320
  stage 5 train-bic   37.25 / 0.251 / 0.184  33.41 / 0.252 / 0.217  30.96 / 0.328 / 0.276  30.24 / 0.302 / 0.273
  stage 6 realsr                             26.71 / 0.354 / 0.238  26.18 / 0.455 / 0.288  24.91 / 0.406 / 0.288
  stage 6 train-resr                         29.00 / 0.463 / 0.322  28.50 / 0.449 / 0.327  28.33 / 0.419 / 0.317
  stage 6 train-bic                          34.81 / 0.220 / 0.187  32.72 / 0.284 / 0.242  33.02 / 0.242 / 0.227
Stage 5 (Real-ESRGAN LR only) holds up at 15 steps on its training degradation and breaks down on the milder
two; stage 6 (a quarter bicubic LR) is better on both, still worst at 15 steps (docs/research.md, "Known problems").

Run from the repository root: python docs/experiments/steps_and_domain.py [MODEL_DIR]
"""

import sys

import torch

from instantsr.degrade import make_lr, quantize
from instantsr.imresize import bicubic_upscale
from instantsr.io import read_image
from instantsr.metrics import MetricSuite
from instantsr.pipeline import Upscaler

from crops import centre, realsr_crops, shared  # beside this file

upscaler = Upscaler.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else None)
suite = MetricSuite(["psnr", "ssim", "lpips", "dists"])


def training_crops(n: int = 16, size: int = 256) -> torch.Tensor:
    crops = []
    for f in sorted((shared / "train/photos").iterdir())[-n:]:
        image = read_image(f).rgb
        top, left = centre(image, size)
        crops.append(image[:, top:top + size, left:left + size])
    return torch.stack(crops)


hr_train = training_crops()
inputs = {"realsr": realsr_crops(),
          "train-resr": (make_lr(hr_train, 4, "realesrgan", torch.Generator().manual_seed(1)), hr_train),
          "train-bic": (make_lr(hr_train, 4, "bicubic"), hr_train)}
settings = {"1 step": dict(steps=1, seed=0), "4 det": dict(steps=4, sampler="deterministic", seed=0),
            "15 det": dict(steps=15, sampler="deterministic", seed=0),
            "15 stoch": dict(steps=15, sampler="stochastic", seed=0)}
print("| input | output | PSNR-Y | SSIM-Y | LPIPS | DISTS |\n|---|---|---|---|---|---|")
for name, (lr, hr) in inputs.items():
    outputs = {"bicubic": bicubic_upscale(lr, 4)}
    outputs.update({label: upscaler.upscale_tensor(lr, batch_size=8, **kw) for label, kw in settings.items()})
    for label, sr in outputs.items():
        scores = suite(quantize(sr), hr)
        print(f"| {name} | {label} | " + " | ".join(f"{float(v.mean()):.4f}" for v in scores.values()) + " |",
              flush=True)
