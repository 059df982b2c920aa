"""Latent spaces. One interface: `encode(image) -> latent`, `decode(latent) -> image`, `scale_factor`,
`latent_channels`. Images are in [-1, 1], NCHW.

- `PixelUnshuffleCodec`: exact and parameter-free (space-to-depth). Lets small models train on CPU and is what
  the shipped default model uses.
- `KLCodec`: a diffusers `AutoencoderKL`, trained by `instantsr train autoencoder` or loaded from a local
  Stable Diffusion VAE folder.
- `VQF4Codec`: ResShift's VQ-f4 autoencoder (3 channels, codebook 8192), loadable from the official
  `autoencoder_vq_f4.pth` by path.

Each codec is a diffusers `ModelMixin`/`ConfigMixin`, so it saves and loads as a folder (config.json +
model.safetensors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:  # imported where a KLCodec is made: diffusers' autoencoders pull in its whole model registry
    from diffusers import AutoencoderKL


class PixelUnshuffleCodec(ModelMixin, ConfigMixin):
    """Space-to-depth by `factor`: an exact, invertible 'latent space' with no parameters.

    With `decoder_channels` > 0 the decoder is learned (`instantsr train decoder`): pixel-shuffle, then a small
    residual network at the output resolution whose last convolution starts at zero, so a new decoder starts as
    the exact one. Plain pixel-shuffle lets each of the factor^2 sub-pixel channels of a colour err on its own, so
    any latent error becomes a pattern of period `factor` (a grid on flat areas); the network sees across the
    sub-pixel phases and learns to remove it (YONOS-SR §3.3's decoder fine-tuning, on this codec)."""

    @register_to_config
    def __init__(self, factor: int = 4, image_channels: int = 3, decoder_channels: int = 0,
                 decoder_layers: int = 3):
        super().__init__()
        # ModelMixin wants at least one buffer to know its device and dtype.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)
        self.refiner = None
        if decoder_channels:
            if decoder_layers < 2:
                raise ValueError(f"decoder_layers = {decoder_layers}: a learned decoder has at least 2 layers")
            c, layers = decoder_channels, [nn.Conv2d(image_channels, decoder_channels, 3, padding=1), nn.SiLU()]
            for _ in range(decoder_layers - 2):
                layers += [nn.Conv2d(c, c, 3, padding=1), nn.SiLU()]
            layers.append(nn.Conv2d(c, image_channels, 3, padding=1))
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
            self.refiner = nn.Sequential(*layers)

    @property
    def scale_factor(self) -> int:
        return self.config.factor

    @property
    def latent_channels(self) -> int:
        return self.config.image_channels * self.config.factor**2

    @property
    def halo(self) -> int:
        """Output pixels each side that one output pixel depends on beyond its own sub-pixel block (the
        decoder's receptive-field radius; 0 for the exact codec)."""
        return self.config.decoder_layers if self.refiner is not None else 0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(x, self.config.factor)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = F.pixel_shuffle(z, self.config.factor)
        if self.refiner is None:
            return x
        small = x.shape[-2] * x.shape[-1] <= self.strip_pixels
        if torch.is_grad_enabled() or torch.compiler.is_exporting() or small:  # an ONNX graph: one pass
            return x + self._refine(x)
        # Large images in strips of rows, each with `halo` rows of context: the same result as one pass (a
        # 3x3 convolution's zero padding reaches one row per layer into the strip, and those rows are cut), in
        # memory that does not grow with the image.
        out, h, rows = torch.empty_like(x), x.shape[-2], max(1, self.strip_pixels // x.shape[-1])
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            a, b = max(0, r0 - self.halo), min(h, r1 + self.halo)
            out[..., r0:r1, :] = x[..., r0:r1, :] + self._refine(x[..., a:b, :])[..., r0 - a:r0 - a + r1 - r0, :]
        return out

    strip_pixels = 1 << 19  # output pixels per strip of the learned decoder at inference (16 MiB a feature map)

    def _refine(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last runs these 3-channel-in convolutions about twice as fast on the CPU (oneDNN)
        return self.refiner(x.contiguous(memory_format=torch.channels_last)).contiguous()


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

    The config is the official `autoencoder.params` (flattened `ddconfig`); the defaults are ResShift's."""

    @register_to_config
    def __init__(self, ch: int = 128, n_embed: int = 8192, embed_dim: int = 3, ch_mult: tuple[int, ...] = (1, 2, 4),
                 num_res_blocks: int = 2):
        super().__init__()
        from .nets.vqgan import ResShiftVQGAN

        self.vq = ResShiftVQGAN(ch=ch, n_embed=n_embed, embed_dim=embed_dim, z_channels=embed_dim,
                                ch_mult=tuple(ch_mult), num_res_blocks=num_res_blocks)

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


CODECS: dict[str, type[nn.Module]] = {
    "PixelUnshuffleCodec": PixelUnshuffleCodec,
    "KLCodec": KLCodec,
    "VQF4Codec": VQF4Codec,
}
