"""Low-resolution images from high-resolution ones: MATLAB bicubic, average pooling, and the Real-ESRGAN
second-order degradation (Wang et al. 2021) with the ranges of its x4 config, as ResShift trains on.

Images are float tensors in [0, 1], NCHW. Every random draw comes from the `torch.Generator` a caller
passes, so the same seed gives the same LR bit for bit.
"""

from __future__ import annotations

import math
import warnings
from bisect import bisect_right
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import scipy.special
import torch
import torch.nn.functional as F
from tqdm import tqdm

from instantsr.io import ImageReadError, list_images, read_image, save_image

PRESETS = ("realesrgan", "bicubic", "avgpool")


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the 8-bit grid, as saving to an 8-bit file would."""
    return torch.clamp((x * 255.0).round(), 0, 255) / 255.0


# ------------------------------------------------------------------------------------------------------ #
# MATLAB bicubic imresize, as separable weight matrices (one matmul per axis)
# ------------------------------------------------------------------------------------------------------ #


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


def avgpool_downscale(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Average over non-overlapping scale x scale blocks (the YONOS-SR x8 degradation)."""
    return F.avg_pool2d(x, scale)


# ------------------------------------------------------------------------------------------------------ #
# JPEG in torch (baseline, 4:2:0), as Real-ESRGAN's training applies it on the GPU (basicsr's DiffJPEG)
# ------------------------------------------------------------------------------------------------------ #

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


# ------------------------------------------------------------------------------------------------------ #
# Blur kernels (basicsr.data.degradations), built in float64
# ------------------------------------------------------------------------------------------------------ #

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


# ------------------------------------------------------------------------------------------------------ #
# Configuration: the ranges of Real-ESRGAN's options/train_realesrnet_x4plus.yml
# ------------------------------------------------------------------------------------------------------ #


@dataclass(frozen=True)
class BlurConfig:
    """How one round draws its blur kernel."""

    kernel_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # over KERNEL_KINDS
    kernel_sizes: tuple[int, ...] = KERNEL_SIZES
    sinc_prob: float = 0.1
    sigma_range: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)  # generalized Gaussian shape
    betap_range: tuple[float, float] = (1.0, 2.0)  # plateau shape


@dataclass(frozen=True)
class RoundConfig:
    """One degradation round: blur, resize, noise, JPEG."""

    blur: BlurConfig = field(default_factory=BlurConfig)
    blur_prob: float = 1.0
    resize_probs: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5  # else Poisson noise
    noise_range: tuple[float, float] = (1.0, 30.0)  # Gaussian sigma on the 0..255 scale
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)


def _second_round() -> RoundConfig:
    return RoundConfig(
        blur=BlurConfig(sigma_range=(0.2, 1.5)),
        blur_prob=0.8,
        resize_probs=(0.3, 0.4, 0.3),
        resize_range=(0.3, 1.2),
        noise_range=(1.0, 25.0),
        poisson_scale_range=(0.05, 2.5),
    )


@dataclass(frozen=True)
class DegradationConfig:
    """All ranges and probabilities of the second-order degradation; defaults are Real-ESRGAN x4's."""

    scale: int = 4
    first: RoundConfig = field(default_factory=RoundConfig)
    second: RoundConfig = field(default_factory=_second_round)
    second_order_prob: float = 1.0  # Real-ESRGAN always runs the second round; ResShift's configs use 0.5
    final_sinc_prob: float = 0.8
    final_sinc_sizes: tuple[int, ...] = KERNEL_SIZES


# ------------------------------------------------------------------------------------------------------ #
# Random draws, all from the caller's generator
# ------------------------------------------------------------------------------------------------------ #


def _rand(generator: torch.Generator, n: int | None = None) -> torch.Tensor:
    shape = () if n is None else (n,)
    return torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float64).cpu()


def _uniform(generator: torch.Generator, low: float, high: float, n: int | None = None) -> torch.Tensor:
    return low + (high - low) * _rand(generator, n)


def _choice(generator: torch.Generator, weights: Sequence[float]) -> int:
    # Index drawn with probability proportional to weights (inverse CDF of one uniform draw).
    cumulative = list(accumulate(weights))
    return min(bisect_right(cumulative, _rand(generator).item() * cumulative[-1]), len(weights) - 1)


