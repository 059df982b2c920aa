"""Why the shipped teacher gets worse with more steps: its x0 estimate keeps the noise that the skip passes.

The denoiser is x0_hat = y + c_skip (x_t - y) + c_out net(...) (docs/research.md, "Residual preconditioning"). The skip
term carries c_skip * kappa * sqrt(eta_t) * eps of the noise eps in x_t; the network has to cancel it. This
script takes 16 training photos (384 px centre crops) through the training degradation, draws x_t at every t,
and prints per t: the x0 MSE, and the regression coefficient of the error x0_hat - x0 on eps (0 when the noise
is cancelled) beside what the skip passes. It also prints the std of x0 - y, the residual that sigma_data
stands for (0.2 in the shipped recipe).

Measured on the stage-3 teacher, the default model of commit 9fc35f5 (about a minute on 2 CPU cores):
  std of x0 - y: 0.115
  t  0: x0 MSE 0.0015, noise coefficient 0.038 (the skip passes 0.038)
  t  1: x0 MSE 0.0107, noise coefficient 0.095 (0.099): the noise is 0.0090 of the 0.0107
  t  4: x0 MSE 0.0079, noise coefficient 0.054 (0.057)
  t 14: x0 MSE 0.0118, noise coefficient -0.002 (0.000)
So the network cancels almost none of the passed noise at any t; without that noise its x0 error at t 1 would
be 0.0017, far below its 0.0079 at t 4. Each step of a multi-step sampler adds that noise back as texture.
sigma_data = 0.2 is also well above the 0.115 measured on these crops, which makes c_skip, and the passed noise, about
twice as large as the linear estimate for this residual would (0.42 against 0.19 at t 1).
The stage-4 teacher (the session-4 default: sigma_data 0.115, 20 CPU minutes from stage 3) gives x0 MSE
0.0013 / 0.0045 / 0.0047 / 0.0052 / 0.0058 at t 0-4 and 0.0117 at t 14; it still cancels none of the noise it
is passed (coefficient 0.046 against 0.045 at t 1), but it is passed half as much.

Run from the repository root: python docs/experiments/teacher_noise.py
"""

from pathlib import Path

import torch

from instantsr.degrade import make_lr
from instantsr.diffusion.resshift import q_sample, skip_scalings
from instantsr.io import read_image
from instantsr.model import encode_condition
from instantsr.pipeline import Upscaler

model = Upscaler.from_pretrained().model
photos = sorted((Path(__file__).resolve().parents[3] / "shared/data/train/photos").iterdir())[:16]
crops = []
for path in photos:
    image = read_image(path).rgb
    top, left = (image.shape[-2] - 384) // 2, (image.shape[-1] - 384) // 2
    crops.append(image[:, top:top + 384, left:left + 384])
hr = torch.stack(crops)
lr = make_lr(hr, 4, "realesrgan", torch.Generator().manual_seed(1))
x0 = model.codec.encode(hr * 2 - 1)
cond, y = encode_condition(model.codec, lr, 4)
noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
print(f"std of x0 - y: {(x0 - y).std():.3f}")
with torch.no_grad():
    for t in range(model.schedule.T):
        t_index = torch.full((x0.shape[0],), t)
        error = model.denoiser(q_sample(x0, y, t_index, noise, model.schedule), t_index, (cond, y)) - x0
        coefficient = float((error * noise).mean() / noise.square().mean())
        c_skip, _ = skip_scalings(t_index[:1], model.schedule, model.sigma_data, x0[:1])
        passed = float(c_skip.flatten()[0]) * model.schedule.kappa * float(model.schedule.sqrt_etas[t])
        print(f"t {t:2d}: x0 MSE {error.square().mean():.4f}, noise coefficient {coefficient:.3f} "
              f"(the skip passes {passed:.3f}), noise part of the MSE {coefficient ** 2:.4f}")
