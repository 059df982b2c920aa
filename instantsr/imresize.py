"""MATLAB ``imresize`` (bicubic, antialiased when shrinking) in torch, as the SR papers make and score their
LR/HR pairs: the bicubic degradation, the bicubic baseline, NIQE's half-scale.

Each axis is one matmul by a (out, in) weight matrix, built once per size in float64, with MATLAB's kernel
(Keys' cubic, a = -0.5) and its symmetric border handling.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

__all__ = ["bicubic_upscale", "imresize"]


def _cubic(t: torch.Tensor) -> torch.Tensor:
    # Keys' cubic convolution kernel with a = -0.5, MATLAB's 'bicubic'.
    t = t.abs()
    near = (1.5 * t**3 - 2.5 * t**2 + 1) * (t <= 1)
    far = (-0.5 * t**3 + 2.5 * t**2 - 4 * t + 2) * ((t > 1) & (t <= 2))
    return near + far


def _symmetric_index(index: torch.Tensor, length: int) -> torch.Tensor:
    # MATLAB 'symmetric' padding: the edge sample is repeated (-1 -> 0, length -> length - 1).
    index = index.remainder(2 * length)
    return torch.where(index < length, index, 2 * length - 1 - index)


@lru_cache(maxsize=64)
def _imresize_matrix(in_length: int, out_length: int, scale: float, antialias: bool) -> torch.Tensor:
    # (out_length, in_length) float64: row i holds the weights of output sample i, borders folded in.
    shrink = antialias and scale < 1
    kernel_width = 4.0 / scale if shrink else 4.0  # a wider kernel both interpolates and antialiases
    out_pos = torch.arange(1, out_length + 1, dtype=torch.float64)
    # 1-based input coordinate of each output sample: 0.5 maps to 0.5 and 0.5 + scale to 1.5.
    centre = out_pos / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(centre - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    index = left[:, None] + torch.arange(taps, dtype=torch.float64)
    distance = centre[:, None] - index
    weights = scale * _cubic(distance * scale) if shrink else _cubic(distance)
    weights = weights / weights.sum(1, keepdim=True)
    columns = _symmetric_index(index.long() - 1, in_length)
    return torch.zeros(out_length, in_length, dtype=torch.float64).scatter_add_(1, columns, weights)


def imresize(
    x: torch.Tensor,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """MATLAB `imresize(x, scale)` bicubic (antialiased when shrinking) of a CHW or NCHW float tensor."""
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale and size")
    in_h, in_w = x.shape[-2:]
    if size is None:
        out_h, out_w = math.ceil(in_h * scale), math.ceil(in_w * scale)
        scale_h = scale_w = float(scale)
    else:
        out_h, out_w = size
        scale_h, scale_w = out_h / in_h, out_w / in_w
    rows = _imresize_matrix(in_h, out_h, scale_h, antialias).to(x.device, x.dtype)
    cols = _imresize_matrix(in_w, out_w, scale_w, antialias).to(x.device, x.dtype)
    return rows @ x @ cols.T


def bicubic_upscale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """MATLAB bicubic upscaling by `scale` (the `y` that ResShift conditions on)."""
    return imresize(x, scale=scale)
