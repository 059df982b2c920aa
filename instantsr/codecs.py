"""Latent spaces. One interface: `encode(image) -> latent`, `decode(latent) -> image`, `scale_factor`,
`latent_channels`. Images are in [-1, 1], NCHW.

- `PixelUnshuffleCodec`: exact and parameter-free (space-to-depth). Lets small models train on CPU and is what
  the shipped default model uses.
- `KLCodec`: a diffusers `AutoencoderKL`, trained by `instantsr train autoencoder` or loaded from a local
  Stable Diffusion VAE folder.
- `VQF4Codec`: ResShift's VQ-f4 autoencoder (3 channels, codebook 8192), loadable from the official
  `autoencoder_vq_f4.pth` by path.

Each saves and loads as a diffusers folder (config.json + diffusion_pytorch_model.safetensors). The two learned
autoencoders are diffusers `ModelMixin`s and live in `instantsr.autoencoders`, imported when first asked for:
diffusers' import takes seconds, and the pixel-unshuffle codec (`nets/folder.py`) needs none of it.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .nets.folder import FolderModule, register_to_config


class PixelUnshuffleCodec(FolderModule):
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
        # a buffer tells `device` and `dtype` where the parameter-free codec is
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


def _learned(name: str) -> Callable[[], type[nn.Module]]:
    def load() -> type[nn.Module]:
        from . import autoencoders

        return getattr(autoencoders, name)

    return load


# The codecs a model folder may name, each class imported when a folder names it.
CODECS: dict[str, Callable[[], type[nn.Module]]] = {
    "PixelUnshuffleCodec": lambda: PixelUnshuffleCodec,
    "KLCodec": _learned("KLCodec"),
    "VQF4Codec": _learned("VQF4Codec"),
}


def __getattr__(name: str):  # `from instantsr.codecs import KLCodec` imports diffusers only then
    if name in ("KLCodec", "VQF4Codec"):
        return CODECS[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