def _sinc_cutoff(generator: torch.Generator, size: int) -> float:
    # Real-ESRGAN's sinc setting for 7..21 kernels: small kernels keep a higher cutoff.
    low = math.pi / 3 if size < 13 else math.pi / 5
    return _uniform(generator, low, math.pi).item()


def _shape_beta(generator: torch.Generator, beta_range: tuple[float, float]) -> float:
    # Half of the draws below 1 and half above, as basicsr does (it assumes beta_range straddles 1).
    if _rand(generator).item() < 0.5:
        return _uniform(generator, beta_range[0], 1).item()
    return _uniform(generator, 1, beta_range[1]).item()


def random_blur_kernel(blur: BlurConfig, generator: torch.Generator) -> torch.Tensor:
    """Draw one blur kernel (of a random odd size from blur.kernel_sizes) as Real-ESRGAN's dataset does."""
    size = blur.kernel_sizes[_choice(generator, [1] * len(blur.kernel_sizes))]
    if _rand(generator).item() < blur.sinc_prob:
        return circular_lowpass_kernel(_sinc_cutoff(generator, size), size)
    profile, isotropic = KERNEL_KINDS[_choice(generator, blur.kernel_probs)]
    sigma_x = _uniform(generator, *blur.sigma_range).item()
    sigma_y, theta = sigma_x, 0.0
    if not isotropic:
        sigma_y = _uniform(generator, *blur.sigma_range).item()
        theta = _uniform(generator, -math.pi, math.pi).item()
    beta = 1.0
    if profile is Profile.GENERALIZED:
        beta = _shape_beta(generator, blur.betag_range)
    elif profile is Profile.PLATEAU:
        beta = _shape_beta(generator, blur.betap_range)
    return bivariate_kernel(size, sigma_x, sigma_y, theta, profile, beta)


