"""The model seam: what a diffusion family plugs into an `SRModel`, one table for all of them.

A model folder's `model_index.json` names its `family` and `parameterization`; `FAMILIES[family]` gives the
schedule class (the `schedule` fields of the index), the denoiser wrapper that owns input scaling and turns the
backbone's prediction into x0, the samplers (one contract, k-diffusion style:
`sample(denoiser, x_T, schedule, cond, steps=, generator=)`), and the prior that draws x_T.

Every family sees the same condition, `Condition(lq, y)`: the LR image in [-1, 1] (followed by any extra noise
channels of a generator) and y, the latent of the bicubic-upsampled LR image.

- `resshift`: residual shifting (ResShift, SinSR, RSD); x0-prediction; x_T = y + kappa sqrt(eta_T) eps.
- `vp`: variance-preserving latent diffusion (YONOS-SR); eps / v / x0; x_T ~ N(0, I); DDIM.
- `vp_lr`: the same VP model started from the LR latent itself at an intermediate timestep T_L, no noise added
  (DFOSD's one-step generator, Eq. 1): x_T = y, and one DDIM step from `schedule.start` gives x0.
- `resshift_lr`: the same for a residual-shifting model (DFOSD on a ResShift prior): x_T = y at index
  `schedule.start`, no noise; one deterministic step gives the denoiser's x0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

from . import resshift, vp


class Condition(NamedTuple):
    """What every denoiser and sampler is conditioned on."""

    lq: torch.Tensor  # the LR image in [-1, 1] at LR size (+ a generator's noise channels)
    y: torch.Tensor  # the latent of the bicubic-upsampled LR image (the latent's shape)


@dataclass(frozen=True)
class Family:
    schedule: type  # its schedule dataclass; model_index.json's "schedule" holds its fields
    parameterizations: tuple[str, ...]  # what the backbone may predict; the denoiser turns it into x0
    denoiser: Callable  # (backbone, schedule, parameterization, sigma_data) -> denoiser(x_t, t_index, cond) -> x0
    samplers: dict[str, Callable]  # name -> sample(denoiser, x_T, schedule, cond, steps=, generator=, ...)
    prior: Callable  # (cond, noise, schedule) -> x_T


def _resshift_denoiser(backbone, schedule, parameterization, sigma_data):
    return resshift.ResShiftDenoiser(backbone, schedule, sigma_data)


def _vp_denoiser(backbone, schedule, parameterization, sigma_data):
    return vp.VPDenoiser(backbone, schedule, parameterization)


FAMILIES: dict[str, Family] = {
    "resshift": Family(resshift.ResShiftSchedule, ("x0",), _resshift_denoiser,
                       {"deterministic": resshift.sample_deterministic, "stochastic": resshift.sample_resshift},
                       lambda cond, noise, schedule: resshift.prior_sample(cond.y, noise, schedule)),
    "resshift_lr": Family(resshift.ResShiftSchedule, ("x0",), _resshift_denoiser,
                          {"deterministic": resshift.sample_deterministic}, lambda cond, noise, schedule: cond.y),
    "vp": Family(vp.VPSchedule, ("v", "eps", "x0"), _vp_denoiser, {"ddim": vp.sample_ddim},
                 lambda cond, noise, schedule: vp.prior_sample(noise, schedule)),
    "vp_lr": Family(vp.VPSchedule, ("eps", "v", "x0"), _vp_denoiser, {"ddim": vp.sample_ddim},
                    lambda cond, noise, schedule: cond.y),
}
