"""Discriminators of the GAN terms the recipes train: the PatchGAN of the autoencoder (LDM's first stage) and the
small logit head RSD puts on its fake model's encoder features (DMD2). Their losses are in :mod:`instantsr.losses`."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["DiscriminatorHead", "PatchDiscriminator"]


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix, LDM's NLayerDiscriminator) with GroupNorm: one logit per patch of an image in [-1, 1]."""

    def __init__(self, channels: int = 64, layers: int = 3, in_channels: int = 3):
        super().__init__()

        def norm(c: int) -> nn.Module:
            return nn.GroupNorm(math.gcd(32, c), c)

        mods: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, layers + 1):
            out = channels * min(2**i, 8)
            stride = 2 if i < layers else 1  # the last one keeps the resolution, as pix2pix
            mods += [nn.Conv2d(c, out, 4, stride, 1, bias=False), norm(out), nn.LeakyReLU(0.2)]
            c = out
        mods.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)
        for m in self.modules():  # DCGAN / LDM initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DiscriminatorHead(nn.Module):
    """A small head on the fake model's encoder features: conv, SiLU, global pool, linear -> one logit."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.SiLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(1)
