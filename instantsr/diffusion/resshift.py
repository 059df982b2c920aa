"""ResShift: residual-shifting diffusion for super-resolution, and its samplers.

ResShift (Yue et al., NeurIPS 2023) moves the residual y - x0 into the state in T steps:

    q(x_t | x0, y) = N(x0 + eta_t (y - x0), kappa^2 eta_t I),   x_T = y + kappa sqrt(eta_T) eps,

where y is the latent of the bicubic-upsampled LR image (same shape as x0). The network predicts x0.
SinSR (Wang et al., CVPR 2024, §4.1) gives the deterministic DDIM-like sampler of the same model and
its inversion.

Indices. Timestep t = 1..T of the papers is the index 0..T-1 here, the index the network sees.
A respaced schedule (``schedule.respaced(steps)``) keeps a subset of indices; the network is still
called with the ORIGINAL index, and "eta_{t-1}" becomes the eta of the previous kept index
(0 before the first one).

Denoiser contract (one for every sampler, k-diffusion style):

    denoiser(x_t, t_index, cond) -> x0_hat

``x_t`` is the UNSCALED state (N, C, H, W); ``t_index`` a LongTensor (N,) of original indices;
``cond`` is ``Condition(lq, y)`` (``instantsr.diffusion.family``): the LR image the backbone
concatenates and y. Input scaling belongs to the wrapper, not the sampler: ``ResShiftDenoiser`` turns a
backbone ``net(scaled_x_t, t_index, lq)`` into such a denoiser.

Samplers (k-diffusion style, one contract for every family): ``sample_x(denoiser, x, schedule, cond,
steps=None, generator=None, progress=False, return_trajectory=False)`` -> x0 (or (x0, [x_T, ..., x0])),
where ``x`` is x_T, drawn by the caller (``prior_sample``); the deterministic sampler reads y from cond.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from .common import check_start_and_timesteps
from .common import full_index as _full_index
from .common import gather as _at

__all__ = [
    "ResShiftSchedule",
    "q_sample",
    "prior_sample",
    "scale_input",
    "posterior_mean_variance",
    "deterministic_coefficients",
    "deterministic_step",
    "invert_step",
    "ResShiftDenoiser",
    "sample_resshift",
    "sample_deterministic",
    "invert_deterministic",
    "ResShiftLoss",
]


# --------------------------------------------------------------------------------------------
# Schedule


@dataclass(frozen=True)
class ResShiftSchedule:
    """The ResShift eta schedule, defined on sqrt(eta) (ResShift, Yue et al. 2023; official 'exponential')."""

    T: int = 15
    kappa: float = 2.0
    p: float = 0.3
    min_noise_level: float = 0.04
    etas_end: float = 0.99
    timesteps: tuple[int, ...] | None = None  # kept original indices, ascending; None = all
    start_cap: float | None = None  # upper bound on sqrt(eta_1): SinSR's code caps it at sqrt(0.001), ResShift's
    #                                 (v1 and v3) does not; inactive for the default config (0.02 < 0.0316)
    start: int | None = None  # the highest index sampling starts from; None = T-1 (DFOSD on a ResShift prior: T_L)

    def __post_init__(self):
        check_start_and_timesteps(self, min_T=2)

    @property
    def sqrt_etas(self) -> torch.Tensor:
        """sqrt(eta_t) for t = 1..T (float64, length T, indexed by original index)."""
        # design.md: sqrt(eta_1) = min(min_noise_level / kappa, min_noise_level), as ResShift's official
        # get_named_eta_schedule (its sqrt(0.001) cap is commented out there: ResShift v3, min_noise_level 0.2,
        # starts at 0.1). SinSR's copy of that function keeps the cap: `start_cap` = sqrt(0.001) reproduces it.
        start = min(self.min_noise_level / self.kappa, self.min_noise_level)
        if self.start_cap is not None:
            start = min(start, self.start_cap)
        b = (self.etas_end / start) ** (1.0 / (self.T - 1))
        beta = torch.linspace(0, 1, self.T, dtype=torch.float64) ** self.p * (self.T - 1)
        return start * b**beta

    @property
    def etas(self) -> torch.Tensor:
        return self.sqrt_etas**2

    @property
    def indices(self) -> torch.Tensor:
        """The kept original indices (LongTensor, ascending)."""
        return torch.tensor(self.timesteps, dtype=torch.long)

    @property
    def etas_prev(self) -> torch.Tensor:
        """eta of the kept index below each index (0 below the first): eta_{t-1} of the formulas."""
        etas, prev = self.etas, torch.zeros(self.T, dtype=torch.float64)
        for i in range(self.T):
            below = [k for k in self.timesteps if k < i]
            prev[i] = etas[below[-1]] if below else 0.0
        return prev

    @property
    def alphas(self) -> torch.Tensor:
        """alpha_t = eta_t - eta_{t-1} (eta_0 = 0)."""
        return self.etas - self.etas_prev

    @property
    def max_steps(self) -> int:
        """The most sampling steps (network passes) the schedule allows: indices 0..start (T)."""
        return (self.T - 1 if self.start is None else self.start) + 1

    def respaced(self, steps: int) -> "ResShiftSchedule":
        """Keep `steps` indices evenly spaced over [0, start], both ends kept (steps=1 keeps start, T-1 by
        default)."""
        # Official space_timesteps keeps int(T/steps * k), k < steps: it starts at 0 but may drop
        # T-1. We keep T-1 too, so that the prior is always x_T and one step means "from x_T".
        top = self.max_steps - 1
        if not 1 <= steps <= top + 1:
            raise ValueError(f"steps must be in [1, {top + 1}], got {steps}")
        if steps == 1:
            kept = [top]
        else:
            kept = [math.floor(k * top / (steps - 1) + 0.5) for k in range(steps)]
        return dataclasses.replace(self, timesteps=tuple(kept))


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


# --------------------------------------------------------------------------------------------
# The math: forward process, prior, input scaling, posterior, deterministic step


def q_sample(x0, y, t_index, noise, schedule: ResShiftSchedule):
    """x_t = x0 + eta_t (y - x0) + kappa sqrt(eta_t) noise: a sample of q(x_t | x0, y) (ResShift)."""
    eta, std = _at(schedule.etas, t_index, x0), _at(schedule.kappa * schedule.sqrt_etas, t_index, x0)
    return x0 + eta * (y - x0) + std * noise


def prior_sample(y, noise, schedule: ResShiftSchedule):
    """x_T = y + kappa sqrt(eta_T) noise."""
    top = schedule.timesteps[-1]  # T-1 unless a caller built an official-style spacing
    return y + schedule.kappa * float(schedule.sqrt_etas[top]) * noise


def scale_input(x_t, t_index, schedule: ResShiftSchedule):
    """x_t / sqrt(kappa^2 eta_t + 1): the network input (latent variance is about 1)."""
    return x_t / _at(torch.sqrt(schedule.kappa**2 * schedule.etas + 1), t_index, x_t)


def posterior_mean_variance(x_t, x0_hat, t_index, schedule: ResShiftSchedule):
    """Mean and variance of q(x_{t-1} | x_t, x0) (ResShift, Yue et al. 2023)."""
    eta, prev, alpha = schedule.etas, schedule.etas_prev, schedule.alphas
    mean = _at(prev / eta, t_index, x_t) * x_t + _at(alpha / eta, t_index, x_t) * x0_hat
    variance = _at(schedule.kappa**2 * prev * alpha / eta, t_index, x_t)
    return mean, variance


def deterministic_coefficients(schedule: ResShiftSchedule):
    """(k, m, j) per index, float64 (SinSR Eq. 4): x_{t-1} = k x0_hat + m x_t + j y."""
    # Same as SinSR's official p_mean_variance (ddim_k/m/j) and as ResShift's ddim_sample with
    # ddim_eta = 0 written out; both agree with design.md.
    eta, prev = schedule.etas, schedule.etas_prev
    m = torch.sqrt(prev / eta)
    j = prev - torch.sqrt(prev * eta)
    k = 1 - m - j
    return k, m, j


def deterministic_step(x_t, x0_hat, y, t_index, schedule: ResShiftSchedule):
    """x_{t-1} = k_t x0_hat + m_t x_t + j_t y (SinSR Eq. 5)."""
    k, m, j = (_at(c, t_index, x_t) for c in deterministic_coefficients(schedule))
    return k * x0_hat + m * x_t + j * y


def invert_step(x_prev, x0_hat, y, t_index, schedule: ResShiftSchedule):
    """The same line solved for x_t: x_t = (x_{t-1} - k_t x0_hat - j_t y) / m_t (SinSR code)."""
    k, m, j = (_at(c, t_index, x_prev) for c in deterministic_coefficients(schedule))
    return (x_prev - k * x0_hat - j * y) / m


# --------------------------------------------------------------------------------------------
# The model wrapper that owns input scaling


def skip_scalings(t_index, schedule: ResShiftSchedule, sigma_data: float, like: torch.Tensor):
    """(c_skip, c_out): E[x0 | x_t, y] = y + c_skip (x_t - y) and the std around it, for x0 ~ N(y, sigma_data^2).

    With x_t - y = (1 - eta_t)(x0 - y) + kappa sqrt(eta_t) eps, the linear estimate of the residual x0 - y
    gives c_skip = (1 - eta) s^2 / ((1 - eta)^2 s^2 + kappa^2 eta) and c_out^2 = s^2 kappa^2 eta / (same)."""
    eta = _at(schedule.etas, t_index, like)
    noise_var, s2 = schedule.kappa**2 * eta, sigma_data**2
    total = (1 - eta) ** 2 * s2 + noise_var
    return (1 - eta) * s2 / total, (s2 * noise_var / total).sqrt()


class ResShiftDenoiser(nn.Module):
    """Wraps a backbone net(scaled_x_t, t_index, lq) -> x0_hat into denoiser(x_t, t_index, cond), cond = (lq, y).

    sigma_data=None is the paper's parameterisation: the backbone's output IS x0_hat (official checkpoints).
    With sigma_data (the std of the residual x0 - y), EDM-style preconditioning around y:
    x0_hat = y + c_skip (x_t - y) + c_out net(...), so an untrained net already gives y (bicubic) at t=T and
    x_t at t=1, and the net only learns the residual. Small models trained briefly on CPU otherwise fail to
    learn these identities through the whole UNet. The input scaling x_t / sqrt(kappa^2 eta_t + 1) is
    ResShift's in both cases. (Our deviation from ResShift; see README.)
    """

    def __init__(self, backbone: nn.Module, schedule: ResShiftSchedule, sigma_data: float | None = None):
        super().__init__()
        self.backbone = backbone
        self.schedule = schedule
        self.sigma_data = sigma_data

    def forward(self, x_t, t_index, cond=None):
        lq, y = cond if isinstance(cond, tuple) else (cond, None)
        out = self.backbone(scale_input(x_t, t_index, self.schedule), t_index, lq)
        if self.sigma_data is None:
            return out
        if y is None:
            raise ValueError("a preconditioned denoiser needs cond=(lq, y)")
        c_skip, c_out = skip_scalings(t_index, self.schedule, self.sigma_data, x_t)
        if torch.is_grad_enabled():
            return y + c_skip * (x_t - y) + c_out * out
        # the same, in place: at inference on a large image each temporary is a whole latent
        return torch.sub(x_t, y).mul_(c_skip).add_(y).add_(out.mul_(c_out))


# --------------------------------------------------------------------------------------------
# Samplers


def _y_of(cond):
    """y, the latent of the bicubic-upsampled LR image, from cond = Condition(lq, y) (or a plain (lq, y) tuple)."""
    if not isinstance(cond, tuple) or len(cond) != 2:
        raise ValueError("ResShift samplers need cond = Condition(lq, y): the residual shift is towards y")
    return cond[1]


def _descending(schedule, progress):
    order = list(reversed(schedule.timesteps))
    if progress:
        from tqdm.auto import tqdm

        order = tqdm(order)
    return order


@torch.no_grad()
def sample_resshift(denoiser, x, schedule, cond, steps=None, generator=None, progress=False,
                    return_trajectory=False):
    """Ancestral sampling of ResShift (Yue et al. 2023): posterior mean plus posterior noise, from x = x_T."""
    schedule = schedule if steps is None else schedule.respaced(steps)
    trajectory = [x]
    for i in _descending(schedule, progress):
        t = _full_index(i, x)
        x0_hat = denoiser(x, t, cond)
        mean, variance = posterior_mean_variance(x, x0_hat, t, schedule)
        # At the first kept index eta_{t-1} = 0: variance 0 and mean == x0_hat exactly.
        x = mean if i == schedule.timesteps[0] else mean + variance.sqrt() * _randn(x, generator)
        trajectory.append(x)
    return (x, trajectory) if return_trajectory else x


@torch.no_grad()
def sample_deterministic(denoiser, x, schedule, cond, steps=None, generator=None, progress=False,
                         return_trajectory=False):
    """Deterministic DDIM-like sampling of ResShift (SinSR, Wang et al. 2024, Eq. 5), from x = x_T."""
    schedule, y = schedule if steps is None else schedule.respaced(steps), _y_of(cond)
    trajectory = [x]
    for i in _descending(schedule, progress):
        t = _full_index(i, x)
        x = deterministic_step(x, denoiser(x, t, cond), y, t, schedule)  # k=1, m=j=0 at the end
        trajectory.append(x)
    return (x, trajectory) if return_trajectory else x


@torch.no_grad()
def invert_deterministic(denoiser, x0, schedule, cond, steps=None, progress=False, return_trajectory=False,
                         fixed_point_iters=0):
    """DDIM-style inversion of the deterministic sampler (SinSR official ddim_inverse_loop): x0 -> x_T."""
    # The last sampling step (m = 0) maps everything to x0_hat and cannot be undone, so, as in the
    # official code, x0 stands in for the state at the first kept index (eta_1 = 4e-4), and each
    # kept index above it is reached by solving the step's line for x_t. x0_hat comes from the
    # model at the CURRENT (less noisy) point with the TARGET index, as in DDIM inversion;
    # fixed_point_iters > 0 re-evaluates it at the new x_t (our addition, 0 = official).
    schedule, y = schedule if steps is None else schedule.respaced(steps), _y_of(cond)
    if len(schedule.timesteps) < 2:
        raise ValueError("inversion needs at least 2 kept timesteps (steps >= 2)")
    x = x0
    trajectory = [x]
    order = schedule.timesteps[1:]
    if progress:
        from tqdm.auto import tqdm

        order = tqdm(order)
    for i in order:
        t = _full_index(i, x)
        x_next = invert_step(x, denoiser(x, t, cond), y, t, schedule)
        for _ in range(fixed_point_iters):
            x_next = invert_step(x, denoiser(x_next, t, cond), y, t, schedule)
        x = x_next
        trajectory.append(x)
    return (x, trajectory) if return_trajectory else x


# --------------------------------------------------------------------------------------------
# Training loss


class ResShiftLoss:
    """ResShift training loss (Yue et al. 2023): MSE on x0 at a uniform index, plus, optionally, the
    perceptual term of ResShift's journal version (official TrainerDifIRLPIPS): LPIPS on the decoded x0."""

    # Follows the official training_losses with loss_type MSE and predict x0: weight 1,
    # mean over all but the batch dimension; t ~ U{0, ..., T-1} over the full schedule.
    def __init__(self, schedule: ResShiftSchedule, perceptual=None, perceptual_weight: float = 1.0, decode=None):
        self.schedule = schedule
        self.perceptual = perceptual  # frozen perceptual(sr, hr) -> (N,), images in [0, 1]; None = plain MSE
        self.perceptual_weight = perceptual_weight  # the official loss_coef[1] (1.0 in its journal configs)
        self.decode = decode  # latent -> image in [-1, 1]: the codec's decode, needed with `perceptual`

    def __call__(self, denoiser, x0, cond, generator=None, t_index=None, noise=None, image=None):
        # denoiser:  denoiser(x_t, t_index, cond) -> x0_hat (unscaled x_t, see module docstring)
        # x0:        clean latent (N, C, H, W), the target
        # cond:      Condition(lq, y), y the latent of the bicubic-upsampled LR image (x0's shape)
        # generator: for t_index and noise when they are not given (on x0's device)
        # t_index:   LongTensor (N,) of original indices; uniform when None
        # noise:     standard normal like x0; drawn when None
        # image:     the HR image in [0, 1] that x0 encodes; needed with `perceptual`
        # returns:   per-sample loss (N,)
        if t_index is None:
            t_index = torch.randint(0, self.schedule.T, (x0.shape[0],), generator=generator,
                                    device=x0.device)
        if noise is None:
            noise = _randn(x0, generator)
        x_t = q_sample(x0, _y_of(cond), t_index, noise, self.schedule)
        x0_hat = denoiser(x_t, t_index, cond)
        loss = (x0_hat - x0).pow(2).flatten(1).mean(1)
        if self.perceptual is None:
            return loss
        if image is None or self.decode is None:
            raise ValueError("a perceptual ResShiftLoss needs decode= and the HR image (image=)")
        # The official clamps the decoded prediction to [-1, 1] before LPIPS; so do we.
        sr = (self.decode(x0_hat).clamp(-1, 1) + 1) / 2
        return loss + self.perceptual_weight * self.perceptual(sr, image)
