"""The official ResShift denoiser (``models.unet.UNetModelSwin``) in plain torch.

ResShift (Yue et al., 2023) and SinSR (Wang et al., 2024) both use this network: a guided-diffusion style
UNet whose attention layers are replaced by small Swin-Transformer stages. Module tree and attribute names
follow the official code exactly (``time_embed``, ``input_blocks``, ``middle_block``, ``output_blocks``,
``out``, plus persistent buffers ``relative_position_index`` and ``attn_mask``), so the official
checkpoints (``resshift_realsrx4_s15_v1.pth``, ``SinSR_v1.pth``, ...) load with ``strict=True``.

Input contract (as the official forward): ``x`` is the (scaled) noisy latent ``N x 3 x h x w``,
``timesteps`` the step index 0..T-1, and ``lq`` the low-resolution image in [-1, 1] at the latent size
(x4 SR: a 64x64 LR image for a 64x64 latent of the 256x256 output). ``lq`` is concatenated to ``x`` along
channels (``feature_extractor`` is the identity when ``lq_size == image_size``; otherwise a strided conv
stack brings a larger ``lq`` down to the latent size, as in the official code).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .unet2d import timestep_embedding  # [cos | sin], guided-diffusion's order (and diffusers' flipped one)

__all__ = ["ResShiftSwinUNet", "load_official", "read_official_state_dict", "load_state_dict_checked"]


# ----------------------------------------------------------------------------- basic ops (models/basic_ops.py)
class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back (stable under fp16/bf16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)


# ----------------------------------------------------------------------------- UNet blocks (models/unet.py)
class TimestepBlock(nn.Module):
    """A module whose forward takes the timestep embedding as a second argument."""


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest x2 then (optionally) a 3x3 conv named ``conv``."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, self.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """Strided 3x3 conv (or 2x2 average pooling) named ``op``."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        if use_conv:
            self.op = nn.Conv2d(channels, self.out_channels, 3, stride=2, padding=1)
        else:
            assert self.channels == self.out_channels
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block with timestep conditioning (FiLM scale/shift when ``use_scale_shift_norm``)."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_scale_shift_norm: bool = False):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, self.out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels))
        self.out_layers = nn.Sequential(
            normalization(self.out_channels), nn.SiLU(), nn.Dropout(p=dropout),
            nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1))
        nn.init.zeros_(self.out_layers[-1].weight)  # zero_module, as the official init
        nn.init.zeros_(self.out_layers[-1].bias)
        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


# ----------------------------------------------------------------------------- Swin stage (models/swin_transformer.py)
def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """``B x C x H x W -> (B * nW) x ws x ws x C`` (windows in row-major order)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // ws, ws, w // ws, ws)  # reshape, not view: a rolled/cropped input may not be contiguous
    return x.permute(0, 2, 4, 3, 5, 1).reshape(-1, ws, ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW) x ws x ws x C -> B x C x H x W``."""
    b = windows.shape[0] // ((h // ws) * (w // ws))
    x = windows.reshape(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, -1, h, w)