def random_final_sinc_kernel(config: DegradationConfig, generator: torch.Generator) -> torch.Tensor:
    """The last filter: a sinc with probability final_sinc_prob, else the identity (a 1x1 pulse)."""
    if _rand(generator).item() < config.final_sinc_prob:
        size = config.final_sinc_sizes[_choice(generator, [1] * len(config.final_sinc_sizes))]
        return circular_lowpass_kernel(_uniform(generator, math.pi / 3, math.pi).item(), size)
    return torch.ones(1, 1, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------------ #
# Filtering, resizing, noise on batches
# ------------------------------------------------------------------------------------------------------ #


def _reflect_index(length: int, pad: int, device: torch.device) -> torch.Tensor:
    # Indices of F.pad(mode="reflect") along one axis, valid for any pad (F.pad needs pad < length).
    index = torch.arange(-pad, length + pad, device=device)
    if length == 1:
        return torch.zeros_like(index)
    period = 2 * (length - 1)
    index = index.remainder(period)
    return torch.where(index < length, index, period - index)


def filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate each image with its own odd k x k kernel (kernel: kxk or Nxkxk), reflect-padded borders."""
    b, c, h, w = x.shape
    k = kernel.shape[-1]
    kernel = kernel.to(x.device, x.dtype).expand(b, k, k)
    pad = k // 2
    x = x[:, :, _reflect_index(h, pad, x.device)][:, :, :, _reflect_index(w, pad, x.device)]
    weight = kernel.repeat_interleave(c, dim=0)[:, None]  # (b*c, 1, k, k): one kernel per image and channel
    out = F.conv2d(x.reshape(1, b * c, h + 2 * pad, w + 2 * pad), weight, groups=b * c)
    return out.view(b, c, h, w)


RESIZE_MODES = ("area", "bilinear", "bicubic")


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    size = (max(1, size[0]), max(1, size[1]))
    if mode == "area":
        return F.interpolate(x, size=size, mode=mode)
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def _per_image(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return values.to(x.device, x.dtype).view(-1, 1, 1, 1)


def add_gaussian_noise(
    x: torch.Tensor, sigma: torch.Tensor, gray: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """x + N(0, (sigma/255)^2) per image (sigma: N values on the 0..255 scale); gray images share one
    noise map over their channels. Not clipped."""
    b, c, h, w = x.shape
    std = _per_image(sigma, x) / 255.0
    noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x) * std
    if gray.any():
        gray_noise = torch.randn((b, 1, h, w), generator=generator, device=generator.device).to(x) * std
        noise = torch.where(_per_image(gray, x).bool(), gray_noise.expand_as(noise), noise)
    return x + noise


def _shot_noise(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # Poisson noise of the 8-bit image, with the photon count per unit set by its number of distinct levels
    # (rounded up to a power of two), as in skimage.util.random_noise and basicsr.
    b = x.shape[0]
    x = quantize(x)
    levels = (x * 255).round().long().flatten(1) + 256 * torch.arange(b, device=x.device)[:, None]
    distinct = (torch.bincount(levels.flatten(), minlength=256 * b).view(b, 256) > 0).sum(1)
    counts = _per_image(2.0 ** torch.ceil(torch.log2(distinct.double())), x)
    rates = (x * counts).to(generator.device)
    return torch.poisson(rates, generator=generator).to(x) / counts - x


def add_poisson_noise(
    x: torch.Tensor, scale: torch.Tensor, gray: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """x + scale * Poisson shot noise per image; gray images take the noise of their luminance. Not clipped."""
    noise = _shot_noise(x, generator)
    if gray.any():
        luminance = (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]  # torchvision's weights
        noise = torch.where(_per_image(gray, x).bool(), _shot_noise(luminance, generator).expand_as(noise), noise)
    return x + noise * _per_image(scale, x)


# ------------------------------------------------------------------------------------------------------ #
# The second-order degradation (RealESRGANModel.feed_data)
# ------------------------------------------------------------------------------------------------------ #


def _random_resize(
    x: torch.Tensor, stage: RoundConfig, base_size: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    # One factor and one interpolation for the whole batch, as Real-ESRGAN does.
    direction = _choice(generator, stage.resize_probs)  # up, down, keep
    if direction == 0:
        factor = _uniform(generator, 1, stage.resize_range[1]).item()
    elif direction == 1:
        factor = _uniform(generator, stage.resize_range[0], 1).item()
    else:
        factor = 1.0
    mode = RESIZE_MODES[_choice(generator, [1, 1, 1])]
    return _resize(x, (int(base_size[0] * factor), int(base_size[1] * factor)), mode)


def _random_noise(x: torch.Tensor, stage: RoundConfig, generator: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    if _rand(generator).item() < stage.gaussian_noise_prob:
        sigma = _uniform(generator, *stage.noise_range, n=b)
        gray = _rand(generator, b) < stage.gray_noise_prob
        x = add_gaussian_noise(x, sigma, gray, generator)
    else:
        scale = _uniform(generator, *stage.poisson_scale_range, n=b)
        gray = _rand(generator, b) < stage.gray_noise_prob
        x = add_poisson_noise(x, scale, gray, generator)
    return x.clamp(0, 1)


def _random_jpeg(x: torch.Tensor, stage: RoundConfig, generator: torch.Generator) -> torch.Tensor:
    return jpeg(x, _uniform(generator, *stage.jpeg_range, n=x.shape[0]))


def _stack(kernels: list[torch.Tensor]) -> torch.Tensor:
    size = max(k.shape[-1] for k in kernels)
    return torch.stack([_pad_kernel(k, size) for k in kernels])


class Kernels(NamedTuple):
    """The per-image filters of one batch: (N, k, k) float64 each. Drawing them is the per-image Python work
    of the degradation, so a training loader draws them in its workers and the device does the pixels."""

    first: torch.Tensor
    second: torch.Tensor
    sinc: torch.Tensor


def draw_kernels(n: int, config: DegradationConfig, generator: torch.Generator) -> Kernels:
    """The first-round, second-round and final sinc kernels of n images, as Real-ESRGAN's dataset draws them."""
    first, second, sincs = [], [], []
    for _ in range(n):
        first.append(random_blur_kernel(config.first.blur, generator))
        second.append(random_blur_kernel(config.second.blur, generator))
        sincs.append(random_final_sinc_kernel(config, generator))
    return Kernels(_stack(first), _stack(second), _stack(sincs))


def degrade(hr: torch.Tensor, config: DegradationConfig, generator: torch.Generator,
            kernels: Kernels | None = None) -> torch.Tensor:
    """Real-ESRGAN's second-order degradation of an NCHW batch in [0, 1] to (H // scale, W // scale),
    clamped and rounded to 8-bit levels.

    `kernels` (from `draw_kernels`) may come from elsewhere, e.g. a DataLoader worker; by default they are
    drawn first from `generator`. The pixel work runs on hr's device; the generator must be on it too."""
    b, _, h, w = hr.shape
    target = (h // config.scale, w // config.scale)
    if kernels is None:
        kernels = draw_kernels(b, config, generator)

    # First round: blur, resize relative to the HR size, noise, JPEG.
    first = config.first
    out = filter2d(hr, kernels.first) if _rand(generator).item() < first.blur_prob else hr
    out = _random_resize(out, first, (h, w), generator)
    out = _random_noise(out, first, generator)
    out = _random_jpeg(out, first, generator)

    # Second round: blur, resize relative to the target size, noise; its JPEG comes with the final step.
    second = config.second
    if _rand(generator).item() < config.second_order_prob:
        if _rand(generator).item() < second.blur_prob:
            out = filter2d(out, kernels.second)
        out = _random_resize(out, second, (h / config.scale, w / config.scale), generator)
        out = _random_noise(out, second, generator)

    # Final step: [resize to the target + sinc] and JPEG, in random order (Real-ESRGAN found other orders
    # give twisted lines).
    def resize_and_sinc(x: torch.Tensor) -> torch.Tensor:
        x = _resize(x, target, RESIZE_MODES[_choice(generator, [1, 1, 1])])
        return filter2d(x, kernels.sinc)

    if _rand(generator).item() < 0.5:
        out = _random_jpeg(resize_and_sinc(out), second, generator)
    else:
        out = resize_and_sinc(_random_jpeg(out, second, generator))
    return quantize(out)


# ------------------------------------------------------------------------------------------------------ #
# Presets and folders
# ------------------------------------------------------------------------------------------------------ #


def crop_to_multiple(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop the bottom/right so that height and width are multiples of scale."""
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]


def make_lr(
    hr: torch.Tensor, scale: int, preset: str = "realesrgan", generator: torch.Generator | None = None,
    kernels: Kernels | None = None,
) -> torch.Tensor:
    """LR of an NCHW HR batch (first cropped to a multiple of scale) by a preset: realesrgan|bicubic|avgpool.
    realesrgan needs a generator on hr's device (and takes pre-drawn `kernels`, see `degrade`)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    if min(hr.shape[-2:]) < scale:
        raise ValueError(f"image of size {tuple(hr.shape[-2:])} is smaller than the scale {scale}")
    hr = crop_to_multiple(hr, scale)
    if preset == "bicubic":
        return quantize(imresize(hr, scale=1 / scale))
    if preset == "avgpool":
        return quantize(avgpool_downscale(hr, scale))
    if generator is None:
        raise ValueError("the realesrgan preset needs a torch.Generator")
    return degrade(hr, DegradationConfig(scale=scale), generator, kernels)


def image_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for image `index` of a run seeded with `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def degrade_folder(hr_dir, out_dir, scale=4, preset="realesrgan", seed=0) -> int:
    """Write OUT/hr/NAME.png (HR cropped to a multiple of scale) and OUT/lr/NAME.png for each image; return
    how many pairs were written."""
    out_dir = Path(out_dir)
    written = 0
    # Each image gets its own generator, seeded from (seed, its index in the sorted listing), so an
    # image's LR does not depend on which other images are in the folder before or after it is read.
    for index, path in enumerate(tqdm(list_images(hr_dir), desc="degrade", unit="img")):
        try:
            hr = read_image(path).rgb[None]
        except ImageReadError as e:
            warnings.warn(f"skipped {path}: {e}", stacklevel=2)
            continue
        if min(hr.shape[-2:]) < scale:
            warnings.warn(f"skipped {path}: smaller than the scale {scale}", stacklevel=2)
            continue
        hr = crop_to_multiple(hr, scale)
        generator = torch.Generator().manual_seed(image_seed(seed, index))
        lr = make_lr(hr, scale, preset, generator)
        save_image(hr[0], out_dir / "hr" / f"{path.stem}.png")
        save_image(lr[0], out_dir / "lr" / f"{path.stem}.png")
        written += 1
    return written
