"""YONOS-SR (Noroozi et al. 2024): a VP latent diffusion SR model, trained on raw data (Eq. 2) or by scale
distillation from a teacher at half the scale (Eq. 3, Algorithm 1).

Raw data: encode HR (x0) and the bicubic-upsampled LR (y) with the codec; draw t uniformly over 0..T-1 and
z_t = alpha_t x0 + sigma_t eps; the UNet sees concat(z_t, y) (Fig. 2) and predicts v (by default); the loss is
(1 + alpha_t^2 / sigma_t^2) ||x0_hat - x0||^2, which is the plain v-MSE.
Scale distillation (`teacher`: a model of this method at scale/2): each HR crop is degraded by 1/s for the
student and by 2/s for the frozen teacher (the same kernels and noise draws: `data.degrade_pairs`); both see the
same z_t of the HR latent; the student, initialised from the teacher, regresses the teacher's x0_hat with the same
weight, i.e. the student's v regresses the teacher's v. Iterate x2 -> x4 -> x8.
Inference: DDIM from z_T ~ N(0, I), one step by default (trailing spacing: the one step is t = T-1).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from ..diffusion.vp import VPDenoiser, VPLoss, VPSchedule
from ..model import SRModel, encode_condition
from ..nets.unet import ConditionalUNet
from .resshift import build_codec, load_init


@dataclass
class YonosConfig:
    unet: str = "small"  # ConditionalUNet preset: tiny | small | base | large
    codec: str = "pixel_unshuffle"  # pixel_unshuffle (factor = scale) | pixel_unshuffle:F (any scale; what scale
    #                                 distillation needs) | a KLCodec folder (trained by `train autoencoder`)
    scale: int = 4
    T: int = 1000
    beta_schedule: str = "scaled_linear"  # scaled_linear (Stable Diffusion) | linear | cosine
    beta_start: float = 0.00085
    beta_end: float = 0.012
    parameterization: str = "v"  # v (YONOS-SR) | eps | x0
    weighting: str = "snr+1"  # 1 + alpha^2/sigma^2 on the x0 error (= v-MSE; YONOS-SR Eq. 2) | none
    one_step_fraction: float = 0.0  # share of training t drawn at T-1, the one-step sampler's t (our deviation
    #                                 for short budgets, docs/yonos.md); the rest uniform, as the paper's Eq. 2-3
    sample_steps: int = 1  # default DDIM steps of the exported model (any count up to T runs)
    teacher: str = ""  # scale distillation: a yonos model folder at scale/2 (its net, codec and schedule are used)
    sd: str = ""  # a local diffusers Stable Diffusion folder (unet/, vae/): its UNet (learnable context in place
    #               of text) and VAE replace `unet` and `codec`, as the paper starts from SD's weights
    init: str = ""  # a model folder whose backbone (same preset and codec) starts this run: a warm start, or a
    #                 run continued after its checkpoints are gone (a fresh optimizer)

    @property
    def schedule(self) -> VPSchedule:
        return VPSchedule(T=self.T, beta_schedule=self.beta_schedule, beta_start=self.beta_start,
                          beta_end=self.beta_end)


class YonosRecipe:
    """Trains a YONOS-SR model on raw data, or by scale distillation from `config.teacher`."""

    ema_network = "denoiser"

    def __init__(self, config: YonosConfig):
        self.method_config = config
        self.teacher = None
        if config.teacher:
            self.teacher = load_teacher(config)
            self.schedule, self.codec = self.teacher.schedule, self.teacher.codec.requires_grad_(False).eval()
            self.backbone = copy.deepcopy(self.teacher.backbone).requires_grad_(True).train()
            self.teacher.requires_grad_(False)
            self.lr_scales = (config.scale // 2, config.scale)  # lr is then {scale: LR} (train.py)
        elif config.sd:
            from diffusers import AutoencoderKL

            from ..codecs import KLCodec
            from ..nets.sd_unet import SDConditionalUNet

            self.schedule = config.schedule
            vae = AutoencoderKL.from_pretrained(Path(config.sd) / "vae", local_files_only=True)
            self.codec = KLCodec.from_vae(vae).requires_grad_(False).eval()
            self.backbone = SDConditionalUNet.from_sd_folder(config.sd, self.codec.latent_channels)
        else:
            self.schedule = config.schedule
            self.codec = build_codec(config.codec, config.scale).requires_grad_(False).eval()
            c = self.codec.latent_channels
            self.backbone = ConditionalUNet.from_preset(config.unet, latent_channels=c, cond_channels=c)
        if config.init:
            if config.teacher:
                raise ValueError("yonos: init and teacher both set; a distilled student starts from its teacher")
            load_init(self.backbone, SRModel.from_pretrained(config.init).backbone, config.init)
        self.loss = VPLoss(self.schedule, config.weighting, config.one_step_fraction)
        self._train_backbone = self.backbone
        self.sr_model()  # a bad parameterization or step count fails here, before any training

    def networks(self) -> dict:
        return {"denoiser": self.backbone}

    def bind(self, wrapped: dict) -> None:
        self._train_backbone = wrapped["denoiser"]

    def training_step(self, hr: torch.Tensor, lr, ctx) -> dict:
        cfg = self.method_config
        self.codec.to(hr.device)
        target = None
        with torch.no_grad():
            x0 = self.codec.encode(hr * 2 - 1)
            if self.teacher is not None:  # lr = {s/2: less degraded, s: more degraded}
                self.teacher.to(hr.device)
                teacher_cond = encode_condition(self.codec, lr[cfg.scale // 2], cfg.scale // 2)
                teacher = self.teacher.denoiser
                lr = lr[cfg.scale]

                def target(x_t, t_index):  # the frozen teacher's x0_hat on the same z_t (Eq. 3)
                    with torch.no_grad():
                        return teacher(x_t, t_index, teacher_cond)
            cond = encode_condition(self.codec, lr, cfg.scale)
        denoiser = VPDenoiser(self._train_backbone, self.schedule, self.parameterization)
        loss = self.loss(denoiser, x0, cond, generator=ctx.generator, target=target).mean()
        ctx.update("denoiser", loss)
        return {"loss": loss.detach()}

    def sr_model(self, backbone=None) -> SRModel:
        cfg = self.method_config
        return SRModel(backbone or self.backbone, self.codec, self.schedule, scale=cfg.scale, method="yonos",
                       family="vp", parameterization=self.parameterization, steps=cfg.sample_steps, sampler="ddim")

    @property
    def parameterization(self) -> str:
        return self.teacher.parameterization if self.teacher is not None else self.method_config.parameterization


def load_teacher(config: YonosConfig) -> SRModel:
    """The frozen teacher of scale distillation: a VP model folder at half the student's scale."""
    teacher = SRModel.from_pretrained(config.teacher).eval()
    if teacher.family != "vp":
        raise ValueError(f"{config.teacher}: a {teacher.family} model; scale distillation needs a VP model "
                         "(`instantsr train yonos`)")
    if config.scale % 2 or teacher.scale != config.scale // 2:
        raise ValueError(f"{config.teacher}: upscales x{teacher.scale}; a x{config.scale} student needs a "
                         f"x{config.scale // 2} teacher (x2 -> x4 -> x8)")
    return teacher
