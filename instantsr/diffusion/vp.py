"""Variance-preserving (VP) diffusion: DDPM/DDIM, the Stable Diffusion family, and its DDIM sampler.

The forward process (Ho et al. 2020) with alpha_bar_t = prod(1 - beta_s):

    q(x_t | x0) = N(alpha_t x0, sigma_t^2 I),   alpha_t = sqrt(alpha_bar_t),   sigma_t = sqrt(1 - alpha_bar_t),

so alpha_t^2 + sigma_t^2 = 1, and the prior is x_T ~ N(0, I). The network may predict eps, x0 or
v = alpha eps - sigma x0 (Salimans & Ho 2022); ``to_x0`` turns any of them into x0.

Indices. ``t_index`` is the index 0..T-1 the network sees (diffusers' timestep). A respaced schedule
(``schedule.respaced(steps)``, diffusers' "trailing" spacing) keeps a subset of indices; the network is
still called with the ORIGINAL index, and "t-1" becomes the previous kept index (alpha_bar = 1 below the
first one, diffusers' set_alpha_to_one=True). ``start`` < T-1 makes sampling begin at an intermediate
index T_L (DFOSD's one-step generator starts from the LR latent there; the caller passes that as x).

Denoiser contract (one for every sampler and family, k-diffusion style):

    denoiser(x_t, t_index, cond) -> x0_hat

``x_t`` is the state (N, C, H, W), VP needs no input scaling; ``t_index`` a LongTensor (N,) of original
indices; ``cond`` is whatever the caller passed (usually ``Condition(lq, y)``), handed to the backbone
untouched. ``VPDenoiser`` turns a backbone ``net(x_t, t_index, cond) -> eps | v | x0`` into such a denoiser.

Samplers: ``sample_ddim(denoiser, x, schedule, cond=None, steps=None, generator=None, progress=False,
return_trajectory=False)`` -> x0 (or (x0, [x_T, ..., x0])), where ``x`` is x_T, drawn by the caller
(``prior_sample``); the sampler receives x_T and cond, never y.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .common import check_start_and_timesteps
from .common import full_index as _full_index
from .common import gather as _at

__all__ = [
    "VPDenoiser", "VPLoss", "VPSchedule", "ddim_step", "eps_from_x0", "prior_sample", "q_sample", "sample_ddim",
    "snr_plus_one_weight", "to_x0", "v_from_x0_eps", "x0_from_eps", "x0_from_v",
]

BETA_SCHEDULES = ("scaled_linear", "linear", "cosine")
PARAMETERIZATIONS = ("x0", "eps", "v")


# --------------------------------------------------------------------------------------------
# Schedule


@dataclass(frozen=True)
class VPSchedule:
    """The VP beta schedule (Ho et al. 2020); defaults are Stable Diffusion's scaled_linear 0.00085..0.012."""

    T: int = 1000
    beta_schedule: str = "scaled_linear"  # "scaled_linear" (SD), "linear" (DDPM) or "cosine" (Nichol & Dhariwal)
    beta_start: float = 0.00085
    beta_end: float = 0.012
    timesteps: tuple[int, ...] | None = None  # kept original indices, ascending; None = all up to start
    start: int | None = None  # the highest index sampling starts from; None = T-1

    def __post_init__(self):
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        check_start_and_timesteps(self, min_T=1)

    # The tables are computed in numpy: in a traced graph (ONNX export) they are then constants, not cumprod and
    # searchsorted ops that ONNX lacks.
    @property
    def betas(self) -> torch.Tensor:
        """beta_t (float64, length T, indexed by original index); as diffusers' schedulers."""
        return torch.from_numpy(self._betas())

    def _betas(self) -> np.ndarray:
        if self.beta_schedule == "scaled_linear":
            return np.linspace(self.beta_start**0.5, self.beta_end**0.5, self.T, dtype=np.float64) ** 2
        if self.beta_schedule == "linear":
            return np.linspace(self.beta_start, self.beta_end, self.T, dtype=np.float64)
        # cosine (Nichol & Dhariwal 2021): beta_i = 1 - alpha_bar((i+1)/T) / alpha_bar(i/T), capped at 0.999
        # (diffusers' "squaredcos_cap_v2").
        t = np.arange(self.T + 1, dtype=np.float64) / self.T
        alpha_bar = np.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], 0.999)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """alpha_bar_t = prod_{s <= t} (1 - beta_s)."""
        return torch.from_numpy(np.cumprod(1 - self._betas()))

    @property
    def alpha(self) -> torch.Tensor:
        """alpha_t = sqrt(alpha_bar_t): the signal scale of x_t."""
        return self.alphas_cumprod.sqrt()

    @property
    def sigma(self) -> torch.Tensor:
        """sigma_t = sqrt(1 - alpha_bar_t): the noise scale of x_t."""
        return (1 - self.alphas_cumprod).sqrt()

    @property
    def alphas_cumprod_prev(self) -> torch.Tensor:
        """alpha_bar of the kept index below each index (1 below the first): alpha_bar_{t-1} of DDIM."""
        kept = np.asarray(self.timesteps)
        below = np.searchsorted(kept, np.arange(self.T), side="left") - 1  # position of the kept index < i
        prev = np.cumprod(1 - self._betas())[kept[np.maximum(below, 0)]]
        return torch.from_numpy(np.where(below >= 0, prev, 1.0))

    @property
    def indices(self) -> torch.Tensor:
        """The kept original indices (LongTensor, ascending)."""
        return torch.tensor(self.timesteps, dtype=torch.long)

    @property
    def max_steps(self) -> int:
        """The most sampling steps (network passes) the schedule allows: indices 0..start."""
        return (self.T - 1 if self.start is None else self.start) + 1

    def respaced(self, steps: int) -> VPSchedule:
        """Keep `steps` indices with diffusers' "trailing" spacing, ending at start (steps=1 keeps start)."""
        # Same as DDIMScheduler(timestep_spacing="trailing").set_timesteps(steps) for start = T-1.
        top = self.max_steps
        if not 1 <= steps <= top:
            raise ValueError(f"steps must be in [1, {top}], got {steps}")
        kept = np.round(np.arange(top, 0, -top / steps)).astype(int)[:steps] - 1  # [:steps]: float arange guard
        return dataclasses.replace(self, timesteps=tuple(sorted(int(k) for k in kept)))


