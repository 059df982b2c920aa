"""Low-resolution images from high-resolution ones: MATLAB bicubic, average pooling, and the Real-ESRGAN
second-order degradation (Wang et al. 2021) with the ranges of its x4 config, as ResShift trains on.

Images are float tensors in [0, 1], NCHW. Every random draw comes from the `torch.Generator` a caller
passes, so the same seed gives the same LR bit for bit. The pieces live in their own modules: MATLAB
`imresize` in :mod:`instantsr.imresize`, the JPEG simulation in :mod:`instantsr.jpeg`, the blur kernel
shapes in :mod:`instantsr.kernels`; this module draws their parameters and chains them.
"""

from __future__ import annotations

import math
import warnings
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from instantsr.imresize import imresize
from instantsr.io import ImageReadError, list_images, read_image, save_image
from instantsr.jpeg import jpeg
from instantsr.kernels import (
    KERNEL_KINDS,
    KERNEL_SIZES,
    Profile,
    bivariate_kernel,
    circular_lowpass_kernel,
    stack_kernels,
)

PRESETS = ("realesrgan", "bicubic", "avgpool")


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the 8-bit grid, as saving to an 8-bit file would."""
    return torch.clamp((x * 255.0).round(), 0, 255) / 255.0


def avgpool_downscale(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Average over non-overlapping scale x scale blocks (the YONOS-SR x8 degradation)."""
    return F.avg_pool2d(x, scale)


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
    return Kernels(stack_kernels(first), stack_kernels(second), stack_kernels(sincs))


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
