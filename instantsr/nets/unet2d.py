"""diffusers' `UNet2DModel` in plain torch, for the configurations `ConditionalUNet` builds: ResNet down/up blocks
(`DownBlock2D`/`UpBlock2D`, or their attention variants `AttnDownBlock2D`/`AttnUpBlock2D`), the middle block
with or without attention, positional time embedding (flip_sin_to_cos, no shift), convolutional resampling.

Why not diffusers' own class: importing it pulls in diffusers' model registry (seconds), which made a one-photo
upscale four times slower than `import torch` (`nets/folder.py`). Module and parameter names are diffusers', so
the weight files are the same, and `tests/test_unet2d.py` checks that the outputs equal `UNet2DModel`'s on one
state dict. Deviation: attention passes contiguous q, k, v to SDPA (diffusers passes transposed views), which
keeps the CPU on its fused kernel; the result is the same up to float rounding.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos | sin]``, ``N -> N x dim``: diffusers' `get_timestep_embedding(t, dim,
    flip_sin_to_cos=True, downscale_freq_shift=0)` and guided-diffusion's (the official Swin-UNet's) alike."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    emb = t[:, None].float() * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.cos(emb), torch.sin(emb)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class Timesteps(nn.Module):
    def __init__(self, num_channels: int):
        super().__init__()
        self.num_channels = num_channels

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return timestep_embedding(t, self.num_channels)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.linear_1, self.act, self.linear_2 = nn.Linear(in_channels, dim), nn.SiLU(), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    """GroupNorm-SiLU-conv twice, the time embedding added between, a 1x1 shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nonlinearity = nn.SiLU()
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.nonlinearity(self.norm1(x)))
        h = h + self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None]
        h = self.conv2(self.nonlinearity(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Attention(nn.Module):
    """diffusers' `Attention` as its old spatial attention block: GroupNorm, multi-head self-attention over the
    pixels, output projection, residual."""

    def __init__(self, channels: int, head_dim: int, groups: int, eps: float):
        super().__init__()
        self.heads, self.head_dim = channels // head_dim, head_dim
        inner = self.heads * head_dim
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, inner) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(inner, channels), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = self.group_norm(x).reshape(n, c, h * w).transpose(1, 2)

        def heads(t: torch.Tensor) -> torch.Tensor:  # contiguous: CPU SDPA keeps its fused kernel
            return t.reshape(n, h * w, self.heads, self.head_dim).transpose(1, 2).contiguous()

        out = F.scaled_dot_product_attention(heads(self.to_q(tokens)), heads(self.to_k(tokens)),
                                             heads(self.to_v(tokens)))
        out = self.to_out[0](out.transpose(1, 2).reshape(n, h * w, self.heads * self.head_dim))
        return out.transpose(1, 2).reshape(n, c, h, w) + x


class Downsample2D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock2D(nn.Module):
    """`layers` ResNet blocks (each followed by attention in `AttnDownBlock2D`), then a stride-2 convolution."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, layers: int, attention: bool,
                 downsample: bool, groups: int, eps: float, head_dim: int):
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels,
                                                   temb_channels, groups, eps) for i in range(layers))
        self.attentions = nn.ModuleList(Attention(out_channels, head_dim, groups, eps)
                                        for _ in range(layers)) if attention else None
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels)]) if downsample else None

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        h, outputs = hidden_states, ()
        for i, resnet in enumerate(self.resnets):
            h = resnet(h, temb)
            if self.attentions is not None:
                h = self.attentions[i](h)
            outputs += (h,)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)
            outputs += (h,)
        return h, outputs


class UpBlock2D(nn.Module):
    """`layers` ResNet blocks on [h, skip] (each followed by attention in `AttnUpBlock2D`), then 2x nearest + conv."""

    def __init__(self, in_channels: int, prev_channels: int, out_channels: int, temb_channels: int, layers: int,
                 attention: bool, upsample: bool, groups: int, eps: float, head_dim: int):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D((prev_channels if i == 0 else out_channels) + (in_channels if i == layers - 1
                                                                         else out_channels),
                          out_channels, temb_channels, groups, eps) for i in range(layers))
        self.attentions = nn.ModuleList(Attention(out_channels, head_dim, groups, eps)
                                        for _ in range(layers)) if attention else None
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if upsample else None

    def forward(self, hidden_states: torch.Tensor, skips: tuple, temb: torch.Tensor) -> torch.Tensor:
        h = hidden_states
        for i, resnet in enumerate(self.resnets):
            h = resnet(torch.cat([h, skips[-1 - i]], dim=1), temb)
            if self.attentions is not None:
                h = self.attentions[i](h)
        return h if self.upsamplers is None else self.upsamplers[0](h)


class UNetMidBlock2D(nn.Module):
    def __init__(self, channels: int, temb_channels: int, attention: bool, groups: int, eps: float, head_dim: int):
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock2D(channels, channels, temb_channels, groups, eps) for _ in range(2))
        self.attentions = nn.ModuleList([Attention(channels, head_dim, groups, eps) if attention else None])

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.resnets[0](hidden_states, temb)
        if self.attentions[0] is not None:
            h = self.attentions[0](h)
        return self.resnets[1](h, temb)


class UNet2D(nn.Module):
    """`UNet2DModel(in_channels, out_channels, block_out_channels, layers_per_block, down/up block types from
    `attention_levels`, norm_num_groups, attention_head_dim, add_attention=mid_attention)`; `forward(x, t)`
    returns the output tensor itself (diffusers wraps it in `.sample`)."""

    def __init__(self, in_channels: int, out_channels: int, block_out_channels: tuple[int, ...],
                 layers_per_block: int, attention_levels: tuple[bool, ...], norm_num_groups: int = 32,
                 attention_head_dim: int = 32, mid_attention: bool = True, eps: float = 1e-5):
        super().__init__()
        chans, n, groups, hd = tuple(block_out_channels), len(block_out_channels), norm_num_groups, attention_head_dim
        temb = chans[0] * 4
        self.conv_in = nn.Conv2d(in_channels, chans[0], 3, padding=1)
        self.time_proj = Timesteps(chans[0])
        self.time_embedding = TimestepEmbedding(chans[0], temb)
        self.down_blocks = nn.ModuleList(
            DownBlock2D(chans[max(i - 1, 0)], chans[i], temb, layers_per_block, attention_levels[i], i < n - 1,
                        groups, eps, hd) for i in range(n))
        self.mid_block = UNetMidBlock2D(chans[-1], temb, mid_attention, groups, eps, hd)
        rev, levels = chans[::-1], tuple(attention_levels)[::-1]
        self.up_blocks = nn.ModuleList(
            UpBlock2D(rev[min(i + 1, n - 1)], rev[max(i - 1, 0)], rev[i], temb, layers_per_block + 1, levels[i],
                      i < n - 1, groups, eps, hd) for i in range(n))
        self.conv_norm_out = nn.GroupNorm(groups, chans[0], eps=eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(chans[0], out_channels, 3, padding=1)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embedding(self.time_proj(t.reshape(-1).expand(x.shape[0])).to(self.dtype))
        h = self.conv_in(x)
        skips = (h,)
        for block in self.down_blocks:
            h, outputs = block(h, emb)
            skips += outputs
        h = self.mid_block(h, emb)
        for block in self.up_blocks:
            k = len(block.resnets)
            h, skips = block(h, skips[-k:], emb), skips[:-k]
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))
