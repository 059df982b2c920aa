"""The ResShift teacher (Yue et al., NeurIPS 2023): x0-prediction training of residual-shifting diffusion.

Recipe: encode HR and bicubic-upsampled LR with the codec (x0, y), draw t uniformly, x_t ~ q(x_t | x0, y),
minimise ||f(x_t, y, t) - x0||^2. The backbone also sees the LR image (concatenated).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..codecs import KLCodec, PixelUnshuffleCodec
from ..diffusion.resshift import ResShiftDenoiser, ResShiftLoss, ResShiftSchedule, skip_scalings
from ..model import SRModel, encode_condition
from ..nets.unet import ConditionalUNet


@dataclass
class ResShiftConfig:
    unet: str = "small"  # ConditionalUNet preset: tiny | small | base | large
    codec: str = "pixel_unshuffle"  # pixel_unshuffle | a KLCodec folder (trained by `train autoencoder`)
    scale: int = 4
    T: int = 15
    kappa: float = 2.0
    p: float = 0.3
    min_noise_level: float = 0.04
    etas_end: float = 0.99
    sigma_data: float = 0.25  # std of x0 - y for the residual preconditioning; 0 = the paper's plain x0 (the
    #                           model then stores sigma_data None: the backbone's output is x0_hat)
    sample_steps: int = 15  # default steps of the exported model
    sampler: str = "deterministic"  # deterministic (SinSR) | stochastic (ResShift)
    init: str = ""  # a model folder (RUN/model) whose backbone starts this run: continues a teacher whose
    #                 checkpoints are gone (its EMA weights, with a fresh optimizer)
    loss_repeats: int = 1  # (t, noise) draws per training image per step: more work per degraded crop where
    #                        data is the bottleneck (stage 1 of the shipped teacher used 2)
    lpips_weight: float = 0.0  # + lpips_weight LPIPS(decode(x0_hat), HR): ResShift's journal version (official
    #                            TrainerDifIRLPIPS, loss_coef [1, 1]); 0 = the conference paper's plain MSE
    lpips_net: str = "vgg"  # LPIPS backbone: vgg (the official) | alex (~30x cheaper on CPU)

    @property
    def schedule(self) -> ResShiftSchedule:
        return ResShiftSchedule(T=self.T, kappa=self.kappa, p=self.p, min_noise_level=self.min_noise_level,
                                etas_end=self.etas_end)


def build_codec(spec: str, scale: int):
    """'pixel_unshuffle' (factor = scale, so latents meet the LR image at its own size), 'pixel_unshuffle:F'
    (factor F whatever the scale: one latent layout for x2, x4 and x8, as scale distillation needs) or a codec
    folder."""
    if spec == "pixel_unshuffle":
        return PixelUnshuffleCodec(factor=scale)
    if spec.startswith("pixel_unshuffle:"):
        factor = spec.partition(":")[2]
        if not factor.isdigit() or int(factor) < 1:
            raise ValueError(f"codec {spec!r}: give pixel_unshuffle:F with a whole factor F, e.g. pixel_unshuffle:4")
        return PixelUnshuffleCodec(factor=int(factor))
    return KLCodec.from_pretrained(spec, local_files_only=True)


def rescale_output(backbone: ConditionalUNet, schedule: ResShiftSchedule, old: float | None, new: float | None):
    """Carry a teacher over to another sigma_data: scale the last convolution by c_out_old / c_out_new at t=T,
    so that the one-step prediction (where c_skip is ~0) is unchanged and fine-tuning starts from it."""
    if old is None or new is None:
        raise ValueError("init and config must both use residual preconditioning (sigma_data > 0) to change it")
    t_last, like = torch.tensor([schedule.T - 1]), torch.zeros(1, 1, 1, 1)
    ratio = skip_scalings(t_last, schedule, old, like)[1] / skip_scalings(t_last, schedule, new, like)[1]
    with torch.no_grad():
        for p in backbone.unet.conv_out.parameters():
            p.mul_(float(ratio))


def load_init(backbone: ConditionalUNet, start: ConditionalUNet, source: str) -> None:
    """`start`'s weights into `backbone`, all of them, or one line that says why they do not fit."""
    ours, theirs = backbone.state_dict(), start.state_dict()
    if ours.keys() != theirs.keys() or any(v.shape != theirs[k].shape for k, v in ours.items()):
        raise ValueError(f"init {source}: its backbone ({type(start).__name__}, "
                         f"{getattr(start.config, 'block_out_channels', '?')} channels) does not fit this config's "
                         f"({backbone.config.block_out_channels}); use its `unet` preset and codec")
    backbone.load_state_dict(theirs)


class ResShiftRecipe:
    """Trains a ResShift teacher from scratch."""

    ema_network = "denoiser"

    def __init__(self, config: ResShiftConfig):
        self.method_config = config
        self.schedule = config.schedule
        self.codec = build_codec(config.codec, config.scale).requires_grad_(False).eval()
        self.backbone = ConditionalUNet.from_preset(config.unet, latent_channels=self.codec.latent_channels)
        if config.init:
            start = SRModel.from_pretrained(config.init)
            load_init(self.backbone, start.backbone, config.init)
        self.lpips = None
        if config.lpips_weight:
            from ..metrics import LPIPS  # WeightsNotFoundError says to run `instantsr weights fetch`

            self.lpips = LPIPS(config.lpips_net)
        self.loss = ResShiftLoss(self.schedule, self.lpips, config.lpips_weight, self.codec.decode)
        self.sigma_data = config.sigma_data or None
        if config.init and start.sigma_data != self.sigma_data:
            rescale_output(self.backbone, self.schedule, start.sigma_data, self.sigma_data)
        self._train_backbone = self.backbone

    def networks(self) -> dict:
        return {"denoiser": self.backbone}

    def bind(self, wrapped: dict) -> None:
        self._train_backbone = wrapped["denoiser"]

    def training_step(self, hr: torch.Tensor, lr: torch.Tensor, ctx) -> dict:
        for frozen in (self.codec, self.lpips):
            if frozen is not None:
                frozen.to(hr.device)
        with torch.no_grad():
            x0 = self.codec.encode(hr * 2 - 1)
            cond = encode_condition(self.codec, lr, self.method_config.scale)
        r = self.method_config.loss_repeats
        if r > 1:  # the same images at r independent timesteps and noises
            x0, cond = x0.repeat(r, 1, 1, 1), type(cond)(*(v.repeat(r, 1, 1, 1) for v in cond))
            hr = hr.repeat(r, 1, 1, 1) if self.lpips is not None else hr  # only the LPIPS term reads it
        denoiser = ResShiftDenoiser(self._train_backbone, self.schedule, self.sigma_data)
        loss = self.loss(denoiser, x0, cond, generator=ctx.generator, image=hr).mean()
        ctx.update("denoiser", loss)
        return {"loss": loss.detach()}

    def sr_model(self, backbone=None) -> SRModel:
        cfg = self.method_config
        return SRModel(backbone or self.backbone, self.codec, self.schedule, scale=cfg.scale, method="resshift",
                       steps=cfg.sample_steps, sampler=cfg.sampler, sigma_data=self.sigma_data)