# --------------------------------------------------------------------------------------------
# The math: forward process, prior, parameterisations, loss weight, DDIM step


def q_sample(x0, t_index, noise, schedule: VPSchedule):
    """x_t = alpha_t x0 + sigma_t noise: a sample of q(x_t | x0) (Ho et al. 2020)."""
    return _at(schedule.alpha, t_index, x0) * x0 + _at(schedule.sigma, t_index, x0) * noise


def prior_sample(noise, schedule: VPSchedule):
    """x_T = noise ~ N(0, I) (alpha_T is taken as 0; sampling from `start` < T-1 needs a caller's x)."""
    return noise


def x0_from_eps(x_t, eps, t_index, schedule: VPSchedule):
    """x0 = (x_t - sigma_t eps) / alpha_t."""
    return (x_t - _at(schedule.sigma, t_index, x_t) * eps) / _at(schedule.alpha, t_index, x_t)


def x0_from_v(x_t, v, t_index, schedule: VPSchedule):
    """x0 = alpha_t x_t - sigma_t v (Salimans & Ho 2022)."""
    return _at(schedule.alpha, t_index, x_t) * x_t - _at(schedule.sigma, t_index, x_t) * v


def eps_from_x0(x_t, x0, t_index, schedule: VPSchedule):
    """eps = (x_t - alpha_t x0) / sigma_t."""
    return (x_t - _at(schedule.alpha, t_index, x_t) * x0) / _at(schedule.sigma, t_index, x_t)


def v_from_x0_eps(x0, eps, t_index, schedule: VPSchedule):
    """v = alpha_t eps - sigma_t x0 (Salimans & Ho 2022): the v-prediction target."""
    return _at(schedule.alpha, t_index, x0) * eps - _at(schedule.sigma, t_index, x0) * x0


def to_x0(prediction, x_t, t_index, schedule: VPSchedule, parameterization: str):
    """The network's prediction (x0, eps or v) turned into x0_hat."""
    if parameterization == "x0":
        return prediction
    if parameterization == "eps":
        return x0_from_eps(x_t, prediction, t_index, schedule)
    if parameterization == "v":
        return x0_from_v(x_t, prediction, t_index, schedule)
    raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")


def snr_plus_one_weight(t_index, schedule: VPSchedule, like: torch.Tensor):
    """1 + alpha_t^2 / sigma_t^2 (YONOS-SR Eq. 2; progressive distillation's "SNR+1" weight)."""
    # On the x0 error this equals the plain v-MSE: ||x0 - x0_hat||^2 = sigma^2 ||v - v_hat||^2.
    abar = schedule.alphas_cumprod
    return _at(1 + abar / (1 - abar), t_index, like)


