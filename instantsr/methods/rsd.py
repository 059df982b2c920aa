"""RSD (Selikhanovych et al. 2025): one-step residual-shifting distillation with a fake teacher.

Three networks: the frozen teacher f*, the generator G (the teacher plus one zero-initialised noise input, so
that different eps give different outputs) and the fake ResShift f_phi (initialised from the teacher), which
also carries a small discriminator head on its encoder features.

    fake update (x `fake_updates`):  ResShift x0 loss of f_phi on x_t ~ q(x_t | sg(x0_hat), y), t uniform
                                     + GAN loss of the head: real HR latents vs generator latents
    generator update:                sum_t w_t (||f*(x_t) - x0_hat||^2 - ||f_phi(x_t) - x0_hat||^2) / norm
                                     with x_t ~ q(x_t | x0_hat, y) and the gradient through x0_hat,
                                     + 2.0 LPIPS(decode(x0_hat), HR) + 3e-3 non-saturating GAN loss

Multistep training: G is trained from N fixed timesteps t_n, its input x_{t_n} ~ q(. | x0, y) (x_T from the
prior at t_n = T); inference always starts from t = T in one step.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..diffusion.resshift import ResShiftDenoiser, ResShiftLoss, q_sample, scale_input
from ..losses import discriminator_loss, generator_loss
from ..model import SRModel, encode_condition
from ..nets.discriminators import DiscriminatorHead
from ..nets.unet import adapt_extra_channels


@dataclass
class RSDConfig:
    teacher: str = ""  # teacher model folder (RUN/model of `instantsr train resshift`)
    fake_updates: int = 5  # fake-model updates per generator update
    multistep: int = 4  # N fixed generator timesteps, evenly spaced, T included
    lpips_weight: float = 2.0
    lpips_net: str = "vgg"  # LPIPS backbone: vgg | alex (~27x cheaper on CPU, but as a loss it draws a mesh)
    gan_weight: float = 3e-3
    fake_lr_scale: float = 1.0  # fake model learning rate = train.lr * this
    noise_channels: int = 1  # eps inputs of the generator


class FakeModel(nn.Module):
    """f_phi and its discriminator head, trained together by one optimizer (as in DMD2)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = DiscriminatorHead(backbone.config.block_out_channels[-1])

    def forward(self, x, t_index, lq):
        return self.backbone(x, t_index, lq)

    def logits(self, x, t_index, lq):
        return self.head(self.backbone.encoder_features(x, t_index, lq))


