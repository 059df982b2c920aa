"""Does more width at full latent resolution cancel the last step's grain? A convolutional branch beside the
frozen teacher's UNet, trained alone.

last_step_noise.py found that the teacher's x0 estimate at t index 0 passes about half the fresh noise
(c_skip = 0.5 there) and that the `small` UNet, 32 channels wide at full resolution against the latent's 48,
cancels none of it. Here a branch of 5 full-resolution 3x3 convolutions (64 wide; input: the scaled x_t, the
LR image, the UNet's output and t / (T-1); last convolution zero-initialised, so training starts from the
teacher exactly) adds to the frozen UNet's output. It trains on the teacher's own data recipe (Real-ESRGAN
degradation, a quarter bicubic, multi-scale HR, 128 px crops, batch 32) with the x0 MSE, each sample weighted
by 1 / (the frozen teacher's MSE on it), so that the small-t samples, whose errors are ten times smaller,
count as much as the rest (ResShift weights all t alike; this is the experiment's choice).

Measured on the stage-7 teacher (runs/teacher7/model, the shipped default's weights), 40 min on 2 CPU cores,
2,984 steps; the weighted loss fell to 0.972 of the teacher's. Then, on the 20 RealSR centre crops (96 px LR)
of the README's "Known problems" table, seed 0, PSNR-Y / LPIPS / DISTS (bicubic 26.53 / 0.439 / 0.254):
                    1 step                   4 det                    15 det                   15 stoch
  stage 7           26.80 / 0.348 / 0.234    26.63 / 0.417 / 0.271    26.39 / 0.464 / 0.284    25.08 / 0.407 / 0.288
  + branch          26.91 / 0.353 / 0.233    26.73 / 0.412 / 0.270    26.55 / 0.460 / 0.282    25.15 / 0.402 / 0.286
  passed noise on the HR latent at t0 / t1 / t3: 0.529 / 0.066 / 0.028 (stage 7: 0.53 / 0.05-0.07 / 0.02-0.03)
So the branch improves every step count by a little and cancels none of the last step's noise: width at full
resolution is not what is missing, at least not at this training length. The passed share may be close to what
an x0 MSE estimate can do at that noise level (0.04, about 5/255 per pixel, where the photos' finest detail looks
like noise; untested). The official ResShift decodes through VQ-f4, whose quantiser snaps small latent noise to
the codebook; the exact pixel-unshuffle latent has nothing that would.

Run from the repository root (writes a safetensors file of the branch's weights):
  python docs/experiments/full_res_branch.py train runs/branch.safetensors 40 [MODEL_DIR]
  python docs/experiments/full_res_branch.py eval runs/branch.safetensors [MODEL_DIR]
"""

import sys
import time

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from instantsr.data import HRCropDataset, StepSampler, degrade_collate, degrade_pairs
from instantsr.diffusion.resshift import ResShiftDenoiser, q_sample
from instantsr.metrics import MetricSuite
from instantsr.model import encode_condition
from instantsr.pipeline import Upscaler, load_model

from crops import realsr_crops, shared  # beside this file


class Branch(nn.Module):
    """Full-resolution convolutions on (scaled x_t, LR, the UNet's output, t / (T-1)) -> a correction."""

    def __init__(self, latent: int = 48, cond: int = 3, width: int = 64, depth: int = 4, T: int = 15):
        super().__init__()
        layers = [nn.Conv2d(2 * latent + cond + 1, width, 3, padding=1), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.SiLU()]
        self.body, self.out, self.T = nn.Sequential(*layers), nn.Conv2d(width, latent, 3, padding=1), T
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x, t, lq, base):
        t_map = (t.float() / (self.T - 1)).view(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[-2:])
        return self.out(self.body(torch.cat([x, lq, base, t_map], 1)))


