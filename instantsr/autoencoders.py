"""The learned codecs, each a diffusers `ModelMixin`: `KLCodec` (diffusers' `AutoencoderKL`) and `VQF4Codec`
(ResShift's VQ-f4). Reached through `instantsr.codecs` (its `CODECS` table, or `from instantsr.codecs import
KLCodec`), which imports this module, and with it diffusers, only when one is asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

if TYPE_CHECKING:
    from diffusers import AutoencoderKL


class KLCodec(ModelMixin, ConfigMixin):
    """A diffusers `AutoencoderKL`; latents are the posterior mode times `scaling_factor`."""

    @register_to_config
    def __init__(
        self,
        block_out_channels: tuple[int, ...] = (64, 128, 256),  # one entry per level; f = 2^(levels-1)
        latent_channels: int = 4,
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        scaling_factor: float = 1.0,  # latents are multiplied by this (SD VAE: 0.18215)
    ):
        super().__init__()
        from diffusers import AutoencoderKL

        n = len(block_out_channels)
        self.vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            latent_channels=latent_channels,
            norm_num_groups=norm_num_groups,
            scaling_factor=scaling_factor,
        )

    @classmethod
    def from_vae(cls, vae: AutoencoderKL) -> "KLCodec":
        """Wrap an existing AutoencoderKL (e.g. a Stable Diffusion VAE loaded from a local folder)."""
        cfg = vae.config
        codec = cls(
            block_out_channels=tuple(cfg.block_out_channels),
            latent_channels=cfg.latent_channels,
            layers_per_block=cfg.layers_per_block,
            norm_num_groups=cfg.norm_num_groups,
            scaling_factor=cfg.scaling_factor,
        )
        codec.vae = vae
        return codec

    @classmethod
    def from_sd_vae_folder(cls, folder: str) -> "KLCodec":
        """Load a Stable Diffusion VAE from a local diffusers folder (no download)."""
        from diffusers import AutoencoderKL

        return cls.from_vae(AutoencoderKL.from_pretrained(folder, local_files_only=True))

    @property
    def scale_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def encode(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None):
        dist = self.vae.encode(x).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        return z * self.config.scaling_factor

    def posterior(self, x: torch.Tensor):
        """The diagonal Gaussian posterior (for the KL term when training the autoencoder)."""
        return self.vae.encode(x).latent_dist

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z / self.config.scaling_factor).sample

    def forward(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None):
        """Training pass (`instantsr train autoencoder`): (reconstruction, KL(posterior || N(0, I)) per image,
        latent). The latent is a posterior sample (the mode with `sample=False`), not times `scaling_factor`."""
        dist = self.vae.encode(x).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        return self.vae.decode(z).sample, dist.kl(), z


class VQF4Codec(ModelMixin, ConfigMixin):
    """ResShift's VQ-f4 autoencoder; `decode` quantises first, as ResShift's decode_first_stage does.

    The config is the official `autoencoder.params` (flattened `ddconfig`); the defaults are ResShift's, plus
    `lean` (ours: `ResShiftVQGAN.lean`; `"lean": false` in the folder's codec/config.json runs the official layer
    order exactly)."""

    @register_to_config
    def __init__(self, ch: int = 128, n_embed: int = 8192, embed_dim: int = 3, ch_mult: tuple[int, ...] = (1, 2, 4),
                 num_res_blocks: int = 2, lean: bool = True):
        super().__init__()
        from .nets.vqgan import ResShiftVQGAN

        self.vq = ResShiftVQGAN(ch=ch, n_embed=n_embed, embed_dim=embed_dim, z_channels=embed_dim,
                                ch_mult=tuple(ch_mult), num_res_blocks=num_res_blocks, lean=lean)

    @classmethod
    def from_official(cls, path: str, **overrides) -> "VQF4Codec":
        """Load `autoencoder_vq_f4.pth` (official ResShift) by path; `overrides` change the config (tests)."""
        from .nets.vqgan import load_official_into

        codec = cls(**overrides)
        load_official_into(codec.vq, path)
        return codec.eval()

    @property
    def scale_factor(self) -> int:
        return 2 ** (len(self.config.ch_mult) - 1)

    @property
    def latent_channels(self) -> int:
        return self.config.embed_dim

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.vq.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vq.decode(z)
