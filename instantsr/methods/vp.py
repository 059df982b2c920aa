"""A VP latent diffusion SR model trained on raw data: YONOS-SR's base model (Noroozi et al. 2024, Eq. 2).

Recipe: encode HR (x0) and the bicubic-upsampled LR (y) with the codec; draw t uniformly over 0..T-1 and
z_t = alpha_t x0 + sigma_t eps; the UNet sees concat(z_t, y) (YONOS-SR Fig. 2) and predicts v (by default); the
loss is (1 + alpha_t^2 / sigma_t^2) ||x0_hat - x0||^2, which is the plain v-MSE. Inference: DDIM from
z_T ~ N(0, I), one step by default (trailing spacing: the one step is t = T-1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..diffusion.vp import VPDenoiser, VPLoss, VPSchedule
from ..model import SRModel, encode_condition
from ..nets.unet import ConditionalUNet
from .resshift import build_codec


@dataclass
class VPConfig:
    unet: str = "small"  # ConditionalUNet preset: tiny | small | base | large
    codec: str = "pixel_unshuffle"  # pixel_unshuffle | a KLCodec folder (trained by `train autoencoder`)
    scale: int = 4
    T: int = 1000
    beta_schedule: str = "scaled_linear"  # scaled_linear (Stable Diffusion) | linear | cosine
    beta_start: float = 0.00085
    beta_end: float = 0.012
    parameterization: str = "v"  # v (YONOS-SR) | eps | x0
    weighting: str = "snr+1"  # 1 + alpha^2/sigma^2 on the x0 error (= v-MSE; YONOS-SR Eq. 2) | none
    sample_steps: int = 1  # default DDIM steps of the exported model (any count up to T runs)

    @property
    def schedule(self) -> VPSchedule:
        return VPSchedule(T=self.T, beta_schedule=self.beta_schedule, beta_start=self.beta_start,
                          beta_end=self.beta_end)


class VPRecipe:
    """Trains a VP latent diffusion SR model from scratch."""

    ema_network = "denoiser"

    def __init__(self, config: VPConfig):
        self.method_config = config
        self.schedule = config.schedule
        self.codec = build_codec(config.codec, config.scale).requires_grad_(False).eval()
        c = self.codec.latent_channels
        self.backbone = ConditionalUNet.from_preset(config.unet, latent_channels=c, cond_channels=c)
        self.loss = VPLoss(self.schedule, config.weighting)
        self._train_backbone = self.backbone
        self.sr_model()  # a bad parameterization or step count fails here, before any training

    def networks(self) -> dict:
        return {"denoiser": self.backbone}

    def bind(self, wrapped: dict) -> None:
        self._train_backbone = wrapped["denoiser"]

    def training_step(self, hr: torch.Tensor, lr: torch.Tensor, ctx) -> dict:
        self.codec.to(hr.device)
        with torch.no_grad():
            x0 = self.codec.encode(hr * 2 - 1)
            cond = encode_condition(self.codec, lr, self.method_config.scale)
        denoiser = VPDenoiser(self._train_backbone, self.schedule, self.method_config.parameterization)
        loss = self.loss(denoiser, x0, cond, generator=ctx.generator).mean()
        ctx.update("denoiser", loss)
        return {"loss": loss.detach()}

    def sr_model(self, backbone=None) -> SRModel:
        cfg = self.method_config
        return SRModel(backbone or self.backbone, self.codec, self.schedule, scale=cfg.scale, method="vp",
                       family="vp", parameterization=cfg.parameterization, steps=cfg.sample_steps, sampler="ddim")
