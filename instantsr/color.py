"""Colour conversions shared by the metrics."""

from __future__ import annotations

import torch

__all__ = ["rgb_to_y"]


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """Y of YCbCr, ITU-R BT.601 as MATLAB ``rgb2ycbcr``: (N,3,H,W) in [0,1] -> (N,1,H,W) in [16/255, 235/255]."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected an RGB batch (N, 3, H, W), got {tuple(x.shape)}")
    w = x.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    return (16.0 + (x * w).sum(1, keepdim=True)) / 255.0
