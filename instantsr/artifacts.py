"""No-reference measures of two artifacts of latent super-resolution: a periodic grid, and colour casts.

They need no HR image, so they work on LR-only test sets (RealSet65) as well as on paired ones. Every function
takes float tensors NCHW (RGB) in [0, 1] and returns one value per image, shape (N,), in float64.

Why: a codec that encodes by pixel-unshuffle (our shipped x4 model: a 4x4 block of pixels per latent
position, decoded by pixel_shuffle) turns any error of a latent value into an error of a whole 4x4 block at a
fixed place in it. Errors that repeat from block to block show up on flat areas as a pattern of period 4 (the
latent stride), tied to the image's pixel grid: a "grid". The same errors shift colours when they are
correlated across channels.

- :func:`grid_strength` -> ``(ratio, levels)``:

  * ``ratio`` (metric ``grid``, no unit, lower is better): how much more power the image has in period-p
    patterns than in period-(p-1) and period-(p+1) patterns, as a ratio of amplitudes; about 1 (or below)
    for a clean photo or a bicubic upsample, above 1 where a period-p grid stands out of the noise and texture.
  * ``levels`` (metric ``grid_levels``, 8-bit levels, lower is better): the RMS amplitude of the period-p
    pattern beyond what noise and texture give, on the 0..255 scale; about 0 for clean images; a zero-mean
    p x p tile of RMS A levels added to an image reads as about A.

  How: per RGB channel a high-pass ``h = x - box_p(x)`` (``box_p``: the mean over a p x p window), which keeps a
  zero-mean period-p pattern exactly (``box_p`` annihilates it) and takes out smooth content. ``h`` is split into
  non-overlapping blocks of ``block`` px (ragged edges left out); in each block, for each period q in
  (p-1, p, p+1), ``h`` is averaged over each phase class (y mod q, x mod q), which gives a q x q tile; its mean
  is subtracted; ``r_q^2`` is the mean of its squares and ``n_q`` the number of samples per phase class. Noise
  of variance s^2 gives ``r_q^2 ~ s^2 (q^2-1)/q^2 / n_q``, so ``e_q = r_q^2 n_q q^2/(q^2-1)`` estimates the
  per-pixel variance for every q, and ``b = (e_{p-1} + e_{p+1}) / 2`` is the baseline a period-p tile would
  have without a grid. Per block: ``ratio = sqrt(e_p / b)`` and ``a^2 = r_p^2 - b (p^2-1)/p^2 / n_p`` (the
  period-p power beyond what noise and texture give; an estimate, negative where it falls below the baseline),
  both averaged over the channels. Per image: ``ratio`` is the median over the blocks (a grid on flat areas
  counts even where textured blocks dominate the power) and ``levels = 255 sqrt(max(0, mean over blocks of
  a^2))``. The clamp comes after the mean, not per block: clamped per block, plain noise of 10 levels would
  read 0.5 levels of grid (and clean photos 0.2 to 1.7).

  What else reads as a grid: anything periodic whose period divides p (a period-2 pattern, e.g. demosaicing,
  is also a period-4 one), part of a period-2p pattern (JPEG 8x8 blocks at p = 4), and fine textures richer
  at the period-p frequencies (k/p cycles per pixel) than at those of p-1 and p+1. Compare a model with
  bicubic and with real photos of the same kind rather than with 0.

- :func:`color_shift` (metric ``color``, 8-bit levels, lower is better): the mean colour shift of an SR image
  against the bicubic upsample of its own LR, after both are low-passed (average pooling with kernel = stride =
  2 x scale: sharpening and textures do not count, only colour casts): per low-passed pixel the distance
  ``255 sqrt(dCb^2 + dCr^2)`` between the full-range BT.601 chroma of the two (Cb = -0.168736 R - 0.331264 G
  + 0.5 B, Cr = 0.5 R - 0.418688 G - 0.081312 B), averaged over the pixels. The reference is torch's bicubic
  (``F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)``), so torch's
  bicubic reads 0; MATLAB's (``instantsr eval --baseline bicubic``, another kernel) reads 0.01 to 0.15 on
  photos, up to about 0.35 on synthetic images full of saturated mid-frequency colour.
- :func:`chroma`: the mean per-pixel chroma magnitude ``255 sqrt(Cb^2 + Cr^2)``, 0 for a grey image: on a grey
  LR it is the colour an upscaler makes up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["bicubic_reference", "chroma", "color_shift", "grid_excess", "grid_ratio_excess", "grid_strength",
           "rgb_to_cbcr"]

_EPS = 1e-12  # in [0, 1]^2 units, (0.00026 level)^2: it only matters where both powers are about 0


def _check(x: torch.Tensor, what: str = "sr") -> None:
    if x.ndim != 4:
        raise ValueError(f"{what}: expected an NCHW batch, got shape {tuple(x.shape)}")


def _phase_power(blocks: torch.Tensor, q: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, int]:
    """blocks (N, C, ny, bh, nx, bw) -> (r_q^2 per block (N, C, ny, nx), n_q): the power of the mean-free q x q
    tile of phase-class means (y mod q, x mod q) of each block, its ragged edges cropped to a multiple of q."""
    n, c, ny, bh, nx, bw = blocks.shape
    kh, kw = bh // q, bw // q
    b = blocks[:, :, :, :kh * q, :, :kw * q].reshape(n, c, ny, kh, q, nx, kw, q)
    tile = b.sum(dim=(3, 6)).to(dtype) / (kh * kw)  # (N, C, ny, q, nx, q): the mean of each phase class
    tile = tile - tile.mean(dim=(3, 5), keepdim=True)
    return tile.pow(2).mean(dim=(3, 5)), kh * kw


def _box(x: torch.Tensor, p: int) -> torch.Tensor:
    """The mean over each p x p window, 'valid' (as avg_pool2d with stride 1, about twice as fast on CPU):
    (..., H, W) -> (..., H-p+1, W-p+1); output [i, j] is the mean of x[i:i+p, j:j+p]."""
    hv, wv = x.shape[-2] - p + 1, x.shape[-1] - p + 1
    rows = x[..., 0:hv, :].clone()
    for k in range(1, p):
        rows += x[..., k:k + hv, :]
    out = rows[..., 0:wv].clone()
    for k in range(1, p):
        out += rows[..., k:k + wv]
    return out.mul_(1.0 / (p * p))


def _highpass_blocks(x: torch.Tensor, p: int, block: int) -> torch.Tensor | None:
    """``h = x - box_p(x)`` cut into blocks (N, C, ny, bh, nx, bw), its first row and column at image
    coordinates that are multiples of p; None where a side is shorter than p+1 (see :func:`grid_strength`)."""
    if p < 2:
        raise ValueError(f"grid period must be at least 2, got {p}")
    n, c = x.shape[:2]
    off = p // 2  # h at output index i belongs to image pixel i + off (the box window runs i .. i+p-1)
    box = _box(x, p)
    h = x[..., off:off + box.shape[-2], off:off + box.shape[-1]] - box
    start = (-off) % p  # first index whose image coordinate is a multiple of p
    h = h[..., start:, start:]
    hh, hw = h.shape[-2:]
    if min(hh, hw) < p + 1:
        return None
    bh, bw = min(block, hh), min(block, hw)
    ny, nx = hh // bh, hw // bw
    return h[..., :ny * bh, :nx * bw].reshape(n, c, ny, bh, nx, bw)  # block (iy, ix) is [:, :, iy, :, ix, :]


def _grid_terms(blocks: torch.Tensor, p: int, dtype: torch.dtype, fixed_baseline: bool = False,
                floor: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per block and channel (N, C, ny, nx): ``sqrt(e_p / b)`` and ``a^2``, the period-p power beyond the baseline
    of periods p-1 and p+1 (see :func:`grid_strength`); `fixed_baseline`: no gradient through the baseline;
    `floor`: the ratio's baseline is at least this."""
    e, r2_p, n_p = {}, None, 0
    for q in (p - 1, p, p + 1):
        r2, nq = _phase_power(blocks, q, dtype)
        e[q] = r2 * nq * q * q / (q * q - 1)
        if q == p:
            r2_p, n_p = r2, nq
    base = (e[p - 1] + e[p + 1]) / 2
    if fixed_baseline:
        base = base.detach()
    return torch.sqrt((e[p] + _EPS) / (base.clamp_min(floor) + _EPS)), r2_p - base * (p * p - 1) / (p * p) / n_p


