"""The VQ-f4 autoencoder of ResShift/SinSR (``ldm.models.autoencoder.VQModelTorch``) in plain torch.

This is the latent-diffusion VQ-f4 model (8192 codes of dimension 3, x4 downsampling). Parameter names
follow the official modules (``encoder``, ``decoder``, ``quantize.embedding``, ``quant_conv``,
``post_quant_conv``), so ``autoencoder_vq_f4.pth`` loads with ``strict=True``.

Use as ResShift does: images in [-1, 1]; ``encode`` returns the pre-quantisation latent (what ResShift
diffuses, ``encode_first_stage``), ``decode`` quantises it to the nearest code, then decodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .row_strips import (activated, conv3x3_rows, downsample_in_strips, group_norm_affine,
                         resnet_block_in_strips, row_spans, slice_reader, upsample_conv_rows, upsample_phase_kernels)
from .swin_unet import load_state_dict_checked, read_official_state_dict
from .unet2d import Upsample2D as Upsample  # 2x nearest, then a 3x3 conv (`conv`): the official Upsample too

__all__ = ["ResShiftVQGAN", "VectorQuantizer", "load_official"]


def Normalize(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class Downsample(nn.Module):
    """Stride-2 3x3 conv with the asymmetric (right/bottom) zero padding of the original."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class ResnetBlock(nn.Module):
    """Pre-activation residual block (no timestep input: the autoencoder has ``temb_ch = 0``)."""

    def __init__(self, in_channels: int, out_channels: int | None = None, dropout: float = 0.0):
        super().__init__()
        out_channels = out_channels or in_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = Normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    in_place = False  # set by ResShiftVQGAN.lean: activations and the sum in place when no gradient is kept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.nin_shortcut if self.in_channels != self.out_channels else None
        if self.in_place and not torch.is_grad_enabled():  # the same numbers, one full-size map fewer at a time
            h = self.conv1(F.silu(self.norm1(x), inplace=True))
            h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=True)))
            return h.add_(x if shortcut is None else shortcut(x))
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if shortcut is None else shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 conv projections."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = Normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        # B x 1 head x L x C, contiguous: SDPA's fused CPU kernel needs the last dim's stride 1 and otherwise falls
        # back to the math kernel, which materialises the L x L matrix (1 GiB at a 128 x 128 latent).
        q, k, v = (m(hn).reshape(b, 1, c, h * w).transpose(-1, -2).contiguous() for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # scale c^-0.5, as the original
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class _Level(nn.Module):
    """Container with the official attribute names ``block``, ``attn`` and ``downsample``/``upsample``."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module]):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)


class _Mid(nn.Module):
    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


def _per_level(num_res_blocks: int | Sequence[int], n: int) -> list[int]:
    return [num_res_blocks] * n if isinstance(num_res_blocks, int) else list(num_res_blocks)


class Encoder(nn.Module):
    def __init__(self, *, ch: int, ch_mult: Sequence[int], num_res_blocks: int | Sequence[int],
                 attn_resolutions: Sequence[int], dropout: float, in_channels: int, resolution: int,
                 z_channels: int, double_z: bool):
        super().__init__()
        self.num_res_blocks = _per_level(num_res_blocks, len(ch_mult))
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        in_ch_mult = (1,) + tuple(ch_mult)
        curr_res = resolution
        self.down = nn.ModuleList()
        for i, mult in enumerate(ch_mult):
            block_in, block_out = ch * in_ch_mult[i], ch * mult
            blocks, attns = [], []
            for _ in range(self.num_res_blocks[i]):
                blocks.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            level = _Level(blocks, attns)
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(block_in)
                curr_res //= 2
            self.down.append(level)
        self.mid = _Mid(block_in, dropout)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, strip_mib: float | None = None) -> torch.Tensor:
        """``strip_mib``: run each level (blocks, then downsampling) in row strips of about this size (`row_strips`:
        the same numbers, two of the level's maps alive instead of three or more)."""
        h = self.conv_in(x)
        for i, level in enumerate(self.down):
            rows = _strip_rows(strip_mib, level, h)
            for j, blk in enumerate(level.block):
                h = blk(h) if rows is None else resnet_block_in_strips(blk, h, h.shape[2], rows)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if i != len(self.down) - 1:
                h = level.downsample(h) if rows is None else downsample_in_strips(level.downsample.conv, h, rows)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, *, ch: int, out_ch: int, ch_mult: Sequence[int], num_res_blocks: int | Sequence[int],
                 attn_resolutions: Sequence[int], dropout: float, resolution: int, z_channels: int):
        super().__init__()
        n = len(ch_mult)
        self.num_res_blocks = _per_level(num_res_blocks, n)
        block_in = ch * ch_mult[-1]
        curr_res = resolution // 2 ** (n - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = _Mid(block_in, dropout)
        levels: list[nn.Module] = []
        for i in reversed(range(n)):
            block_out = ch * ch_mult[i]
            blocks, attns = [], []
            for _ in range(self.num_res_blocks[i] + 1):
                blocks.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            level = _Level(blocks, attns)
            if i != 0:
                level.upsample = Upsample(block_in)
                curr_res *= 2
            levels.insert(0, level)  # up[i] is the level at resolution index i, as the original
        self.up = nn.ModuleList(levels)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor, strip_mib: float | None = None, phase_upsample: bool = False
                ) -> torch.Tensor:
        """``strip_mib``: run each upsampling and the level above it in row strips of about this size
        (`row_strips`: the same numbers; the upsampled map never exists whole, two of a level's maps at most are
        alive). ``phase_upsample``: upsample with `upsample_phase_kernels` (4 taps per pixel instead of 9; strips
        always do)."""
        h = self.mid(self.conv_in(z))
        rows = None  # the rows per strip of the level being run (None: whole)
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            if rows is None:
                for j, blk in enumerate(level.block):
                    h = blk(h)
                    if len(level.attn) > 0:
                        h = level.attn[j](h)
            else:  # h is the level below's output: its upsampling is computed again strip by strip when read
                h = self._upsampled_level_in_strips(self.up[i + 1].upsample.conv, h, level, rows)
            if i != 0:
                rows = _strip_rows(strip_mib, self.up[i - 1], h, scale=2)
                if rows is None and phase_upsample:
                    conv = level.upsample.conv
                    h = upsample_conv_rows(upsample_phase_kernels(conv), conv.bias, h, 0, 2 * h.shape[2])
                elif rows is None:
                    h = level.upsample(h)
        if rows is None:
            return self.conv_out(F.silu(self.norm_out(h)))
        height = h.shape[2]
        out = activated(slice_reader(h), group_norm_affine(self.norm_out, slice_reader(h), height, rows))
        return torch.cat([conv3x3_rows(self.conv_out, out, height, a, b) for a, b in row_spans(height, rows)], 2)

    @staticmethod
    def _upsampled_level_in_strips(up_conv: nn.Conv2d, low: torch.Tensor, level: nn.Module, rows: int
                                   ) -> torch.Tensor:
        """``level``'s blocks on ``up_conv(nearest_2x(low))``."""
        height = 2 * low.shape[2]
        kernels = upsample_phase_kernels(up_conv)
        h = lambda a, b: upsample_conv_rows(kernels, up_conv.bias, low, a, b)  # noqa: E731
        for blk in level.block:
            h = resnet_block_in_strips(blk, h, height, rows)
        return h


