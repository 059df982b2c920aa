"""Image quality metrics as the SR papers compute them.

Every function takes float tensors NCHW, RGB, in [0, 1] and returns one value per image, shape (N,).
Nothing is quantised here: to score 8-bit results, round them first (``instantsr.degrade.quantize``).

- :func:`psnr`, :func:`ssim`: on the Y channel of YCbCr (ITU-R BT.601 as MATLAB ``rgb2ycbcr``,
  :func:`instantsr.color.rgb_to_y`) by default, no border crop by default; SSIM is the MATLAB/BasicSR one
  (11x11 Gaussian window, sigma 1.5, valid filtering, values on the 0..255 scale). PSNR of identical
  images is ``inf`` (as BasicSR).
- :class:`LPIPS` (AlexNet by default, v0.1 linear layers) and :class:`DISTS` (VGG16 with L2 pooling):
  the official formulas in plain torch; frozen weights, differentiable in the inputs (usable as losses).
- NIQE (:func:`instantsr.niqe.niqe`) with the MATLAB pristine parameters, as the original MATLAB release
  computes it.
- Artifact measures of :mod:`instantsr.artifacts` (no HR needed): ``grid`` (ratio of period-p to period p+-1
  pattern amplitude, about 1 without a grid), ``grid_levels`` (RMS amplitude of the period-p grid in 8-bit
  levels) and ``color`` (colour shift against the bicubic upsample of the LR, in 8-bit levels; needs the LR).
- :class:`MetricSuite` builds the networks once and scores batches by name.

Pretrained weights come from :mod:`instantsr.weights` (``instantsr weights fetch``).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from instantsr import weights
from instantsr.artifacts import color_shift, grid_strength
from instantsr.color import rgb_to_y
from instantsr.niqe import niqe

__all__ = [
    "ARTIFACTS",
    "DISTS",
    "FULL_REFERENCE",
    "HIGHER_IS_BETTER",
    "LPIPS",
    "MetricSuite",
    "NEEDS_LR",
    "NO_HR",
    "NO_REFERENCE",
    "psnr",
    "pyiqa_metric",
    "ssim",
]

FULL_REFERENCE = ("psnr", "ssim", "lpips", "dists")
NO_REFERENCE = ("niqe",)  # no-reference image quality: the SR image alone
ARTIFACTS = ("grid", "grid_levels", "color")  # instantsr.artifacts: no HR either
NEEDS_LR = ("color",)  # ... but the LR image the SR image was made from
NO_HR = NO_REFERENCE + ARTIFACTS  # every metric that needs no HR image
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "dists": False, "niqe": False,
                    "grid": False, "grid_levels": False, "color": False}


# ------------------------------------------------------------------------------------------------------ #
# PSNR / SSIM
# ------------------------------------------------------------------------------------------------------ #


def _crop(x: torch.Tensor, border: int) -> torch.Tensor:
    return x[..., border:-border, border:-border] if border > 0 else x


def _pair(sr: torch.Tensor, hr: torch.Tensor, y_channel: bool, crop_border: int) -> tuple[torch.Tensor, torch.Tensor]:
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr shapes differ: {tuple(sr.shape)} vs {tuple(hr.shape)} (N, C, H, W)")
    if sr.ndim != 4:
        raise ValueError(f"expected NCHW tensors, got {tuple(sr.shape)}")
    sr, hr = _crop(sr, crop_border).double(), _crop(hr, crop_border).double()
    if y_channel and sr.shape[1] == 3:
        sr, hr = rgb_to_y(sr), rgb_to_y(hr)
    return sr, hr


def psnr(sr: torch.Tensor, hr: torch.Tensor, y_channel: bool = True, crop_border: int = 0) -> torch.Tensor:
    """PSNR in dB for data range 1, computed in float64. Identical images give ``inf``."""
    sr, hr = _pair(sr, hr, y_channel, crop_border)
    mse = (sr - hr).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / mse)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(sr: torch.Tensor, hr: torch.Tensor, y_channel: bool = True, crop_border: int = 0) -> torch.Tensor:
    """SSIM (Wang et al. 2004; MATLAB ``ssim_index``/BasicSR): values on 0..255, 11x11 Gaussian window with
    sigma 1.5, valid filtering, mean of the SSIM map over pixels and channels. Float64."""
    sr, hr = _pair(sr, hr, y_channel, crop_border)
    x, y = sr * 255.0, hr * 255.0
    c = x.shape[1]
    g = _gaussian_1d().to(x.device)
    gh, gv = g.view(1, 1, 1, -1).expand(c, 1, 1, 11), g.view(1, 1, -1, 1).expand(c, 1, 11, 1)

    def filt(t):  # the separable 11x11 Gaussian, 'valid'
        return F.conv2d(F.conv2d(t, gh, groups=c), gv, groups=c)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return ssim_map.mean(dim=(1, 2, 3))


# ------------------------------------------------------------------------------------------------------ #
# Backbones with torchvision key names (features.N.weight), so converted ImageNet weights load strictly
# ------------------------------------------------------------------------------------------------------ #


def _alexnet_features() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
    )


_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _vgg16_features(pool=None) -> nn.Sequential:
    """torchvision ``vgg16().features``; ``pool(channels)`` replaces each max-pool when given (DISTS)."""
    layers: list[nn.Module] = []
    channels = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2) if pool is None else pool(channels))
        else:
            layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU()]
            channels = v
    return nn.Sequential(*layers)


def _fast_layout(x: torch.Tensor) -> torch.Tensor:
    # channels-last convolutions are about 1.6x faster on CPU; the values are the same
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


def _freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


# ------------------------------------------------------------------------------------------------------ #
# LPIPS
# ------------------------------------------------------------------------------------------------------ #


class _NetLin(nn.Module):
    # LPIPS's NetLinLayer: Sequential(Dropout, Conv1x1) -> key "model.1.weight". The dropout is an
    # identity here: it is off in evaluation, and a frozen perceptual loss should not drop features.
    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x):
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS (Zhang et al. 2018), version 0.1 linear layers, ``net`` in {'alex', 'vgg'}.

    ``forward(x, y)`` takes images in [0, 1] (scaled to [-1, 1], then LPIPS's scaling layer) and returns
    the distance per image, shape (N,). Parameters are frozen; gradients flow to the inputs.
    ``pretrained=False`` leaves random weights (for shape tests only).
    """

    _SLICES = {"alex": (2, 5, 8, 10, 12), "vgg": (4, 9, 16, 23, 30)}  # ends of the five feature slices
    _CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
    _BACKBONE = {"alex": "alexnet", "vgg": "vgg16"}

    def __init__(self, net: str = "alex", pretrained: bool = True):
        super().__init__()
        if net not in self._SLICES:
            raise ValueError(f"LPIPS net must be 'alex' or 'vgg', got {net!r}")
        self.net_name = net
        # torchvision's key layout under net.: net.features.N.*
        self.net = nn.Module()
        self.net.features = _alexnet_features() if net == "alex" else _vgg16_features()
        for i, c in enumerate(self._CHANNELS[net]):
            setattr(self, f"lin{i}", _NetLin(c))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        if pretrained:
            state = {f"net.{k}": v for k, v in weights.load(self._BACKBONE[net]).items()}
            state.update(weights.load(f"lpips_{net}"))
            self.load_state_dict(state, strict=True)
        _freeze(self)

    @classmethod
    def from_cache(cls, net: str = "alex") -> "LPIPS":
        return cls(net, pretrained=True)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, start, x = [], 0, _fast_layout(x)
        for end in self._SLICES[self.net_name]:
            for i in range(start, end):
                x = self.net.features[i](x)
            feats.append(x)
            start = end
        return feats

    @staticmethod
    def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
        # f / (||f||_channels + eps); the clamp only keeps the gradient finite where f is all zeros
        norm = f.pow(2).sum(1, keepdim=True).clamp_min(1e-20).sqrt()
        return f / (norm + eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self._features(((2 * x - 1) - self.shift) / self.scale)
        fy = self._features(((2 * y - 1) - self.shift) / self.scale)
        total = 0
        for i, (a, b) in enumerate(zip(fx, fy)):
            d = (self._unit(a) - self._unit(b)).pow(2)
            total = total + getattr(self, f"lin{i}")(d).mean(dim=(2, 3))
        return total.view(-1)


# ------------------------------------------------------------------------------------------------------ #
# DISTS
# ------------------------------------------------------------------------------------------------------ #


class _L2Pool(nn.Module):
    # DISTS L2pooling: sqrt(conv(x^2, hanning 3x3, stride 2, pad 1) + 1e-12), depthwise.
    def __init__(self, channels: int):
        super().__init__()
        a = np.hanning(5)[1:-1]
        g = torch.tensor(a[:, None] * a[None, :], dtype=torch.float32)
        g = g / g.sum()
        self.register_buffer("filter", g.expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x):
        out = F.conv2d(x.pow(2), self.filter, stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


class DISTS(nn.Module):
    """DISTS (Ding et al. 2020) as ``DISTS_pytorch``: VGG16 with L2 pooling, learned alpha/beta.

    ``forward(x, y)`` takes images in [0, 1] and returns the distance per image, shape (N,).
    Parameters are frozen; gradients flow to the inputs.
    """

    _STAGE_ENDS = (4, 9, 16, 23, 30)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (exclusive ends)
    CHANNELS = (3, 64, 128, 256, 512, 512)

    def __init__(self, pretrained: bool = True):
        super().__init__()
        self.features = nn.Sequential(*list(_vgg16_features(pool=_L2Pool))[:30])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        n = sum(self.CHANNELS)
        gen = torch.Generator().manual_seed(0)
        self.alpha = nn.Parameter(0.1 + 0.01 * torch.randn(1, n, 1, 1, generator=gen))
        self.beta = nn.Parameter(0.1 + 0.01 * torch.randn(1, n, 1, 1, generator=gen))
        if pretrained:
            state = {f"features.{k.split('.', 1)[1]}": v for k, v in weights.load("vgg16").items()}
            state.update(weights.load("dists"))
            self.load_state_dict(state, strict=True)
        _freeze(self)

    @classmethod
    def from_cache(cls) -> "DISTS":
        return cls(pretrained=True)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, h, start = [x], _fast_layout((x - self.mean) / self.std), 0
        for end in self._STAGE_ENDS:
            for i in range(start, end):
                h = self.features[i](h)
            feats.append(h)
            start = end
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = self._features(x), self._features(y)
        c1 = c2 = 1e-6
        w_sum = self.alpha.sum() + self.beta.sum()
        alpha = torch.split(self.alpha / w_sum, self.CHANNELS, dim=1)
        beta = torch.split(self.beta / w_sum, self.CHANNELS, dim=1)
        dist1 = dist2 = 0
        for k in range(len(self.CHANNELS)):
            mx, my = fx[k].mean([2, 3], keepdim=True), fy[k].mean([2, 3], keepdim=True)
            s1 = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            dist1 = dist1 + (alpha[k] * s1).sum(1, keepdim=True)
            vx = ((fx[k] - mx) ** 2).mean([2, 3], keepdim=True)
            vy = ((fy[k] - my) ** 2).mean([2, 3], keepdim=True)
            cxy = (fx[k] * fy[k]).mean([2, 3], keepdim=True) - mx * my
            s2 = (2 * cxy + c2) / (vx + vy + c2)
            dist2 = dist2 + (beta[k] * s2).sum(1, keepdim=True)
        return (1 - (dist1 + dist2)).view(-1)


# ------------------------------------------------------------------------------------------------------ #
# A suite of metrics by name
# ------------------------------------------------------------------------------------------------------ #


class MetricSuite:
    """Scores batches with the metrics ``names``, building the networks once.

    ``suite(sr, hr, lr)`` -> {name: tensor (N,)} on the CPU in float64; ``hr`` may be None when only metrics
    of ``NO_HR`` are asked for, ``lr`` (the LR images `sr` was made from) is needed by ``color`` only.
    ``crop_border``/``y_channel`` apply to PSNR and SSIM (``crop_border`` to NIQE too); ``grid_period`` is the
    period of ``grid``/``grid_levels`` (4: the latent stride of the shipped x4 model); ``scale`` the SR/LR
    factor of ``color`` unless a call gives its own.
    """

    KNOWN = FULL_REFERENCE + NO_REFERENCE + ARTIFACTS

    def __init__(self, names: Iterable[str], device: str | torch.device = "cpu", crop_border: int = 0,
                 y_channel: bool = True, grid_period: int = 4, scale: int = 4):
        self.names = tuple(names)
        unknown = [n for n in self.names if n not in self.KNOWN]
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(self.KNOWN)}")
        self.device = torch.device(device)
        self.crop_border = crop_border
        self.y_channel = y_channel
        if grid_period < 2:
            raise ValueError(f"the grid period must be at least 2, got {grid_period}")
        self.grid_period = int(grid_period)
        self.scale = int(scale)
        self._nets: dict[str, nn.Module] = {}
        if "lpips" in self.names:
            self._nets["lpips"] = LPIPS("alex").to(self.device)
        if "dists" in self.names:
            self._nets["dists"] = DISTS().to(self.device)
        self._niqe_params = weights.load("niqe") if "niqe" in self.names else None

    @property
    def needs_reference(self) -> bool:
        return any(n in FULL_REFERENCE for n in self.names)

    @property
    def needs_lr(self) -> bool:
        return any(n in NEEDS_LR for n in self.names)

    @torch.no_grad()
    def __call__(self, sr: torch.Tensor, hr: torch.Tensor | None = None, lr: torch.Tensor | None = None,
                 scale: int | None = None) -> dict[str, torch.Tensor]:
        if hr is None and self.needs_reference:
            raise ValueError(f"metrics {[n for n in self.names if n in FULL_REFERENCE]} need reference images")
        if lr is None and self.needs_lr:
            raise ValueError(f"metric(s) {', '.join(n for n in self.names if n in NEEDS_LR)} need the LR images "
                             "the SR images were made from")
        sr = sr.to(self.device, torch.float32)
        hr = hr.to(self.device, torch.float32) if hr is not None else None
        out = {}
        grid = None  # (ratio, levels), computed once for both names
        for name in self.names:
            if name == "psnr":
                v = psnr(sr, hr, self.y_channel, self.crop_border)
            elif name == "ssim":
                v = ssim(sr, hr, self.y_channel, self.crop_border)
            elif name in ("lpips", "dists"):
                v = self._nets[name](sr, hr)
            elif name in ("grid", "grid_levels"):
                grid = grid if grid is not None else grid_strength(sr, self.grid_period)
                v = grid[0] if name == "grid" else grid[1]
            elif name == "color":
                v = color_shift(sr, lr.to(self.device, torch.float32), scale or self.scale)
            else:  # niqe
                v = niqe(sr, self.crop_border, params=self._niqe_params)
            out[name] = v.detach().double().cpu()
        return out


def pyiqa_metric(name: str, **kwargs):
    """An IQA-PyTorch metric by name (``pyiqa.create_metric``), for metrics not built in here.

    Needs the optional extra: ``pip install instantsr[extra-metrics]``. Note pyiqa downloads its
    own weights on first use.
    """
    try:
        import pyiqa
    except ImportError as e:
        raise ImportError(f"pyiqa_metric({name!r}) needs pyiqa: pip install instantsr[extra-metrics]") from e
    return pyiqa.create_metric(name, **kwargs)
