"""Where along the 15-step deterministic chain does a teacher lose quality, and how much noise does it leave?

On the centre crops (64 px LR) of the first 20 RealSR x4 pairs, with one noise draw (seed 0):
  chain   the score (PSNR-Y / LPIPS / DISTS, 8-bit) of each step's x0_hat, from t index 14 (= one step) to 0
          (= the 15-step output);
  passed  the share of fresh noise that survives one pass at a low t index: x_t ~ q(x_t | x0, y) with x0 the
          HR latent, or the (smooth) one-step output; beta = <x0_hat - x0, noise> / (<noise, noise> sigma_t).
          An ideal denoiser leaves ~0 in flat areas; what survives at t index 0 is the 15-step output's grain.

Measured (2 CPU cores, about a minute a model). Bicubic on these crops: 27.13 / 0.422 / 0.254.
  x0_hat at t index   14 (= 1 step)            10                       3                        0 (= 15 steps)
  stage 6             27.23 / 0.342 / 0.243    27.19 / 0.309 / 0.251    26.86 / 0.344 / 0.269    26.56 / 0.440 / 0.292
  stage 7             27.29 / 0.335 / 0.240    27.25 / 0.305 / 0.246    27.06 / 0.336 / 0.257    26.77 / 0.444 / 0.287
  passed at t0 (sigma 0.04): 0.52 (stage 6) and 0.53 (stage 7), on the HR latent and on the one-step output
  alike; at t1 (sigma 0.23) 0.05-0.07, at t3 (0.47) 0.02-0.03.
So the chain is best near t index 10 and drifts from there, the last two steps most. At t index 0 the skip term
c_skip = 0.5 (sigma_data 0.04 equals the noise there) passes half the noise into the output, 2.7/255 of
grain, and the `small` UNet, 32 channels wide at full resolution against the latent's 48, cancels none of it.
Cancelling it would lower the x0 loss (uniform in t) by about 0.2%: a full-resolution convolutional head after
the UNet, trained 1,000 steps from stage 6, did not learn to either (0.53). Stage 7 (multi-scale HR: less
grain to learn from) drifts less at every t above 0, and the last step's grain is unchanged.

Run from the repository root: python docs/experiments/last_step_noise.py [MODEL_DIR]
"""

import sys

import torch

from instantsr.diffusion.resshift import deterministic_step, prior_sample, q_sample
from instantsr.metrics import MetricSuite
from instantsr.pipeline import load_model

from crops import realsr_crops  # beside this file

model = load_model(sys.argv[1] if len(sys.argv) > 1 else None)
schedule, suite = model.schedule, MetricSuite(["psnr", "lpips", "dists"])

lr, hr = realsr_crops(20, 64)


def score(x0: torch.Tensor) -> str:
    sr = ((model.codec.decode(x0) + 1) / 2).clamp(0, 1)
    return " / ".join(f"{float(v.mean()):.3f}" for v in suite((sr * 255).round() / 255, hr).values())


generator = torch.Generator().manual_seed(0)
with torch.no_grad():
    cond, y = model.condition(lr)
    x0_hr = model.codec.encode(hr * 2 - 1)
    noise = torch.randn(y.shape, generator=generator)
    x, one_step = prior_sample(y, noise, schedule), None
    print("chain: t index, x0_hat PSNR-Y / LPIPS / DISTS")
    for i in reversed(range(schedule.T)):
        t = torch.full((y.shape[0],), i)
        x0_hat = model.denoiser(x, t, (cond, y))
        one_step = x0_hat if one_step is None else one_step
        print(f"  t{i:<2d} {score(x0_hat)}", flush=True)
        x = deterministic_step(x, x0_hat, y, t, schedule)
    fresh = torch.randn(y.shape, generator=generator)
    for name, x0 in (("HR latent", x0_hr), ("one-step output", one_step)):
        for i in (0, 1, 3):
            t, sigma = torch.full((y.shape[0],), i), float(schedule.kappa * schedule.sqrt_etas[i])
            residual = model.denoiser(q_sample(x0, y, t, fresh, schedule), t, (cond, y)) - x0
            beta = float((residual * fresh).mean() / fresh.square().mean() / sigma)
            print(f"passed  {name:15s} t{i} (sigma {sigma:.3f}): {beta:.3f}")