def official_shift_mask(h: int, w: int, ws: int, shift: int, device=None) -> torch.Tensor:
    """Attention mask of a shifted-window block, ``nW x ws^2 x ws^2`` with values 0 / -100.

    Reproduces the official ``SwinTransformerBlock.calculate_mask`` exactly, quirks included: the official
    code indexes a ``1 x 1 x H x W`` label image as if it were ``1 x H x W x 1``, so the region labels depend
    on the row only, and it flattens each window column-major. The official forward recomputes this mask on
    every call (its cached ``attn_mask`` buffer is never used), so the trained weights expect this mask.
    """
    labels = torch.zeros(h, device=device)
    for cnt, s in zip((6, 7, 8), (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))):
        labels[s] = cnt  # only the last of the official h-slices hits the size-1 dim: labels 6, 7, 8
    img = labels[:, None].expand(h, w).reshape(1, 1, h, w)
    mw = window_partition(img, ws).permute(0, 2, 3, 1).reshape(-1, ws * ws)  # column-major per window
    diff = mw.unsqueeze(1) - mw.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class Mlp(nn.Module):
    """Two 1x1 convs with GELU (channels-first MLP)."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(in_features, hidden_features, kernel_size=1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_features, in_features, kernel_size=1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class WindowAttention(nn.Module):
    """Window multi-head self-attention with a learned relative position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        ws = window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)  # N x N x 2, >= 0
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * ws - 1) + rel[..., 1])
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, batch: int) -> torch.Tensor:
        """``x``: ``(batch * nW) x N x C`` windows; ``mask``: ``nW x N x N`` additive mask or None."""
        bn, n, c = x.shape
        nh = self.num_heads
        # 4-D, windows folded into the batch: (B * nW) x nH x N x hd, the last dim's stride 1. SDPA's fused CPU
        # kernel takes only this (5-D q/k/v or a 3-D mask fall back to the math kernel), and so does the ONNX
        # exporter (onnxscript: "only 4D query, key and value are supported").
        q, k, v = self.qkv(x).reshape(bn, n, 3, nh, c // nh).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, nh).permute(2, 0, 1).to(q.dtype).unsqueeze(0)  # 1 x nH x N x N
        if mask is not None:  # nW x nH x N x N, repeated per image: windows are batch-major (window_partition)
            bias = bias + mask.to(q.dtype).unsqueeze(1)
            bias = bias.expand(batch, -1, -1, -1, -1).reshape(bn, nh, n, n)  # a view at batch 1
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                             dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(bn, n, c)
        return self.proj_drop(self.proj(out))


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention + MLP on ``B x C x H x W`` features, GroupNorm as the norm layer."""

    def __init__(self, dim: int, input_resolution: int, num_heads: int, window_size: int, shift_size: int,
                 mlp_ratio: float, drop: float = 0.0, attn_drop: float = 0.0):
        super().__init__()
        self.dim, self.num_heads = dim, num_heads
        self.input_resolution = (input_resolution, input_resolution)
        if input_resolution <= window_size:  # no partition when the feature fits into one window
            shift_size, window_size = 0, input_resolution
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = normalization(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = normalization(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        # Persistent like the official buffer (it is in the checkpoints); forward recomputes it per size.
        mask = official_shift_mask(input_resolution, input_resolution, window_size, shift_size) if shift_size else None
        self.register_buffer("attn_mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ws, s = self.window_size, self.shift_size
        shortcut = x
        x = self.norm1(x)
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(2, 3))
        windows = window_partition(x, ws).reshape(-1, ws * ws, c)
        mask = official_shift_mask(h, w, ws, s, device=x.device) if s else None  # shift 0: official mask is 0
        x = window_reverse(self.attn(windows, mask, b).reshape(-1, ws, ws, c), ws, h, w)
        if s:
            x = torch.roll(x, shifts=(s, s), dims=(2, 3))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, embed_dim: int, patch_norm: bool = False):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=1)
        self.norm = normalization(embed_dim) if patch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class PatchUnEmbed(nn.Module):
    def __init__(self, out_chans: int, embed_dim: int, patch_norm: bool = False):
        super().__init__()
        self.proj = nn.Conv2d(embed_dim, out_chans, kernel_size=1)
        self.norm = normalization(out_chans) if patch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class BasicLayer(nn.Module):
    """1x1 conv to ``embed_dim`` -> ``depth`` Swin blocks (shift every other) -> 1x1 conv back."""

    def __init__(self, in_chans: int, embed_dim: int, num_heads: int, window_size: int, depth: int, img_size: int,
                 mlp_ratio: float, drop: float = 0.0, patch_norm: bool = False):
        super().__init__()
        self.embed_dim, self.depth = embed_dim, depth
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_norm)
        self.patch_unembed = PatchUnEmbed(in_chans, embed_dim, patch_norm)
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(embed_dim, img_size, num_heads, window_size,
                                 shift_size=0 if i % 2 == 0 else window_size // 2, mlp_ratio=mlp_ratio, drop=drop)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.patch_unembed(x)


# ----------------------------------------------------------------------------- the network
class ResShiftSwinUNet(ModelMixin, ConfigMixin):
    """Official ResShift ``UNetModelSwin``; keyword names and defaults are the realsr x4 config.

    The keyword arguments are the ``model.params`` of the official YAML (``configs/realsr_swinunet_
    realesrgan256.yaml``), so ``ResShiftSwinUNet(**params)`` works. ``in_channels`` counts the latent only;
    the LR image channels (3, or the feature extractor's output) are added, as in the official code.
    SinSR's config writes ``in_channels: 6`` for the same network: pass ``in_channels=3``.
    Unsupported official options (``dims != 2``, ``resblock_updown``, ``cond_lq=False``) raise.
    A diffusers ``ModelMixin``: it saves and loads as a folder (config.json + safetensors).
    """

    @register_to_config
    def __init__(
        self,
        image_size: int = 64,
        in_channels: int = 3,
        model_channels: int = 160,
        out_channels: int = 3,
        num_res_blocks: int | Sequence[int] = (2, 2, 2, 2),
        attention_resolutions: Sequence[int] = (64, 32, 16, 8),
        dropout: float = 0.0,
        channel_mult: Sequence[int] = (1, 2, 2, 4),
        conv_resample: bool = True,
        dims: int = 2,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = 32,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = False,
        swin_depth: int = 2,
        swin_embed_dim: int = 192,
        window_size: int = 8,
        mlp_ratio: float = 4.0,
        patch_norm: bool = False,
        cond_lq: bool = True,
        lq_size: int = 64,
    ):
        super().__init__()
        if dims != 2 or resblock_updown or not cond_lq:
            raise NotImplementedError("only dims=2, resblock_updown=False, cond_lq=True (the ResShift SR configs)")
        if isinstance(num_res_blocks, int):
            num_res_blocks = [num_res_blocks] * len(channel_mult)
        if len(num_res_blocks) != len(channel_mult):
            raise ValueError("num_res_blocks and channel_mult must have the same length")
        self.image_size, self.in_channels, self.out_channels = image_size, in_channels, out_channels
        self.model_channels = model_channels
        # use_fp16 is accepted for config compatibility; cast the module (``.half()``) to run in fp16.

        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim))

        # LR branch: identity when the LR image already has the latent size; else conv + strided-conv stages.
        if lq_size == image_size:
            self.feature_extractor: nn.Module = nn.Identity()
            base_chn = 3
        else:
            layers: list[nn.Module] = []
            feature_chn, base_chn = 3, 16
            for _ in range(int(math.log(lq_size / image_size) / math.log(2))):
                layers += [nn.Conv2d(feature_chn, base_chn, 3, 1, 1), nn.SiLU(),
                           Downsample(base_chn, True, out_channels=base_chn * 2)]
                base_chn *= 2
                feature_chn = base_chn
            self.feature_extractor = nn.Sequential(*layers)

        heads = num_heads if num_head_channels == -1 else swin_embed_dim // num_head_channels

        def swin(ch: int, ds: int) -> BasicLayer:
            return BasicLayer(ch, swin_embed_dim, heads, window_size, swin_depth, ds, mlp_ratio,
                              drop=dropout, patch_norm=patch_norm)

        def res(ch_in: int, ch_out: int | None = None) -> ResBlock:
            return ResBlock(ch_in, time_embed_dim, dropout, ch_out, use_scale_shift_norm=use_scale_shift_norm)

        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(in_channels + base_chn, ch, 3, padding=1))])
        input_block_chans = [ch]
        ds = image_size  # feature size at this level (the official "ds" counts resolution, not the rate)
        window_checks = []  # (downsampling factor, window size) of every Swin stage, for input-size checks
        for level, mult in enumerate(channel_mult):
            for jj in range(num_res_blocks[level]):
                layers = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions and jj == 0:
                    layers.append(swin(ch, ds))
                    window_checks.append((2 ** level, min(ds, window_size)))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                input_block_chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch, conv_resample, out_channels=ch)))
                input_block_chans.append(ch)
                ds //= 2

        self.middle_block = TimestepEmbedSequential(res(ch), swin(ch, ds), res(ch))
        window_checks.append((2 ** (len(channel_mult) - 1), min(ds, window_size)))

        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks[level] + 1):
                ich = input_block_chans.pop()
                layers = [res(ch + ich, int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_resolutions and i == 0:
                    layers.append(swin(ch, ds))
                if level and i == num_res_blocks[level]:
                    layers.append(Upsample(ch, conv_resample, out_channels=ch))
                    ds *= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(input_ch, out_channels, 3, padding=1))
        # Spatial sizes must divide by every stage's (downsampling factor x window size).
        self.size_multiple = math.lcm(2 ** (len(channel_mult) - 1), *(f * w for f, w in window_checks))

    @property
    def multiple(self) -> int:
        """Latent sizes must be a multiple of this (every Swin stage's downsampling factor x window size)."""
        return self.size_multiple

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | int | float, lq: torch.Tensor) -> torch.Tensor:
        """``x``: ``N x in_channels x h x w`` latent; ``timesteps``: ``N`` (or a scalar) step indices;
        ``lq``: ``N x 3 x h x w`` LR image in [-1, 1] (``lq_size/image_size`` times larger when the model has
        a feature extractor). Returns ``N x out_channels x h x w`` in ``x``'s dtype."""
        if x.shape[-2] % self.size_multiple or x.shape[-1] % self.size_multiple:
            raise ValueError(f"latent size {tuple(x.shape[-2:])} must be a multiple of {self.size_multiple}")
        dtype = self.input_blocks[0][0].weight.dtype
        t = torch.as_tensor(timesteps, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(dtype))
        lq = self.feature_extractor(lq.to(dtype))
        if lq.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"lq features {tuple(lq.shape[-2:])} must match the latent size {tuple(x.shape[-2:])}")
        h = torch.cat([x.to(dtype), lq], dim=1)
        hs = []
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h).to(x.dtype)