class RSDRecipe:
    """Trains a one-step RSD generator from a frozen ResShift teacher."""

    ema_network = "generator"

    def __init__(self, config: RSDConfig, teacher: SRModel | None = None, lpips: nn.Module | None = None):
        self.method_config = config
        self.teacher = teacher or SRModel.from_pretrained(config.teacher)
        self.teacher.requires_grad_(False).eval()
        self.schedule, self.scale = self.teacher.schedule, self.teacher.scale
        self.generator = adapt_extra_channels(self.teacher.backbone, config.noise_channels).requires_grad_(True)
        self.fake = FakeModel(copy.deepcopy(self.teacher.backbone)).requires_grad_(True)
        self.fake_loss = ResShiftLoss(self.schedule)
        self.gen_steps = self.schedule.respaced(config.multistep).timesteps  # e.g. (0, 5, 9, 14)
        if lpips is None and config.lpips_weight:
            from ..metrics import LPIPS

            lpips = LPIPS(config.lpips_net)
        self.lpips = lpips
        self._train = {"generator": self.generator, "fake": self.fake}

    def networks(self) -> dict:
        return {"generator": self.generator, "fake": self.fake}

    def learning_rate_scales(self) -> dict:
        return {"fake": self.method_config.fake_lr_scale}

    def bind(self, wrapped: dict) -> None:
        self._train = wrapped

    # ---- pieces, each tested on its own ----------------------------------------------------------------
    def generator_input(self, x0, y, generator: torch.Generator | None):
        """(x_{t_n}, t_n): one of the N fixed timesteps per sample, x_{t_n} ~ q(. | x0, y) (multistep)."""
        pick = torch.randint(0, len(self.gen_steps), (x0.shape[0],), generator=generator, device=x0.device)
        t = torch.tensor(self.gen_steps, device=x0.device)[pick]
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return q_sample(x0, y, t, noise, self.schedule), t

    def _denoiser(self, name: str) -> ResShiftDenoiser:
        """The training copy of a network (DDP-wrapped when distributed), parameterised like the teacher."""
        return ResShiftDenoiser(self._train[name], self.schedule, self.teacher.sigma_data)

    def generate(self, x_t, t, cond):
        """x0_hat = G(x_t, y, t, eps): the generator sees the LR image and its noise channel in `cond`."""
        return self._denoiser("generator")(x_t, t, cond)

    def distillation_loss(self, x0_hat, y, cond_lr, generator: torch.Generator | None):
        """sum_t w_t (||f*(x_t) - x0_hat||^2 - ||f_phi(x_t) - x0_hat||^2), per-sample normalised (w_t = 1)."""
        t = torch.randint(0, self.schedule.T, (x0_hat.shape[0],), generator=generator, device=x0_hat.device)
        noise = torch.randn(x0_hat.shape, generator=generator, device=x0_hat.device, dtype=x0_hat.dtype)
        x_t = q_sample(x0_hat, y, t, noise, self.schedule)  # gradient flows through x0_hat, also via x_t
        teacher_x0 = self.teacher.denoiser(x_t, t, cond_lr)
        fake_x0 = self._denoiser("fake")(x_t, t, cond_lr)
        # DMD-style normaliser: the detached mean |x0_teacher - x0_hat| per sample keeps the scale steady.
        norm = (teacher_x0 - x0_hat).abs().flatten(1).mean(1).detach().clamp_min(1e-4)
        gap = (teacher_x0 - x0_hat).pow(2).flatten(1).mean(1) - (fake_x0 - x0_hat).pow(2).flatten(1).mean(1)
        return (gap / norm).mean()

    def fake_model_loss(self, x0_hat, x0, y, cond_lr, generator: torch.Generator | None):
        """f_phi fitted on generator outputs (ResShift x0 loss) + its head's GAN loss, real HR vs generated."""
        fake = self._train["fake"]
        x0_hat = x0_hat.detach()
        fit = self.fake_loss(self._denoiser("fake"), x0_hat, cond_lr, generator=generator).mean()
        if not self.method_config.gan_weight:
            return fit, {"fake_fit": fit.detach()}
        real, gen = self._disc_logits(fake, x0, y, cond_lr, generator), self._disc_logits(fake, x0_hat, y, cond_lr,
                                                                                           generator)
        disc = discriminator_loss(real, gen, "nonsaturating", weight=1.0)  # the sum of both terms, as DMD2
        return fit + disc, {"fake_fit": fit.detach(), "disc": disc.detach()}

    def gan_loss(self, x0_hat, y, cond_lr, generator: torch.Generator | None):
        """Non-saturating generator loss -log D(x0_hat | y)."""
        return generator_loss(self._disc_logits(self._train["fake"], x0_hat, y, cond_lr, generator), "nonsaturating")

    def _disc_logits(self, fake, x0, y, cond_lr, generator):
        # The head reads the fake model's features of a noised sample at a random t (DMD2), conditioned on y.
        t = torch.randint(0, self.schedule.T, (x0.shape[0],), generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = scale_input(q_sample(x0, y, t, noise, self.schedule), t, self.schedule)
        module = fake.module if hasattr(fake, "module") else fake
        return module.logits(x_t, t, cond_lr[0])

    # ---- one training step -------------------------------------------------------------------------------
    def training_step(self, hr: torch.Tensor, lr: torch.Tensor, ctx) -> dict:
        cfg, g = self.method_config, ctx.generator
        teacher = self.teacher.to(hr.device)
        with torch.no_grad():
            x0 = teacher.codec.encode(hr * 2 - 1)
            cond = encode_condition(teacher.codec, lr, self.scale, cfg.noise_channels, g)
        y = cond.y
        cond_lr = cond._replace(lq=cond.lq[:, : cond.lq.shape[1] - cfg.noise_channels])  # f*, f_phi: no eps input
        logs = {}
        self.fake.requires_grad_(True)
        for _ in range(cfg.fake_updates):
            with torch.no_grad():
                x_t, t = self.generator_input(x0, y, g)
                x0_hat = self.generate(x_t, t, cond)
            loss, parts = self.fake_model_loss(x0_hat, x0, y, cond_lr, g)
            ctx.update("fake", loss)
            logs.update(parts)
        self.fake.requires_grad_(False)  # the generator update must not train f_phi
        x_t, t = self.generator_input(x0, y, g)
        x0_hat = self.generate(x_t, t, cond)
        losses = {"distill": self.distillation_loss(x0_hat, y, cond_lr, g)}
        if cfg.lpips_weight:
            sr = (teacher.codec.decode(x0_hat) + 1) / 2
            losses["lpips"] = cfg.lpips_weight * self.lpips.to(hr.device)(sr.clamp(0, 1), hr).mean()
        if cfg.gan_weight:
            losses["gan"] = cfg.gan_weight * self.gan_loss(x0_hat, y, cond_lr, g)
        loss = sum(losses.values())
        ctx.update("generator", loss)
        self.fake.requires_grad_(True)
        return {"loss": loss.detach(), **{k: v.detach() for k, v in losses.items()}, **logs}

    def sr_model(self, backbone=None) -> SRModel:
        return SRModel(backbone or self.generator, self.teacher.codec, self.schedule, scale=self.scale, method="rsd",
                       steps=1, max_steps=1, sampler="deterministic", sigma_data=self.teacher.sigma_data,
                       lr_multiple=self.teacher.lr_multiple)
