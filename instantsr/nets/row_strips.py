"""Large-map layers evaluated in row strips: the numbers of running them whole, without the whole maps.

The VQ-f4 autoencoder's top level works at the output resolution: at 2048 x 2048 one of its 128-channel maps
is 2 GiB, and the decoder's last upsampling makes a 256-channel one of 4 GiB; run whole, a 512x512 LR photo
peaks near 12 GB. These functions compute the same layers a band of rows at a time. A 3x3 convolution reads one
halo row above and below its strip. A GroupNorm first gathers its statistics over all strips (merged in
float64), then normalises each strip with them. So the result equals the whole computation up to float
summation order, not an approximation: no tile seams, no per-tile statistics. `upsample_phase_kernels` also
serves whole maps: a nearest 2x upsampling and 3x3 convolution in 4 taps per pixel instead of 9.

A *reader* ``read(a, b)`` returns rows ``[a, b)`` of a map (``0 <= a < b <= height``): a slice of a tensor, or
rows computed on demand from a smaller map (the decoder's upsampling), so the big input never exists whole.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .tiled_unet import pooled_group_moments

Reader = Callable[[int, int], torch.Tensor]
Affine = tuple[torch.Tensor, torch.Tensor]  # per-channel (scale, shift), N x C x 1 x 1

__all__ = ["row_spans", "slice_reader", "group_norm_affine", "activated", "conv3x3_rows", "upsample_phase_kernels",
           "upsample_conv_rows", "resnet_block_in_strips", "downsample_in_strips"]


def row_spans(height: int, rows: int) -> list[tuple[int, int]]:
    return [(a, min(a + rows, height)) for a in range(0, height, max(1, rows))]


def slice_reader(x: torch.Tensor) -> Reader:
    return lambda a, b: x[:, :, a:b]


def group_norm_affine(norm: nn.GroupNorm, read: Reader, height: int, rows: int) -> Affine:
    """(scale, shift) with ``norm(x) == x * scale + shift``, from the statistics of all strips
    (`tiled_unet.pooled_group_moments`)."""
    mean, var = pooled_group_moments((read(a, b) for a, b in row_spans(height, rows)), norm.num_groups)
    per_group = norm.num_channels // norm.num_groups
    rstd = (var + norm.eps).rsqrt().repeat_interleave(per_group, 1)
    scale = rstd * norm.weight.double()
    shift = norm.bias.double() - mean.repeat_interleave(per_group, 1) * scale
    dtype = norm.weight.dtype
    return scale.to(dtype)[..., None, None], shift.to(dtype)[..., None, None]


def activated(read: Reader, affine: Affine) -> Reader:
    """Rows of ``silu(norm(x))``."""
    scale, shift = affine
    return lambda a, b: F.silu(torch.addcmul(shift, read(a, b), scale), inplace=True)


def conv3x3_rows(conv: nn.Conv2d, read: Reader, height: int, a: int, b: int) -> torch.Tensor:
    """Rows ``[a, b)`` of a 3x3, stride-1, padding-1 ``conv``: input rows ``[a-1, b+1)``, zeros beyond the edges."""
    lo, hi = max(a - 1, 0), min(b + 1, height)
    x = F.pad(read(lo, hi), (0, 0, lo - (a - 1), (b + 1) - hi))
    return F.conv2d(x, conv.weight, conv.bias, padding=(0, 1))


def upsample_phase_kernels(conv: nn.Conv2d) -> dict[tuple[int, int], torch.Tensor]:
    """A nearest 2x upsampling followed by the 3x3, padding-1 ``conv``, as four 2x2 kernels on the small map, one
    per output phase (row parity p, column parity q): 4 taps per output pixel instead of 9. Output row 2i reads
    small rows i-1 (the kernel's top row) and i (its middle and bottom rows summed); row 2i+1 reads rows i (top
    and middle summed) and i+1 (bottom); columns alike. The same sums, in another order."""
    w = conv.weight

    def halves(k: torch.Tensor, dim: int, parity: int) -> torch.Tensor:
        a, b, c = k.unbind(dim)
        return torch.stack((a, b + c) if parity == 0 else (a + b, c), dim)

    return {(p, q): halves(halves(w, 2, p), 3, q).contiguous(memory_format=torch.channels_last)
            for p in (0, 1) for q in (0, 1)}


def upsample_conv_rows(kernels: dict[tuple[int, int], torch.Tensor], bias: torch.Tensor | None, low: torch.Tensor,
                       a: int, b: int) -> torch.Tensor:
    """Rows ``[a, b)`` of ``conv(nearest_2x(low))`` from `upsample_phase_kernels` (``0 <= a < b <= 2 * height``)."""
    n, _, height, width = low.shape
    i0, i1 = a // 2, (b + 1) // 2  # the small rows whose outputs cover [a, b)
    lo, hi = max(i0 - 1, 0), min(i1 + 1, height)
    x = F.pad(low[:, :, lo:hi], (1, 1, lo - (i0 - 1), (i1 + 1) - hi))  # small rows i0-1 .. i1, zeros beyond
    channels = kernels[0, 0].shape[0]
    out = torch.empty((n, channels, 2 * (i1 - i0), 2 * width), dtype=low.dtype, device=low.device,
                      memory_format=torch.channels_last)
    for (p, q), k in kernels.items():
        out[:, :, p::2, q::2] = F.conv2d(x[:, :, p:p + i1 - i0 + 1, q:q + width + 1], k, bias)
    return out[:, :, a - 2 * i0:b - 2 * i0]


def resnet_block_in_strips(block: nn.Module, x: torch.Tensor | Reader, height: int, rows: int) -> torch.Tensor:
    """``block(x)`` for the VQ autoencoder's pre-activation ResnetBlock (eval, no gradient).

    ``x`` is a tensor or a reader. Two maps are alive at a time: the hidden map ``h`` beside the input tensor, whose
    rows then take the output in place; or, when ``x`` is a reader or the block changes the channel count, ``h``
    alone, overwritten by the output strip by strip (each strip's top halo row kept aside first), and ``x``'s rows
    read again for the shortcut."""
    read = slice_reader(x) if isinstance(x, torch.Tensor) else x
    spans = row_spans(height, rows)
    first = activated(read, group_norm_affine(block.norm1, read, height, rows))
    h = None
    for a, b in spans:
        strip = conv3x3_rows(block.conv1, first, height, a, b)
        if h is None:
            h = torch.empty((*strip.shape[:2], height, strip.shape[-1]), dtype=strip.dtype, device=strip.device,
                            memory_format=torch.channels_last)
        h[:, :, a:b] = strip
    second = group_norm_affine(block.norm2, slice_reader(h), height, rows)
    shortcut = getattr(block, "nin_shortcut", None)
    if isinstance(x, torch.Tensor) and shortcut is None:
        hidden = activated(slice_reader(h), second)
        for a, b in spans:
            x[:, :, a:b] += conv3x3_rows(block.conv2, hidden, height, a, b)
        return x
    above = None  # row a - 1 of h as it was before the previous strip's output overwrote it

    def hidden_rows(lo: int, hi: int) -> torch.Tensor:
        own = h[:, :, max(lo, start):hi]
        return torch.cat([above, own], 2) if lo < start else own

    hidden = activated(hidden_rows, second)
    for start, end in spans:
        out = conv3x3_rows(block.conv2, hidden, height, start, end)
        out += read(start, end) if shortcut is None else shortcut(read(start, end))
        above = h[:, :, end - 1:end].clone()
        h[:, :, start:end] = out
    return h


def downsample_in_strips(conv: nn.Conv2d, x: torch.Tensor, rows: int) -> torch.Tensor:
    """``conv(pad(x, right 1, bottom 1))`` for the stride-2 3x3 ``conv`` of the VQ encoder's Downsample."""
    height = x.shape[2]
    out_height = (height - 2) // 2 + 1
    strips = []
    for a, b in row_spans(out_height, max(1, rows // 2)):
        hi = min(2 * b + 1, height)
        strips.append(F.conv2d(F.pad(x[:, :, 2 * a:hi], (0, 1, 0, 2 * b + 1 - hi)), conv.weight, conv.bias,
                               stride=2))
    return torch.cat(strips, 2)