def grid_excess(x: torch.Tensor, period: int = 4, block: int = 32) -> torch.Tensor:
    """The power of the period-`period` pattern of `x` beyond what noise and texture give (``a^2`` of
    :func:`grid_strength`, clamped at 0 per block), averaged over blocks and channels: (N,), differentiable, in
    the units of `x` squared. The loss that takes the grid out of a pixel-shuffle decoder (`instantsr train
    decoder`'s `grid_weight`): a photo has no pattern locked to the latent's stride. The baseline carries no
    gradient, so the loss lowers the period-p pattern and never raises the periods around it."""
    blocks = _highpass_blocks(x, period, block)
    if blocks is None:
        raise ValueError(f"grid_excess needs images of more than {2 * period} px a side")
    return _grid_terms(blocks, period, x.dtype, fixed_baseline=True)[1].clamp_min(0).mean(dim=(1, 2, 3))


def grid_ratio_excess(x: torch.Tensor, period: int = 4, block: int = 32,
                      floor: float = (0.3 / 255) ** 2) -> torch.Tensor:
    """How far the per-block ratio of :func:`grid_strength` stands above 1, ``mean(relu(ratio - 1))`` over blocks and
    channels: (N,), differentiable, for `x` in [0, 1]. Where :func:`grid_excess` weighs blocks by their power (so
    textured ones dominate), this weighs every block alike, as the `grid` measure's median does: the loss for a
    grid on flat areas. The baseline carries no gradient and is floored at `floor` (about the variance of 8-bit
    rounding), so a nearly constant block neither divides by zero nor counts a grid that rounding would hide."""
    blocks = _highpass_blocks(x, period, block)
    if blocks is None:
        raise ValueError(f"grid_ratio_excess needs images of more than {2 * period} px a side")
    ratio = _grid_terms(blocks, period, x.dtype, fixed_baseline=True, floor=floor)[0]
    return (ratio - 1).clamp_min(0).mean(dim=(1, 2, 3))


