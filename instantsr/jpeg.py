"""JPEG in torch (baseline, 4:2:0), as Real-ESRGAN's training applies it on the GPU (basicsr's DiffJPEG):
encode and decode a batch at per-image qualities with libjpeg's quality-scaled tables."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["jpeg", "jpeg_tables"]

# The luminance and chrominance tables of the JPEG standard (Annex K), rows = vertical frequency.
_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55), (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62), (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99),
)
_CHROMA_TABLE = ((17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99), (24, 26, 56, 99, 99, 99, 99, 99),
                 (47, 66, 99, 99, 99, 99, 99, 99)) + ((99,) * 8,) * 4
_RGB_TO_YCC = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_YCC_TO_RGB = torch.tensor([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]])


def jpeg_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 8, 8) luminance and chrominance quantisation tables for integer qualities 1..100, scaled as
    libjpeg (and so Pillow) scales them."""
    q = quality.double().clamp(1, 100).view(-1, 1, 1)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q)

    def scaled(table):
        return torch.floor((torch.tensor(table, dtype=torch.float64) * scale + 50) / 100).clamp(1, 255)
    return scaled(_LUMA_TABLE), scaled(_CHROMA_TABLE)


@lru_cache(maxsize=4)
def _dct_matrix(device: torch.device) -> torch.Tensor:
    # JPEG's 2-D FDCT of a flattened 8x8 block as one 64x64 matrix: kron(D, D), D the orthonormal DCT-II.
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return torch.kron(d, d).float().to(device)


def _jpeg_plane(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    # (N, H, W) samples 0..255, H and W multiples of 8 -> the plane after DCT, quantisation and back.
    n, h, w = plane.shape
    dct = _dct_matrix(plane.device)
    blocks = (plane - 128).view(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4).reshape(n, -1, 64)
    step = table.to(plane.device, plane.dtype).view(n, 1, 64)
    coeffs = torch.round(blocks @ dct.T / step) * step
    blocks = (coeffs @ dct + 128).view(n, h // 8, w // 8, 8, 8)
    return blocks.permute(0, 1, 3, 2, 4).reshape(n, h, w)


def jpeg(x: torch.Tensor, quality: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
    """JPEG-compress each image of an NCHW batch in [0, 1] at its integer quality and decode it, in torch on
    x's device: YCbCr (JFIF), 2x2 chroma averaging, 8x8 DCT with libjpeg's quality-scaled tables, rounding,
    nearest chroma upsampling. As Real-ESRGAN's training JPEG (DiffJPEG, not differentiable), it is close to but
    not bit-equal with libjpeg, which works in integers and upsamples chroma with a triangle filter."""
    b, _, h, w = x.shape
    quality = torch.as_tensor(quality).double().round().expand(b)
    luma_table, chroma_table = jpeg_tables(quality)
    rgb = (x.float().clamp(0, 1) * 255).round()
    ph, pw = (-h) % 16, (-w) % 16  # whole 16x16 macroblocks (edge-replicated, as an encoder pads)
    rgb = F.pad(rgb, (0, pw, 0, ph), mode="replicate") if ph or pw else rgb
    ycc = torch.einsum("ij,bjhw->bihw", _RGB_TO_YCC.to(rgb.device), rgb)
    luma = _jpeg_plane(ycc[:, 0], luma_table)
    chroma = F.avg_pool2d(ycc[:, 1:], 2)  # Cb, Cr around 0 (JFIF adds 128, which the DCT takes off again)
    chroma = _jpeg_plane(chroma.flatten(0, 1) + 128, chroma_table.repeat_interleave(2, 0)) - 128
    chroma = F.interpolate(chroma.view(b, 2, *chroma.shape[-2:]), scale_factor=2, mode="nearest")
    out = torch.einsum("ij,bjhw->bihw", _YCC_TO_RGB.to(rgb.device), torch.cat([luma[:, None], chroma], 1))
    return (out[..., :h, :w].clamp(0, 255).round() / 255).to(x.dtype)
