"""NIQE (Mittal et al. 2013), the no-reference metric of the SR papers, as the original MATLAB release
computes it, with the MATLAB pristine parameters (``weights.load('niqe')``).

:class:`instantsr.metrics.MetricSuite` scores it by name (``niqe``) alongside the full-reference metrics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from instantsr import weights
from instantsr.color import rgb_to_y

__all__ = ["niqe"]

_NIQE_BLOCK = 96


def _gamma_table(ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gam = torch.arange(0.2, 10.0 + 0.001, 0.001, dtype=torch.float64, device=ref.device)
    r_gam = torch.exp(2 * torch.lgamma(2 / gam) - torch.lgamma(1 / gam) - torch.lgamma(3 / gam))
    return gam, r_gam


def _aggd(block: torch.Tensor, table) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric generalised Gaussian fit (alpha, beta_l, beta_r) of each (B, h, w) block."""
    gam, r_gam = table
    flat = block.flatten(1)
    left, right = flat < 0, flat > 0
    left_std = torch.sqrt((flat.pow(2) * left).sum(1) / left.sum(1))
    right_std = torch.sqrt((flat.pow(2) * right).sum(1) / right.sum(1))
    gammahat = left_std / right_std
    rhat = flat.abs().mean(1).pow(2) / flat.pow(2).mean(1)
    rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    alpha = gam[(r_gam[None] - rhatnorm[:, None]).abs().argmin(1)]
    ratio = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))
    return alpha, left_std * ratio, right_std * ratio


def _niqe_features(blocks: torch.Tensor, table) -> torch.Tensor:
    """The 18 NIQE features of each (B, h, w) block of normalised luminance."""
    alpha, bl, br = _aggd(blocks, table)
    feats = [alpha, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        alpha, bl, br = _aggd(blocks * torch.roll(blocks, shift, dims=(1, 2)), table)
        mean = (br - bl) * torch.exp(torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha))
        feats += [alpha, mean, bl, br]
    return torch.stack(feats, 1)


def _mscn(img: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    # (img - mu) / (sigma + 1) with a 7x7 Gaussian, replicate borders, as MATLAB computequality.m.
    k = window.shape[-1] // 2
    pad = F.pad(img, (k, k, k, k), mode="replicate")
    w = window.to(img)[None, None]
    mu = F.conv2d(pad, w)
    var = F.conv2d(pad * pad, w) - mu**2
    # In a flat neighbourhood img - mu is exactly 0, but filtering leaves rounding noise (< 1e-12 on the
    # 0..255 scale; real values are > 1e-9) whose signs would decide the AGGD fits of flat blocks (the
    # left/right split) and so depend on the summation order. Keep the exact zeros.
    diff = img - mu
    return diff.masked_fill(diff.abs() < 1e-10, 0.0) / (var.abs().sqrt() + 1)


def _blocks(img: torch.Tensor, bh: int, bw: int) -> torch.Tensor:
    # (N, 1, H, W) with H, W multiples of the block -> (N, nblocks, bh, bw)
    n, _, h, w = img.shape
    x = img.view(n, h // bh, bh, w // bw, bw).permute(0, 1, 3, 2, 4)
    return x.reshape(n, -1, bh, bw)


_LUMA = {
    "gray": (0.298936021293775, 0.587043074451121, 0.114020904255103),  # MATLAB rgb2gray
    "yiq": (0.299, 0.587, 0.114),  # IQA-PyTorch's default
}


def _niqe_gray(x: torch.Tensor, color_space: str) -> torch.Tensor:
    # 8-bit luminance on the 0..255 scale, as MATLAB computes it from the uint8 image imread gives.
    if x.shape[1] not in (1, 3):
        raise ValueError(f"NIQE expects RGB or gray images, got {x.shape[1]} channels")
    x = (x.clamp(0, 1) * 255.0).round()
    if x.shape[1] == 3:
        if color_space == "ycbcr":
            x = rgb_to_y(x / 255.0) * 255.0
        elif color_space in _LUMA:
            x = (x * x.new_tensor(_LUMA[color_space]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise ValueError(f"color_space must be one of {', '.join(_LUMA)} or 'ycbcr', got {color_space!r}")
    return torch.floor(x + 0.5)  # MATLAB round (half away from zero) back to uint8


def niqe(x: torch.Tensor, crop_border: int = 0, color_space: str = "gray", params: dict | None = None) -> torch.Tensor:
    """NIQE (Mittal et al. 2013) with the MATLAB pristine model, lower is better; shape (N,).

    Follows the original MATLAB release (niqe_release: computequality.m, computefeature.m,
    estimateaggdparam.m) run on ``rgb2gray`` of the 8-bit image, which is what IQA-PyTorch's
    ResultsCalibra lists as ``niqe`` (its ResultsCalibra.md, note 11). Luminance: ``color_space='gray'``
    (MATLAB ``rgb2gray``), ``'yiq'`` (0.299 R + 0.587 G + 0.114 B, IQA-PyTorch's default) or ``'ycbcr'``
    (BT.601 Y, as BasicSR), computed from the RGB rounded to 8 bits and rounded again; cropped to whole
    96x96 blocks; features on two scales (the second after MATLAB bicubic ``imresize`` by 1/2); then the
    Mahalanobis-like distance between the fitted Gaussian and the pristine one. Images must hold at
    least two 96x96 blocks (after the crop).
    ``params``: the tensors of ``weights.load('niqe')``, loaded from the cache when None.
    """
    from instantsr.imresize import imresize

    if x.ndim != 4:
        raise ValueError(f"expected NCHW tensors, got {tuple(x.shape)}")
    params = weights.load("niqe") if params is None else params
    dev = x.device
    mu_p = params["mu_pris_param"].to(dev, torch.float64).view(-1)
    cov_p = params["cov_pris_param"].to(dev, torch.float64)
    window = params["gaussian_window"].to(dev, torch.float64)

    img = _niqe_gray(x.detach().double(), color_space)
    img = img[..., crop_border:-crop_border, crop_border:-crop_border] if crop_border > 0 else img
    h, w = img.shape[-2:]
    nh, nw = h // _NIQE_BLOCK, w // _NIQE_BLOCK
    if nh * nw < 2:
        raise ValueError(f"NIQE needs at least two {_NIQE_BLOCK}x{_NIQE_BLOCK} blocks, got a {h}x{w} image")
    img = img[..., : nh * _NIQE_BLOCK, : nw * _NIQE_BLOCK]

    table = _gamma_table(img)
    feats = []
    for scale in (1, 2):
        b = _NIQE_BLOCK // scale
        blocks = _blocks(_mscn(img, window), b, b)  # (N, K, b, b)
        n, k = blocks.shape[:2]
        feats.append(_niqe_features(blocks.reshape(n * k, b, b), table).view(n, k, -1))
        if scale == 1:
            img = imresize(img / 255.0, scale=0.5, antialias=True) * 255.0
    feats = torch.cat(feats, -1)  # (N, K, 36)

    scores = []
    for f in feats:
        mu_d = torch.nanmean(f, 0)
        rows = f[~torch.isnan(f).any(1)]
        cov_d = torch.cov(rows.T)
        diff = (mu_p - mu_d)[None]
        scores.append(torch.sqrt(diff @ torch.linalg.pinv((cov_p + cov_d) / 2) @ diff.T).view(()))
    return torch.stack(scores)
