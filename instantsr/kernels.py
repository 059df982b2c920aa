"""Blur kernels of the Real-ESRGAN degradation (basicsr.data.degradations), built in float64: bivariate
Gaussian, generalized Gaussian and plateau kernels, isotropic or not, and the circular low-pass (2-D sinc)."""

from __future__ import annotations

import math
from enum import Enum

import scipy.special
import torch
import torch.nn.functional as F

__all__ = ["KERNEL_KINDS", "KERNEL_SIZES", "Profile", "bivariate_kernel", "circular_lowpass_kernel", "stack_kernels"]

KERNEL_SIZES = tuple(range(7, 22, 2))


class Profile(Enum):
    """Radial profile of a blur kernel in the Mahalanobis distance q of its covariance."""

    GAUSSIAN = "gaussian"  # exp(-q/2)
    GENERALIZED = "generalized"  # exp(-q^beta/2)
    PLATEAU = "plateau"  # 1 / (1 + q^beta)


# Real-ESRGAN's kernel_list, in its order: iso, aniso, generalized_iso, generalized_aniso, plateau_iso,
# plateau_aniso. `BlurConfig.kernel_probs` follows this order.
KERNEL_KINDS = tuple((profile, isotropic) for profile in Profile for isotropic in (True, False))


def _centred_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    # (x, y) offsets from the kernel centre; x runs along columns, y along rows.
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    return x, y


def bivariate_kernel(
    size: int,
    sigma_x: float,
    sigma_y: float | None = None,
    theta: float = 0.0,
    profile: Profile = Profile.GAUSSIAN,
    beta: float = 1.0,
) -> torch.Tensor:
    """A size x size kernel, summing to 1, with covariance R diag(sx^2, sy^2) R^T (R rotates by theta)."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    c, s = math.cos(theta), math.sin(theta)
    rotation = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    covariance = rotation @ torch.diag(torch.tensor([sigma_x**2, sigma_y**2], dtype=torch.float64)) @ rotation.T
    inv = torch.linalg.inv(covariance)
    x, y = _centred_grid(size)
    q = inv[0, 0] * x * x + (inv[0, 1] + inv[1, 0]) * x * y + inv[1, 1] * y * y
    if profile is Profile.GAUSSIAN:
        kernel = torch.exp(-0.5 * q)
    elif profile is Profile.GENERALIZED:
        kernel = torch.exp(-0.5 * q**beta)
    else:
        kernel = 1 / (q**beta + 1)
    return kernel / kernel.sum()


def circular_lowpass_kernel(cutoff: float, size: int) -> torch.Tensor:
    """The 2-D sinc (ideal circular low-pass at `cutoff` radians), size x size, summing to 1."""
    x, y = _centred_grid(size)
    r = torch.sqrt(x * x + y * y)
    r_safe = torch.where(r == 0, torch.ones_like(r), r)
    bessel = torch.from_numpy(scipy.special.j1((cutoff * r_safe).numpy()))  # torch's j1 is off by ~1e-6 relative
    kernel = cutoff * bessel / (2 * math.pi * r_safe)
    kernel = torch.where(r == 0, torch.full_like(r, cutoff**2 / (4 * math.pi)), kernel)  # the limit at r = 0
    return kernel / kernel.sum()


def _pad_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    pad = (size - kernel.shape[-1]) // 2
    return F.pad(kernel, (pad, pad, pad, pad))


def stack_kernels(kernels: list[torch.Tensor]) -> torch.Tensor:
    """(N, k, k): odd kernels of different sizes zero-padded around their centres to the largest, stacked."""
    size = max(k.shape[-1] for k in kernels)
    return torch.stack([_pad_kernel(k, size) for k in kernels])
