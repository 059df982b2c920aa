"""Training losses.

Perceptual: :class:`instantsr.metrics.LPIPS` is itself the LPIPS loss (frozen, differentiable in its
inputs, one value per image); :class:`EADISTS` is DFOSD's edge-aware DISTS. Inputs are images in
[0, 1], NCHW; convert from the models' [-1, 1] with ``(x + 1) / 2``.

:class:`ChromaLoss`: the colour of an image after a low-pass, against its reference's (the colour cast that
``instantsr eval --metrics color`` measures, as a training loss).

Adversarial: :func:`discriminator_loss` and :func:`generator_loss` on discriminator logits
(:mod:`instantsr.nets.discriminators`), hinge or non-saturating.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from instantsr.artifacts import rgb_to_cbcr
from instantsr.metrics import DISTS, LPIPS

__all__ = ["ChromaLoss", "EADISTS", "LPIPS", "discriminator_loss", "generator_loss", "judged_generator_loss", "sobel_magnitude"]

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_magnitude(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-channel Sobel edge magnitude sqrt(Gx^2 + Gy^2 + eps), same size (replicate borders)."""
    c = x.shape[1]
    gx = _SOBEL_X.to(x)
    kernel = torch.stack([gx, gx.T])[:, None].repeat(c, 1, 1, 1)  # (2c, 1, 3, 3): Gx, Gy per channel
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)
    g = g.view(x.shape[0], c, 2, *x.shape[2:])
    return torch.sqrt(g.pow(2).sum(2) + eps)


class EADISTS(nn.Module):
    """Edge-aware DISTS (DFOSD, Eq. 5-7): DISTS(a, b) + DISTS(S(a), S(b)), S the Sobel magnitude.

    ``forward(a, b)`` takes images in [0, 1] and returns the loss per image, shape (N,); take ``.mean()``
    for a batch loss. ``dists`` may be shared with another user of the same DISTS network.
    """

    def __init__(self, dists: DISTS | None = None, pretrained: bool = True, eps: float = 1e-6):
        super().__init__()
        self.dists = dists if dists is not None else DISTS(pretrained=pretrained)
        self.eps = eps

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        edges = self.dists(sobel_magnitude(a, self.eps), sobel_magnitude(b, self.eps))
        return self.dists(a, b) + edges


class ChromaLoss(nn.Module):
    """Mean |dCb| + |dCr| (BT.601 chroma) between two images average-pooled over `pool` px: a colour cast costs,
    texture and sharpening do not (artifacts.color_shift, as a loss against HR). One value per image."""

    def __init__(self, pool: int = 8):
        super().__init__()
        self.pool = pool  # kernel = stride of the low-pass; 2 x scale, as the colour measure pools

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = rgb_to_cbcr(F.avg_pool2d(a, self.pool)) - rgb_to_cbcr(F.avg_pool2d(b, self.pool))
        return d.abs().sum(1).mean(dim=(1, 2))


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, kind: str, weight: float = 0.5) -> torch.Tensor:
    """Discriminator loss on the logits of real and generated samples: ``kind`` "hinge" (LDM)
    relu(1 - real) + relu(1 + fake), else non-saturating softplus(-real) + softplus(fake) (-log D(real)
    - log(1 - D(fake))), each term a mean. ``weight`` multiplies the sum of the two terms: 0.5, the default,
    averages them (LDM, the autoencoder recipe); RSD sums them (weight 1, as DMD2)."""
    if kind == "hinge":
        return weight * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
    return weight * (F.softplus(-real).mean() + F.softplus(fake).mean())


def generator_loss(fake: torch.Tensor, kind: str) -> torch.Tensor:
    """Generator loss on the discriminator's logits of generated samples: ``kind`` "hinge" -mean(fake) (LDM),
    else the non-saturating -log D(fake) = mean softplus(-fake)."""
    return -fake.mean() if kind == "hinge" else F.softplus(-fake).mean()


def judged_generator_loss(discriminator: nn.Module, fake: torch.Tensor, kind: str, *inputs) -> torch.Tensor:
    """``generator_loss`` of ``discriminator(fake, *inputs)``, a discriminator that this loss must not train: its
    parameters are frozen for the call, and a DDP wrapper (``.module``) is bypassed, so no gradient sync waits
    for it. ``inputs`` are what else it reads (DFOSD's NAD: the timestep and the condition)."""
    net = getattr(discriminator, "module", discriminator)
    trainable = [p for p in net.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        return generator_loss(net(fake, *inputs), kind)
    finally:
        for p in trainable:  # only what was trainable: a LoRA discriminator's frozen base stays frozen
            p.requires_grad_(True)