class WithBranch(nn.Module):
    """The frozen backbone's output plus the branch's correction (the backbone signature of ResShiftDenoiser)."""

    def __init__(self, backbone, branch):
        super().__init__()
        self.backbone, self.branch = backbone, branch

    def forward(self, x, t_index, lq):
        t = t_index.expand(x.shape[0]) if t_index.ndim == 0 else t_index
        with torch.no_grad():
            base = self.backbone(x, t, lq)
        return base + self.branch(x, t, lq, base)


def train(out: str, minutes: float, model_dir: str) -> None:
    torch.manual_seed(0)
    model = load_model(model_dir)
    model.backbone.requires_grad_(False)
    branch = Branch(latent=model.codec.latent_channels, T=model.schedule.T)
    denoiser = ResShiftDenoiser(WithBranch(model.backbone, branch), model.schedule, model.sigma_data)
    data = HRCropDataset(shared / "train", crop=128, cache=True, scales=[1.0, 0.75, 0.5])
    loader = torch.utils.data.DataLoader(data, batch_size=32, sampler=StepSampler(len(data), 32, seed=1),
                                         collate_fn=degrade_collate, num_workers=1)
    optimizer = torch.optim.AdamW(branch.parameters(), lr=5e-4, weight_decay=0)
    generator, start, losses = torch.Generator().manual_seed(1), time.time(), []
    for batch in loader:
        hr, lr = degrade_pairs(batch, "cpu", 4, "realesrgan", clean_fraction=0.25)
        with torch.no_grad():
            x0 = model.codec.encode(hr * 2 - 1)
            cond, y = encode_condition(model.codec, lr, 4)
            t = torch.randint(0, model.schedule.T, (x0.shape[0],), generator=generator)
            x_t = q_sample(x0, y, t, torch.randn(x0.shape, generator=generator), model.schedule)
            teacher_error = (model.denoiser(x_t, t, (cond, y)) - x0).square().mean((1, 2, 3))
        loss = ((denoiser(x_t, t, (cond, y)) - x0).square().mean((1, 2, 3)) / teacher_error).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if len(losses) % 20 == 0:
            print(f"step {len(losses)}: loss / teacher's {sum(losses[-20:]) / 20:.4f}", flush=True)
        if time.time() - start > minutes * 60:
            break
    save_file(branch.state_dict(), out)


def evaluate(out: str, model_dir: str) -> None:
    model = load_model(model_dir)
    branch = Branch(latent=model.codec.latent_channels, T=model.schedule.T)
    branch.load_state_dict(load_file(out))
    model.backbone = WithBranch(model.backbone, branch).eval()
    model.denoiser = ResShiftDenoiser(model.backbone, model.schedule, model.sigma_data)
    lr, hr = realsr_crops(20, 96)
    with torch.no_grad():
        cond, y = model.condition(lr)
        x0 = model.codec.encode(hr * 2 - 1)
        fresh = torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
        for i in (0, 1, 3):
            t, sigma = torch.full((y.shape[0],), i), float(model.schedule.kappa * model.schedule.sqrt_etas[i])
            residual = model.denoiser(q_sample(x0, y, t, fresh, model.schedule), t, (cond, y)) - x0
            print(f"passed noise at t{i}: {float((residual * fresh).mean() / fresh.square().mean() / sigma):.3f}")
    suite, upscaler = MetricSuite(["psnr", "lpips", "dists"]), Upscaler(model)
    for name, steps, sampler in (("1 step", 1, None), ("4 det", 4, "deterministic"),
                                 ("15 det", 15, "deterministic"), ("15 stoch", 15, "stochastic")):
        sr = upscaler.upscale_tensor(lr, batch_size=8, seed=0, steps=steps, sampler=sampler).clamp(0, 1)
        scores = suite((sr * 255).round() / 255, hr)
        print(f"{name:9s}" + " / ".join(f"{float(v.mean()):.3f}" for v in scores.values()), flush=True)


if __name__ == "__main__":
    default = "runs/teacher7/model"
    if sys.argv[1] == "train":
        train(sys.argv[2], float(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else default)
    else:
        evaluate(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else default)