# ----------------------------------------------------------------------------- loading official checkpoints
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def read_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official ResShift/SinSR ``.pth`` safely (``weights_only=True``) and unwrap it.

    Handles what the official loaders handle: a ``{'state_dict': ...}`` wrapper (training checkpoints) and
    ``module.`` (DataParallel/DDP) or ``_orig_mod.`` (torch.compile) key prefixes.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickles with arbitrary objects are refused by weights_only=True
        raise ValueError(f"{path}: cannot read as a weights-only torch checkpoint ({e})") from e
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            continue
        while k.startswith(_WRAPPER_PREFIXES):
            k = k.split(".", 1)[1]
        out[k] = v
    return out


def load_state_dict_checked(model: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path) -> nn.Module:
    """``load_state_dict(strict=True)`` that reports every problem in ONE ``ValueError`` naming ``source``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        def few(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f", ... ({len(items)} in all)" if len(items) > 5 else "")
        parts = [f"{name}: {few(items)}" for name, items in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
                 if items]
        raise ValueError(f"{source}: checkpoint does not fit {type(model).__name__} "
                         f"(wrong file or config overrides?) - " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model


def load_official(path: str | Path, **overrides) -> ResShiftSwinUNet:
    """Build :class:`ResShiftSwinUNet` (realsr x4 config, changed by ``overrides``) and load an official
    checkpoint (ResShift ``resshift_*.pth`` or SinSR ``SinSR_v1.pth``) strictly. Returns the model in eval mode."""
    state = read_official_state_dict(path)
    model = ResShiftSwinUNet(**overrides)
    load_state_dict_checked(model, state, path)
    return model.eval()