def ddim_step(x_t, x0_hat, t_index, schedule: VPSchedule):
    """x_prev = alpha_prev x0_hat + sigma_prev eps_hat, eta = 0 (DDIM, Song et al., ICLR 2021)."""
    # prev is the kept index below t (alpha_bar = 1 below the first kept index: x_prev = x0_hat).
    eps_hat = eps_from_x0(x_t, x0_hat, t_index, schedule)
    prev = schedule.alphas_cumprod_prev
    return _at(prev.sqrt(), t_index, x_t) * x0_hat + _at((1 - prev).sqrt(), t_index, x_t) * eps_hat


# --------------------------------------------------------------------------------------------
# The model wrapper


class VPDenoiser(nn.Module):
    """Wraps a backbone net(x_t, t_index, cond) -> eps | v | x0 into denoiser(x_t, t_index, cond) -> x0_hat.

    VP needs no input scaling. `cond` (usually Condition(lq, y)) goes to the backbone untouched: the
    backbone decides what it reads (lq to concatenate, y, or nothing)."""

    def __init__(self, backbone: nn.Module, schedule: VPSchedule, parameterization: str = "v"):
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
        self.backbone = backbone
        self.schedule = schedule
        self.parameterization = parameterization

    def forward(self, x_t, t_index, cond=None):
        out = self.backbone(x_t, t_index, cond)
        return to_x0(out, x_t, t_index, self.schedule, self.parameterization)


# --------------------------------------------------------------------------------------------
# Samplers


@torch.no_grad()
def sample_ddim(denoiser, x, schedule, cond=None, steps=None, generator=None, progress=False,
                return_trajectory=False):
    """Deterministic DDIM sampling (eta = 0; Song et al., ICLR 2021) from x = x_T."""
    # generator is unused (eta = 0): it is there for the common sampler contract.
    schedule = schedule if steps is None else schedule.respaced(steps)
    order = list(reversed(schedule.timesteps))
    if progress:
        from tqdm.auto import tqdm

        order = tqdm(order)
    trajectory = [x]
    for i in order:
        t = _full_index(i, x)
        x = ddim_step(x, denoiser(x, t, cond), t, schedule)  # == x0_hat at the first kept index
        trajectory.append(x)
    return (x, trajectory) if return_trajectory else x


# --------------------------------------------------------------------------------------------
# Training loss


class VPLoss:
    """VP training loss: weighted MSE on x0 at a uniform index (or a share at T-1: one_step_fraction); "snr+1" makes
    it the v-MSE (Salimans & Ho 2022)."""

    def __init__(self, schedule: VPSchedule, weighting: str = "snr+1", one_step_fraction: float = 0.0):
        if weighting not in ("snr+1", "none"):
            raise ValueError(f"weighting must be one of ('snr+1', 'none'), got {weighting!r}")
        if not 0.0 <= one_step_fraction <= 1.0:
            raise ValueError(f"one_step_fraction must be in [0, 1], got {one_step_fraction}")
        self.schedule = schedule
        self.weighting = weighting  # "snr+1": 1 + alpha^2/sigma^2 (YONOS-SR Eq. 2); "none": plain x0-MSE
        # Share of the draws put at the schedule's start (T-1), the one index a one-step DDIM sampler reads; the
        # rest stay uniform. 0 is the papers' uniform t; > 0 is our deviation for short budgets (docs/yonos.md).
        self.one_step_fraction = one_step_fraction

    def __call__(self, denoiser, x0, cond=None, generator=None, t_index=None, noise=None, target=None):
        # denoiser:  denoiser(x_t, t_index, cond) -> x0_hat
        # x0:        clean latent (N, C, H, W), the target
        # cond:      passed to the denoiser untouched
        # generator: for t_index and noise when they are not given (on x0's device)
        # t_index:   LongTensor (N,) of original indices; uniform over 0..T-1 when None (see one_step_fraction)
        # noise:     standard normal like x0; drawn when None
        # target:    target(x_t, t_index) -> the x0 to regress, e.g. a teacher's x0_hat (YONOS-SR Eq. 3); x0 when None
        # returns:   per-sample loss (N,)
        if t_index is None:
            t_index = torch.randint(0, self.schedule.T, (x0.shape[0],), generator=generator, device=x0.device)
            if self.one_step_fraction:
                at_start = torch.rand(x0.shape[0], generator=generator, device=x0.device) < self.one_step_fraction
                t_index = t_index.masked_fill(at_start, self.schedule.max_steps - 1)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = q_sample(x0, t_index, noise, self.schedule)
        x0_hat = denoiser(x_t, t_index, cond)
        loss = (x0_hat - (x0 if target is None else target(x_t, t_index))).pow(2).flatten(1).mean(1)
        if self.weighting == "none":
            return loss
        return snr_plus_one_weight(t_index, self.schedule, x0).reshape(-1) * loss