def _strip_rows(strip_mib: float | None, level: nn.Module, x: torch.Tensor, scale: int = 1) -> int | None:
    """Rows per strip for ``level`` run on ``x`` (``scale``: upsampled first) with about ``strip_mib`` of its
    widest map per strip; None (run it whole) without ``strip_mib``, for a level with attention (global), or
    where one strip would hold the whole map."""
    if strip_mib is None or len(level.attn) > 0:
        return None
    n, c, height, width = x.shape
    widest = max(c, level.block[0].out_channels)
    rows = max(2, int(strip_mib * 2**20 // (n * widest * width * scale * x.element_size())))
    return rows if rows < height * scale else None


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantisation (``VectorQuantizer2`` without remapping), straight-through gradient."""

    def __init__(self, n_e: int, e_dim: int, chunk: int = 4096):
        super().__init__()
        self.n_e, self.e_dim, self.chunk = n_e, e_dim, chunk
        self.embedding = nn.Embedding(n_e, e_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_e, 1.0 / n_e)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Code index of every position, ``B x C x H x W -> B x H x W`` (distances in chunks to bound memory)."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        e = self.embedding.weight.to(flat.dtype)
        e2 = (e ** 2).sum(1)
        # torch.export (ONNX) would fix the number of chunks at the traced example's: one piece there
        pieces = (flat,) if torch.compiler.is_exporting() else flat.split(self.chunk)
        idx = [torch.argmin((x ** 2).sum(1, keepdim=True) + e2 - 2 * x @ e.t(), dim=1) for x in pieces]
        return torch.cat(idx).view(b, h, w)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z_q = self.embedding(self.indices(z)).permute(0, 3, 1, 2).to(z.dtype)
        return z + (z_q - z).detach()


class ResShiftVQGAN(nn.Module):
    """Official ResShift ``VQModelTorch``; defaults are ``autoencoder.params`` of the ResShift configs."""

    def __init__(
        self,
        embed_dim: int = 3,
        n_embed: int = 8192,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int | Sequence[int] = 2,
        attn_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        in_channels: int = 3,
        out_ch: int = 3,
        resolution: int = 256,
        z_channels: int = 3,
        double_z: bool = False,
        lean: bool = True,  # ours, not an official parameter: see `lean`
    ):
        super().__init__()
        self.config = dict(embed_dim=embed_dim, n_embed=n_embed, ch=ch, ch_mult=list(ch_mult),
                           num_res_blocks=num_res_blocks if isinstance(num_res_blocks, int) else list(num_res_blocks),
                           attn_resolutions=list(attn_resolutions), dropout=dropout, in_channels=in_channels,
                           out_ch=out_ch, resolution=resolution, z_channels=z_channels, double_z=double_z)
        self.downsample_factor = 2 ** (len(ch_mult) - 1)
        common = dict(ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks, attn_resolutions=attn_resolutions,
                      dropout=dropout, resolution=resolution, z_channels=z_channels)
        self.encoder = Encoder(in_channels=in_channels, double_z=double_z, **common)
        self.decoder = Decoder(out_ch=out_ch, **common)
        self.quantize = VectorQuantizer(n_embed, embed_dim)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)
        self.lean = lean

    @property
    def lean(self) -> bool:
        """Channels-last activations (oneDNN's native layout: no reorder around each convolution) and in-place
        activations at inference. On 2 CPU cores at full width: 15-20 % faster, and the peak memory of a decode
        falls from about 7 to 5 full-resolution 128-channel maps, of an encode from 5 to 3
        (docs/upscaling.md). The decoder's upsamplings run as four 2x2 phase convolutions on the smaller map
        (`row_strips.upsample_phase_kernels`: 4 taps per pixel instead of 9, about 1.8x faster, no 4x-sized
        interpolated copy). Where a full-resolution map would exceed `stream_above_mib`, every level without
        attention also runs in row strips (`row_strips`: exact, two of a level's maps alive; a 2048 x 2048
        decode's peak falls from about 10 GiB to 4). Outputs move by up to 0.3/255 against the official layer
        order (another summation order in the convolutions); False runs the layers exactly as the official code."""
        return self._lean

    @lean.setter
    def lean(self, value: bool) -> None:
        self._lean = bool(value)
        for m in self.modules():
            if isinstance(m, ResnetBlock):
                m.in_place = self._lean

    stream_above_mib = 512  # inference runs the levels in row strips when a full-resolution map is larger
    strip_mib = 64  # about this much of a level's widest map per strip

    def _lean_inference(self) -> bool:
        """Lean, in eval mode, without autograd, not exporting: training and ONNX keep the official graph."""
        return self._lean and not self.training and not torch.is_grad_enabled() and not torch.compiler.is_exporting()

    def _strip_mib_for(self, x: torch.Tensor, height: int, width: int) -> float | None:
        """`strip_mib` where a full-resolution map of ``height x width`` is over `stream_above_mib` (else None:
        whole maps), in lean inference."""
        if not self._lean_inference():
            return None
        full_map = x.shape[0] * self.config["ch"] * self.config["ch_mult"][0] * height * width * x.element_size()
        return self.strip_mib if full_map > self.stream_above_mib * 2**20 else None

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        lean = self._lean and not torch.compiler.is_exporting()  # an ONNX graph stays NCHW
        return x.contiguous(memory_format=torch.channels_last) if lean else x

    @classmethod
    def from_official_config(cls, params: Mapping) -> ResShiftVQGAN:
        """From the YAML ``autoencoder.params`` dict (``embed_dim``, ``n_embed``, ``ddconfig``)."""
        dd = {k: v for k, v in dict(params.get("ddconfig", {})).items() if k != "padding_mode"}  # unused upstream
        return cls(embed_dim=params.get("embed_dim", 3), n_embed=params.get("n_embed", 8192), **dd)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image ``N x 3 x H x W`` in [-1, 1] -> pre-quantisation latent ``N x embed_dim x H/4 x W/4``."""
        strip_mib = self._strip_mib_for(x, x.shape[2], x.shape[3])
        return self.quant_conv(self.encoder(self._layout(x), strip_mib)).contiguous()

    def decode(self, h: torch.Tensor, force_not_quantize: bool = False) -> torch.Tensor:
        """Latent -> image in (about) [-1, 1]; quantises to the codebook first unless ``force_not_quantize``."""
        quant = h if force_not_quantize else self.quantize(h)
        f = self.downsample_factor
        strip_mib = self._strip_mib_for(quant, quant.shape[2] * f, quant.shape[3] * f)
        return self.decoder(self.post_quant_conv(self._layout(quant)), strip_mib, self._lean_inference()).contiguous()

    def forward(self, x: torch.Tensor, force_not_quantize: bool = False) -> torch.Tensor:
        return self.decode(self.encode(x), force_not_quantize)


def load_official_into(model: ResShiftVQGAN, path: str | Path) -> ResShiftVQGAN:
    """Load ``autoencoder_vq_f4.pth`` into ``model`` strictly; one ``ValueError`` naming the file if it does not
    fit."""
    # latent-diffusion training checkpoints also carry the training loss (LPIPS, discriminator): not needed
    state = {k: v for k, v in read_official_state_dict(path).items() if not k.startswith("loss.")}
    return load_state_dict_checked(model, state, path).eval()


def load_official(path: str | Path, **overrides) -> ResShiftVQGAN:
    """Build :class:`ResShiftVQGAN` (ResShift config, changed by ``overrides``) and load
    ``autoencoder_vq_f4.pth`` strictly."""
    return load_official_into(ResShiftVQGAN(**overrides), path)
