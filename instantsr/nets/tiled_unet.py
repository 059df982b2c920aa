"""Exact tiled execution of the conditional UNet: the whole-image result, computed one tile at a time.

Blending tiles that each run the whole network (`pipeline.TiledDenoiser`) leaves seams with a GroupNorm
UNet: every tile normalises with its own statistics and attends only to itself. Here the network runs
layer by layer over the whole image instead, like Tiled VAE's task queue but exact:
- every 3x3 convolution runs on output tiles, each cropped from the full input map with the halo it needs
  (so tile edges see their true neighbours, not zero padding);
- every GroupNorm first sums its statistics over all tiles (float64), then normalises each tile with them;
- attention layers, which sit at the lowest resolutions, run on their whole map.
The full feature maps are kept on `store` (the compute device, or the CPU to save GPU memory); each layer's
temporaries are one tile's. The output equals the untiled forward up to float rounding, so no seam can show.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F

Maps = list[torch.Tensor]  # full feature maps on `store`, concatenated along channels when used together


def pooled_group_moments(crops: Iterable[torch.Tensor], num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GroupNorm's mean and (biased) variance per image and group, float64 ``N x groups``, of a map given as
    crops that cover it once. Each crop's per-channel moments in float32 (Welford: no float64 copy of the map,
    no E[x^2] - E[x]^2 cancellation), pooled in float64: var = sum_k n_k (var_k + (mean_k - mean)^2) / n."""
    parts = []
    for x in crops:
        var, mean = torch.var_mean(x.float(), dim=(2, 3), correction=0)  # N x C
        parts.append((x.shape[2] * x.shape[3], mean.double(), var.double()))
    n, c = parts[0][1].shape
    count = sum(k for k, _, _ in parts) * (c // num_groups)
    as_groups = lambda t: t.view(n, num_groups, c // num_groups)  # noqa: E731
    mean = sum(k * as_groups(m).sum(-1) for k, m, _ in parts) / count
    var = sum(k * (as_groups(v) + (as_groups(m) - mean[..., None]).square()).sum(-1) for k, m, v in parts) / count
    return mean, var


class TiledUNetRunner:
    """Runs a `nets.unet2d.UNet2D` (diffusers' UNet2DModel layout: ResNet down/up blocks, optional attention)
    over tiles of `tile` px."""

    def __init__(self, unet: nn.Module, tile: int, store: torch.device | None = None,
                 on_tile: Callable[[int], object] | None = None):
        self.unet, self.tile = unet, max(8, int(tile))  # tile: output px per side at the input's resolution
        self.device = next(unet.parameters()).device
        self.store = torch.device(store) if store is not None else self.device
        self.on_tile = on_tile  # called with 1 after each convolution tile (a progress bar's update)
        self.size0 = 1  # input height: tiles at coarser levels shrink with the map

    def num_tiles(self, size: tuple[int, int]) -> int:
        """Convolution tiles one forward pass over an input of `size` runs (a progress bar's total)."""
        unet, self.size0 = self.unet, size[0]
        levels = [0]  # the level (resolution halvings) of each 3x3 convolution's output, in network order
        for i, block in enumerate(unet.down_blocks):
            levels += [i] * 2 * len(block.resnets) + ([i + 1] if block.downsamplers is not None else [])
        deepest = len(unet.down_blocks) - 1
        levels += [deepest] * 2 * len(unet.mid_block.resnets)
        for j, block in enumerate(unet.up_blocks):
            levels += [deepest - j] * 2 * len(block.resnets) + ([deepest - j - 1] if block.upsamplers is not None
                                                               else [])
        levels.append(0)
        return sum(len(list(self._boxes(size[0] >> lv, size[1] >> lv))) for lv in levels)

    # ---- primitive ops over whole maps ---------------------------------------------------------------------
    def _crop(self, maps: Maps, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
        crops = [m[..., r0:r1, c0:c1] for m in maps]
        return (crops[0] if len(crops) == 1 else torch.cat(crops, 1)).to(self.device)

    def _boxes(self, h: int, w: int):
        t = max(8, round(self.tile * h / self.size0))
        for r0 in range(0, h, t):
            for c0 in range(0, w, t):
                yield r0, min(h, r0 + t), c0, min(w, c0 + t)

    def conv(self, conv: nn.Conv2d, maps: Maps, pre: Callable | None = None, post: Callable | None = None,
             upsample: int = 1) -> torch.Tensor:
        """post(conv(pad(upsample(pre(x))))) over the whole map, one output tile at a time."""
        (k, _), (s, _), (p, _) = conv.kernel_size, conv.stride, conv.padding
        h_in, w_in = maps[0].shape[-2] * upsample, maps[0].shape[-1] * upsample
        h_out, w_out = (h_in + 2 * p - k) // s + 1, (w_in + 2 * p - k) // s + 1
        out = None
        for r0, r1, c0, c1 in self._boxes(h_out, w_out):
            lo_r, hi_r = r0 * s - p, (r1 - 1) * s - p + k  # input rows this tile reads, zero padding included
            lo_c, hi_c = c0 * s - p, (c1 - 1) * s - p + k
            a_r, b_r, a_c, b_c = max(0, lo_r), min(h_in, hi_r), max(0, lo_c), min(w_in, hi_c)
            u = upsample
            x = self._crop(maps, a_r // u, -(-b_r // u), a_c // u, -(-b_c // u))
            if pre is not None:
                x = pre(x)  # per-pixel (GroupNorm with global statistics, SiLU): before the zero padding
            if u > 1:
                x = F.interpolate(x, scale_factor=u, mode="nearest")
                x = x[..., a_r - a_r // u * u:, a_c - a_c // u * u:][..., : b_r - a_r, : b_c - a_c]
            pads = (a_c - lo_c, hi_c - b_c, a_r - lo_r, hi_r - b_r)
            if any(pads):  # the conv's zero padding, at the image's borders only
                x = F.pad(x, pads)
            y = F.conv2d(x, conv.weight, conv.bias, stride=s)
            if post is not None:
                y = post(y, (r0, r1, c0, c1))
            if out is None:
                out = torch.empty(*y.shape[:2], h_out, w_out, dtype=y.dtype, device=self.store)
            out[..., r0:r1, c0:c1] = y.to(self.store)
            if self.on_tile is not None:
                self.on_tile(1)
        return out

    def group_norm_silu(self, norm: nn.GroupNorm, maps: Maps) -> Callable[[torch.Tensor], torch.Tensor]:
        """silu(GroupNorm(x)) for crops of `maps`, with the statistics of the whole maps."""
        mean, var = pooled_group_moments((self._crop(maps, *box) for box in self._boxes(*maps[0].shape[-2:])),
                                         norm.num_groups)
        rstd = torch.rsqrt(var + norm.eps)
        mean, rstd = mean.float()[..., None, None, None], rstd.float()[..., None, None, None]
        weight, bias = norm.weight.float()[:, None, None], norm.bias.float()[:, None, None]

        def apply(x: torch.Tensor) -> torch.Tensor:
            n, c, h, w = x.shape
            y = ((x.float().reshape(n, norm.num_groups, -1, h, w) - mean) * rstd).reshape(n, c, h, w)
            return F.silu(y * weight + bias).to(x.dtype)

        return apply

    def resnet(self, block: nn.Module, maps: Maps, temb: torch.Tensor) -> torch.Tensor:
        """unet2d.ResnetBlock2D."""
        t = block.time_emb_proj(block.nonlinearity(temb))[:, :, None, None]
        h = self.conv(block.conv1, maps, pre=self.group_norm_silu(block.norm1, maps), post=lambda y, box: y + t)

        def shortcut(y: torch.Tensor, box) -> torch.Tensor:
            x = self._crop(maps, *box)
            if block.conv_shortcut is not None:
                x = block.conv_shortcut(x)
            return x + y

        return self.conv(block.conv2, [h], pre=self.group_norm_silu(block.norm2, [h]), post=shortcut)

    def attention(self, attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Attention sees the whole map (it is global); it sits at the lowest resolutions only."""
        return attn(x.to(self.device)).to(self.store)

    # ---- the network -------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, sample: torch.Tensor | Maps, timestep: torch.Tensor) -> torch.Tensor:
        """UNet2D.forward(sample, timestep), layer by layer in tiles. `sample` may be a list of maps
        that the network sees concatenated along channels (concatenated one tile at a time, not whole)."""
        unet = self.unet
        maps = [m.to(self.store) for m in (sample if isinstance(sample, (list, tuple)) else [sample])]
        self.size0 = maps[0].shape[-2]
        t = timestep.to(self.device).reshape(-1).expand(maps[0].shape[0])
        emb = unet.time_embedding(unet.time_proj(t).to(dtype=unet.dtype))
        h = self.conv(unet.conv_in, maps)
        del maps
        skips = [h]
        for block in unet.down_blocks:
            for i, resnet in enumerate(block.resnets):
                h = self.resnet(resnet, [h], emb)
                if getattr(block, "attentions", None) is not None:
                    h = self.attention(block.attentions[i], h)
                skips.append(h)
            if block.downsamplers is not None:
                h = self.conv(block.downsamplers[0].conv, [h])
                skips.append(h)
        mid = unet.mid_block
        h = self.resnet(mid.resnets[0], [h], emb)
        for attn, resnet in zip(mid.attentions, mid.resnets[1:]):
            if attn is not None:
                h = self.attention(attn, h)
            h = self.resnet(resnet, [h], emb)
        for block in unet.up_blocks:
            for i, resnet in enumerate(block.resnets):
                h = self.resnet(resnet, [h, skips.pop()], emb)
                if getattr(block, "attentions", None) is not None:
                    h = self.attention(block.attentions[i], h)
            if block.upsamplers is not None:
                h = self.conv(block.upsamplers[0].conv, [h], upsample=2)
        return self.conv(unet.conv_out, [h], pre=self.group_norm_silu(unet.conv_norm_out, [h]))
