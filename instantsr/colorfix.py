"""Colour fixes: match the colours of an SR image to a reference (the bicubic-upscaled input)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

def _wavelet_blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    k = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=x.dtype, device=x.device) / 16
    k = k.expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (radius,) * 4, mode="replicate"), k, groups=x.shape[1], dilation=radius)


def _wavelet_split(x: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) frequencies by repeated dilated blurs (StableSR's wavelet decomposition)."""
    high = torch.zeros_like(x)
    for i in range(levels):
        low = _wavelet_blur(x, 2**i)
        high += x - low
        x = low
    return high, x


def wavelet_color_fix(sr: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """SR's high frequencies + the reference's low frequencies (StableSR / SinSR wavelet colour fix)."""
    return (_wavelet_split(sr)[0] + _wavelet_split(ref)[1]).clamp(0, 1)


def adain_color_fix(sr: torch.Tensor, ref: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-image, per-channel mean and std of SR matched to the reference's (AdaIN colour fix)."""
    def stats(x):
        flat = x.flatten(2)
        return flat.mean(2)[..., None, None], (flat.var(2) + eps).sqrt()[..., None, None]

    (m_sr, s_sr), (m_ref, s_ref) = stats(sr), stats(ref)
    return ((sr - m_sr) / s_sr * s_ref + m_ref).clamp(0, 1)
