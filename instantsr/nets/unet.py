"""A compact conditional UNet for our own models: diffusers' `UNet2DModel` (its plain-torch copy in
`nets/unet2d.py`, the same weights) over the latent with the LR image concatenated as extra input channels (as
ResShift's backbone sees it). It saves and loads as a diffusers folder without importing diffusers
(`nets/folder.py`): an upscale with it starts in about the time of `import torch`.

The backbone takes the already-scaled x_t; the wrapper that scales inputs lives with the diffusion
(`instantsr.diffusion.resshift.ResShiftDenoiser`), following k-diffusion's split.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.nn import functional as F

from .folder import FolderModule, register_to_config
from .unet2d import UNet2D

# Width presets: tiny is for tests (seconds on CPU); small is the shipped default; base/large for GPUs. tiny and
# small have no attention at all, so time and memory grow linearly with the pixels (the mid-block attention was
# worth nothing measurable to the default: docs/experiments/local_statistics.py); base/large attend globally at
# their lowest resolutions, quadratic in the area there.
UNET_PRESETS: dict[str, dict] = {
    "tiny": dict(block_out_channels=(16, 32), layers_per_block=1, attention_levels=(False, False), norm_num_groups=8,
                 mid_attention=False),
    "small": dict(block_out_channels=(32, 64, 128), layers_per_block=1, attention_levels=(False, False, False),
                  mid_attention=False),
    "base": dict(block_out_channels=(64, 128, 256), layers_per_block=2, attention_levels=(False, False, True)),
    "large": dict(block_out_channels=(128, 256, 256, 512), layers_per_block=2,
                  attention_levels=(False, False, True, True)),
}


class ConditionalUNet(FolderModule):
    """UNet2D on concat(x_t, LR image at latent resolution [, extra channels]) -> latent."""

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 48,  # channels of x_t and of the prediction
        cond_channels: int = 3,  # LR image channels concatenated to the input
        extra_channels: int = 0,  # further condition inputs after the LR image (RSD's noise), zero-initialised
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        layers_per_block: int = 1,
        attention_levels: tuple[bool, ...] = (False, False, False),
        norm_num_groups: int = 32,
        mid_attention: bool = True,  # global self-attention in the middle block: cost grows with the area squared
    ):
        super().__init__()
        self.unet = UNet2D(
            in_channels=latent_channels + cond_channels + extra_channels,
            out_channels=latent_channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            attention_levels=tuple(attention_levels),
            norm_num_groups=norm_num_groups,
            attention_head_dim=32,
            mid_attention=mid_attention,
        )
        if extra_channels:
            with torch.no_grad():  # new inputs start with no effect, so a teacher's weights carry over exactly
                self.unet.conv_in.weight[:, -extra_channels:].zero_()

    @classmethod
    def from_preset(cls, preset: str, **kwargs) -> "ConditionalUNet":
        if preset not in UNET_PRESETS:
            raise ValueError(f"unknown UNet preset {preset!r}; choose from {', '.join(UNET_PRESETS)}")
        return cls(**{**UNET_PRESETS[preset], **kwargs})

    @property
    def multiple(self) -> int:
        """Latent sizes must be a multiple of this."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    def _input(self, x: torch.Tensor, lq) -> torch.Tensor:
        return torch.cat(self._input_maps(x, lq), 1)

    def _input_maps(self, x: torch.Tensor, lq) -> list[torch.Tensor]:
        """[x, condition], the network's input once concatenated; the condition is the LR image, optionally
        followed by the extra channels (zeros when the caller gives only the LR image). Given a whole
        `Condition(lq, y)` (the VP family's denoiser passes it), the condition is y, the latent of the
        bicubic-upsampled LR (YONOS-SR Fig. 2)."""
        if isinstance(lq, tuple):
            lq = lq[1]
        if lq.shape[-2:] != x.shape[-2:]:
            # The LR image meets the latent at the latent's resolution (e.g. a KL-f8 latent at x4).
            lq = F.interpolate(lq, size=x.shape[-2:], mode="bicubic", align_corners=False)
        missing = self.config.cond_channels + self.config.extra_channels - lq.shape[1]
        if missing > 0:
            lq = torch.cat([lq, lq.new_zeros(lq.shape[0], missing, *lq.shape[-2:])], 1)
        return [x, lq.to(x.dtype)]

    def enable_tiling(self, tile: int, store: torch.device | str | None = None,
                      on_tile: Callable[[int], object] | None = None) -> None:
        """Run inputs larger than `tile` latent px layer by layer in tiles (exact: `tiled_unet`), keeping the
        full feature maps on `store` (default: the model's device; "cpu" saves GPU memory); `on_tile(1)` after
        each convolution tile."""
        self._tiling = (tile, store, on_tile)

    def disable_tiling(self) -> None:
        self._tiling = None

    def num_tiles(self, size: tuple[int, int], tile: int) -> int:
        """Convolution tiles of one tiled forward pass over a latent of `size` (a progress bar's total)."""
        from instantsr.nets.tiled_unet import TiledUNetRunner

        return TiledUNetRunner(self.unet, tile).num_tiles(size)

    def forward(self, x: torch.Tensor, t_index: torch.Tensor, lq) -> torch.Tensor:
        tiling = getattr(self, "_tiling", None)
        if tiling is not None and max(x.shape[-2:]) > tiling[0] and not torch.is_grad_enabled():
            from instantsr.nets.tiled_unet import TiledUNetRunner

            # the input maps go in apart: the runner concatenates them per tile, not over the whole image
            return TiledUNetRunner(self.unet, *tiling)(self._input_maps(x, lq), t_index).to(x.device)
        return self.unet(self._input(x, lq), t_index)  # a scalar t_index is broadcast over the batch there

    def encoder_features(self, x: torch.Tensor, t_index: torch.Tensor, lq) -> torch.Tensor:
        """The output of the down and middle blocks: the features a discriminator head reads (RSD, DMD2)."""
        unet = self.unet
        t = t_index.expand(x.shape[0]) if t_index.ndim == 0 else t_index
        emb = unet.time_embedding(unet.time_proj(t).to(dtype=x.dtype))
        h = unet.conv_in(self._input(x, lq))
        for block in unet.down_blocks:
            h, _ = block(hidden_states=h, temb=emb)
        return unet.mid_block(h, emb)


def adapt_extra_channels(model: ConditionalUNet, extra_channels: int) -> ConditionalUNet:
    """A copy of `model` with `extra_channels` more (zero-initialised) inputs; same outputs as `model`."""
    cfg = {k: v for k, v in model.config.items() if not k.startswith("_")}
    new = ConditionalUNet(**{**cfg, "extra_channels": extra_channels})
    state = model.state_dict()
    w = state["unet.conv_in.weight"]
    pad = w.new_zeros(w.shape[0], extra_channels - cfg["extra_channels"], *w.shape[2:])
    state["unet.conv_in.weight"] = torch.cat([w, pad], 1)
    new.load_state_dict(state)
    new = new.to(model.device)
    # cast only when needed: diffusers 0.42 warns on any dtype cast ("should be kept in float32: []")
    return new if new.dtype == model.dtype else new.to(dtype=model.dtype)