def grid_strength(sr: torch.Tensor, period: int = 4, block: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The strength of a period-`period` grid in each image: ``(ratio, levels)``, each of shape (N,), float64.

    ``ratio``: median over blocks of ``sqrt(e_p / b)`` (about 1 without a grid); ``levels``: RMS amplitude of the
    period-p pattern beyond noise and texture, in 8-bit levels (the module docstring has the definitions).

    The high-pass ``h = x - box_p(x)`` exists on the valid area (the image less p-1 pixels in each direction); it
    is cropped so that its first row and column are image pixels whose coordinates are multiples of p, so the
    phase classes of period p are those of the image's pixel grid. Blocks of ``block`` x ``block`` px tile ``h``
    from there; the ragged right and bottom edges (less than one block) are left out. A side of ``h`` shorter
    than one block makes one block of that whole side (an image smaller than a block is one block); a side
    shorter than p+1 px (too short for the period-(p+1) baseline) gives NaN.
    """
    _check(sr)
    n = sr.shape[0]
    p = period
    blocks = _highpass_blocks(sr.float(), p, block)
    nan = torch.full((n,), float("nan"), dtype=torch.float64, device=sr.device)
    if blocks is None:
        return nan, nan.clone()

    ratio, amp2 = _grid_terms(blocks, p, torch.float64)
    ratio = ratio.mean(dim=1)  # (N, ny, nx), over channels
    # the period-p power beyond what the baseline says noise and texture give; negative where the estimate
    # falls below it: clamped once per image, after the mean, so noise does not add a positive bias
    amp2 = amp2.mean(dim=1)
    ratio = ratio.flatten(1).median(dim=1).values
    levels = 255.0 * amp2.flatten(1).mean(dim=1).clamp_min(0).sqrt()
    return ratio, levels


def rgb_to_cbcr(x: torch.Tensor) -> torch.Tensor:
    """Full-range BT.601 (JPEG) chroma without the offset: (N,3,H,W) -> (N,2,H,W) [Cb, Cr], 0 for grey."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected an RGB batch (N, 3, H, W), got {tuple(x.shape)}")
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    # the same sums written as differences (the weights of each row add up to 0): exactly 0 for grey
    cb = -0.168736 * (r - b) - 0.331264 * (g - b)
    cr = -0.418688 * (g - r) - 0.081312 * (b - r)
    return torch.stack([cb, cr], 1)


def chroma(sr: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel chroma magnitude ``255 sqrt(Cb^2 + Cr^2)`` in 8-bit levels, (N,) float64; 0 for grey."""
    cbcr = rgb_to_cbcr(sr.double())
    return 255.0 * cbcr.pow(2).sum(1).sqrt().mean(dim=(1, 2))


def bicubic_reference(lr: torch.Tensor, scale: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """torch bicubic upsample of `lr` by `scale`, clamped to [0, 1], cropped to `size` (H, W) when given."""
    ref = F.interpolate(lr.float(), scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
    return ref if size is None else ref[..., :size[0], :size[1]]


def color_shift(sr: torch.Tensor, lr: torch.Tensor, scale: int) -> torch.Tensor:
    """Mean colour shift of `sr` against the bicubic upsample of `lr`, in 8-bit levels, (N,) float64.

    Both are average-pooled with kernel = stride = 2 x scale (ragged edges left out), converted to BT.601 chroma
    (:func:`rgb_to_cbcr`); the value is the mean over the pooled pixels of ``255 sqrt(dCb^2 + dCr^2)``. The
    bicubic reference is cropped to the SR's size when larger (an SR image cropped to a multiple of something);
    an SR image larger than ``scale`` x LR is an error."""
    _check(sr)
    _check(lr, "lr")
    scale = int(scale)
    if scale < 1:
        raise ValueError(f"scale must be a positive whole number, got {scale}")
    if sr.shape[0] != lr.shape[0]:
        raise ValueError(f"sr and lr batches differ: {sr.shape[0]} vs {lr.shape[0]} images")
    h, w = sr.shape[-2:]
    if h > lr.shape[-2] * scale or w > lr.shape[-1] * scale:
        raise ValueError(f"the SR image ({w}x{h} px) is larger than {scale} x its LR image "
                         f"({lr.shape[-1]}x{lr.shape[-2]} px, width x height)")
    ref = bicubic_reference(lr, scale, (h, w))
    k = 2 * scale
    if min(h, w) < k:
        raise ValueError(f"color_shift needs an SR image of at least {k}x{k} px at x{scale}, got {w}x{h}")
    a = rgb_to_cbcr(F.avg_pool2d(sr.float(), k).double())
    b = rgb_to_cbcr(F.avg_pool2d(ref, k).double())
    return 255.0 * (a - b).pow(2).sum(1).sqrt().mean(dim=(1, 2))

