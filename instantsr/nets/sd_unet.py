"""A Stable Diffusion UNet (diffusers `UNet2DConditionModel`) as an SR backbone, as YONOS-SR and DFOSD start from:
the input is concat(z_t, y) (the conv_in widened with zero-initialised channels for y, so the text-to-image
weights carry over), and a learnable context replaces the text encoder's output.

`SDConditionalUNet.from_sd_folder(path)` reads a local diffusers Stable Diffusion folder (unet/, vae/); nothing
is downloaded (SD 2.1 has left the public hub: bring your own copy). The tests build tiny random SD-layout folders.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class SDConditionalUNet(ModelMixin, ConfigMixin):
    """UNet2DConditionModel on concat(z_t, y) with a learnable context of `context_tokens` tokens."""

    @register_to_config
    def __init__(
        self,
        unet_config: dict | None = None,  # the UNet2DConditionModel config (in_channels = latent + condition)
        context_tokens: int = 77,  # tokens of the learnable context (CLIP's 77 for SD)
    ):
        super().__init__()
        self.unet = UNet2DConditionModel(**(unet_config or {}))
        dim = self.unet.config.cross_attention_dim
        self.context = nn.Parameter(torch.zeros(1, context_tokens, dim))  # in place of the text embedding

    @classmethod
    def from_sd_folder(cls, folder: str | Path, cond_channels: int | None = None) -> "SDConditionalUNet":
        """The UNet of a local diffusers SD folder, conv_in widened by `cond_channels` (default: its latent
        channels) zero-initialised inputs for y: the widened net starts as the text-to-image one."""
        sd = UNet2DConditionModel.from_pretrained(Path(folder) / "unet", local_files_only=True)
        cfg = {k: v for k, v in sd.config.items() if not k.startswith("_")}
        latent = cfg["in_channels"]
        cfg["in_channels"] = latent + (cond_channels or latent)
        model = cls(unet_config=cfg)
        state = sd.state_dict()
        w = state["conv_in.weight"]
        state["conv_in.weight"] = torch.cat([w, w.new_zeros(w.shape[0], cfg["in_channels"] - latent, *w.shape[2:])], 1)
        model.unet.load_state_dict(state)
        return model

    @property
    def multiple(self) -> int:
        """Latent sizes must be a multiple of this (one halving per down block but the last)."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    def _inputs(self, x: torch.Tensor, t_index: torch.Tensor, cond):
        y = cond[1] if isinstance(cond, tuple) else cond  # a Condition(lq, y): the latent of the upsampled LR
        t = t_index.expand(x.shape[0]) if t_index.ndim == 0 else t_index
        context = self.context.expand(x.shape[0], -1, -1).to(x.dtype)
        return torch.cat([x, y.to(x.dtype)], 1), t, context

    def forward(self, x: torch.Tensor, t_index: torch.Tensor, cond) -> torch.Tensor:
        h, t, context = self._inputs(x, t_index, cond)
        return self.unet(h, t, encoder_hidden_states=context).sample

    def encoder_features(self, x: torch.Tensor, t_index: torch.Tensor, cond) -> torch.Tensor:
        """The output of the down blocks and the middle block: what DFOSD's noise-aware discriminator reads."""
        h, t, context = self._inputs(x, t_index, cond)
        unet = self.unet
        emb = unet.time_embedding(unet.time_proj(t).to(dtype=h.dtype))
        h = unet.conv_in(h)
        for block in unet.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=context)
            else:
                h, _ = block(hidden_states=h, temb=emb)
        return unet.mid_block(h, emb, encoder_hidden_states=context)
