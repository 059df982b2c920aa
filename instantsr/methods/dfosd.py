"""DFOSD (Li et al. 2025): a distillation-free one-step diffusion SR generator, trained on real pairs with no
teacher, a noise-aware discriminator (NAD) and the edge-aware DISTS loss.

Generator (Eq. 1): the frozen prior UNet, adapted with LoRA, denoises the latent of the bicubic-upsampled LR, z_L,
as if it were the noisy latent at an intermediate timestep T_L, in one step:

    z_hat = (z_L - sqrt(1 - abar_{T_L}) eps_theta(z_L; T_L, c)) / sqrt(abar_{T_L}),    x_hat = decode(z_hat)

(a v- or x0-predicting prior gives the same z_hat through its own conversion). The exported model is the `vp_lr`
family: x_T = z_L, one DDIM step from T_L. c is the prior's condition: a learnable context in place of the text
encoder for a Stable Diffusion prior; our own priors (`instantsr train yonos`) read y = z_L concatenated instead.

A residual-shifting prior (a ResShift teacher: models/teacher, our default until issue 21) works the same way, our
extension: its denoiser reads z_L as x_{T_L} with no noise added, x0 = f_theta(z_L; T_L, lq), and the
discriminator's F(z, t) is its own forward process z + eta_t (y - z) + kappa sqrt(eta_t) eps; the export is the
`resshift_lr` family. The shipped default is such a model.

NAD (§3.2): a copy of the prior's down blocks and middle block (LoRA) and a randomly initialised MLP head (1x1
convolutions: a realism logit per position of the middle block's map), fed F(z, t) = sqrt(abar_t) z +
sqrt(1 - abar_t) eps at a random t: real = z_H, the HR latent; fake = z_hat. L_D and L_G are Eq. 3 and Eq. 2
(the non-saturating logistic losses). Ablations: `discriminator = "vanilla"` is the same network on clean
latents (t = 0, no noise), `"none"` trains without one.

Generator loss (Eq. 8): MSE(x_hat, x_H) + lambda2 perceptual(x_hat, x_H) + lambda1 L_G, with the perceptual term
EA-DISTS (Eq. 5), DISTS, LPIPS or none (`perceptual = "mse"`). Two optional terms are ours, off by default (the
paper has neither): `color_weight` ChromaLoss(x_hat, x_H), the low-passed chroma against HR, and `grid_weight`
artifacts.grid_excess(x_hat) with `grid_ratio_weight` artifacts.grid_ratio_excess(x_hat), the pattern of the
latent's stride (its power, and its ratio per block). The GAN and edge terms reward high-frequency
energy; on a pixel-unshuffle latent they grew a 4-px grid and a colour cast (docs/decoder.md). Only LoRA weights (and the learnable context)
train; the prior, the codec and everything else stay frozen.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..artifacts import grid_excess, grid_ratio_excess
from ..diffusion import resshift, vp
from ..diffusion.family import FAMILIES, Condition
from ..diffusion.resshift import ResShiftSchedule
from ..diffusion.vp import VPSchedule
from ..losses import ChromaLoss, discriminator_loss, judged_generator_loss
from ..model import SRModel, encode_condition

DISCRIMINATORS = ("nad", "vanilla", "none")
PERCEPTUAL = ("ea-dists", "dists", "lpips", "mse")


@dataclass
class DFOSDConfig:
    prior: str = ""  # a VP or ResShift model folder of ours, or a local diffusers Stable Diffusion folder
    t_l: int = 0  # T_L, the prior's timestep that z_L is denoised from; required (the paper gives none for SD;
    #               configs/dfosd/pick_t_l.py measures one for a prior on degraded training crops)
    scale: int = 4  # for a Stable Diffusion prior (ours carry their own scale)
    lora_rank: int = 16  # LoRA rank of the generator and the discriminator (paper: 16)
    lora_alpha: float = 16.0  # LoRA scaling alpha (paper: 16)
    discriminator: str = "nad"  # nad (noise-aware) | vanilla (clean latents) | none
    perceptual: str = "ea-dists"  # ea-dists | dists | lpips | mse (no perceptual term)
    perceptual_weight: float = 1.0  # lambda2 (paper: silent)
    gan_weight: float = 0.02  # lambda1 (paper: silent)
    lpips_net: str = "vgg"  # for perceptual = "lpips"
    disc_lr_scale: float = 1.0  # discriminator lr = train.lr * this (paper: both 5e-5)
    color_weight: float = 0.0  # ours: weight of ChromaLoss(x_hat, x_H) in [-1, 1] units, chroma after a 2*scale low-pass (0 = off)
    grid_weight: float = 0.0  # ours: weight of artifacts.grid_excess(x_hat) in [-1, 1] units (0 = off)
    grid_ratio_weight: float = 0.0  # ours: weight of artifacts.grid_ratio_excess(x_hat): the grid per block, flat
    #                                 blocks counted as much as textured ones, as the `grid` measure does (0 = off)

    def __post_init__(self):
        if self.discriminator not in DISCRIMINATORS:
            raise ValueError(f"dfosd discriminator = {self.discriminator!r}: choose from {', '.join(DISCRIMINATORS)}")
        if self.perceptual not in PERCEPTUAL:
            raise ValueError(f"dfosd perceptual = {self.perceptual!r}: choose from {', '.join(PERCEPTUAL)}")


def load_prior(config: DFOSDConfig) -> SRModel:
    """The prior as a frozen SRModel: a VP model folder of ours, or a diffusers SD folder (unet/, vae/,
    scheduler/) whose UNet gets a learnable context and whose VAE becomes the codec."""
    folder = Path(config.prior)
    if not config.prior:
        raise ValueError("dfosd needs a prior: --prior DIR (a VP model folder of `instantsr train yonos`, a ResShift "
                         "teacher such as models/teacher, or a local diffusers Stable Diffusion folder)")
    if (folder / "unet").is_dir() and (folder / "vae").is_dir():
        from diffusers import AutoencoderKL

        from ..codecs import KLCodec
        from ..nets.sd_unet import SDConditionalUNet

        vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True)
        codec = KLCodec.from_vae(vae)
        backbone = SDConditionalUNet.from_sd_folder(folder, codec.latent_channels)
        sched = {}
        if (folder / "scheduler" / "scheduler_config.json").is_file():
            sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        schedule = VPSchedule(T=sched.get("num_train_timesteps", 1000),
                              beta_schedule=sched.get("beta_schedule", "scaled_linear"),
                              beta_start=sched.get("beta_start", 0.00085), beta_end=sched.get("beta_end", 0.012))
        parameterization = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}[sched.get("prediction_type",
                                                                                             "epsilon")]
        prior = SRModel(backbone, codec, schedule, scale=config.scale, method="sd", family="vp",
                        parameterization=parameterization, steps=1, sampler="ddim")
    else:
        prior = SRModel.from_pretrained(folder)
        if prior.family not in ("vp", "vp_lr", "resshift", "resshift_lr") or prior.noise_channels:
            raise ValueError(f"{folder}: a {prior.method} model; a DFOSD prior is a diffusion model that denoises "
                             "(`instantsr train yonos`, a ResShift teacher, or a diffusers Stable Diffusion folder)")
    return prior.requires_grad_(False).eval()


def lora_targets(net: nn.Module) -> list[str]:
    """Every convolution and linear layer of `net`: where LoRA goes (the UNet's resnets, attention, time
    embedding, input and output convolutions)."""
    return sorted({name for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and name})


def add_lora(net: nn.Module, rank: int, alpha: float) -> nn.Module:
    """`net` frozen with peft LoRA adapters (B zero-initialised: it starts as `net`) on `lora_targets`."""
    from peft import LoraConfig, inject_adapter_in_model

    net.requires_grad_(False)
    targets = lora_targets(net)
    net = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets), net)
    for name, p in net.named_parameters():
        p.requires_grad_("lora_" in name)
    return net


class NoiseAwareDiscriminator(nn.Module):
    """The prior's down blocks + middle block (`encoder_features` of its backbone, with LoRA) and an MLP head:
    a realism logit per position of the middle block's map."""

    def __init__(self, backbone: nn.Module, rank: int, alpha: float, schedule: ResShiftSchedule | None = None):
        # schedule: a ResShift prior's; its input is then scaled as that prior's denoiser scales it, and it reads
        # the LR image, as that prior does (a VP prior reads Condition(lq, y) whole)
        super().__init__()
        self.schedule = schedule
        encoder = copy.deepcopy(backbone)
        unet = encoder.unet
        unet.up_blocks = nn.ModuleList()  # the decoder half is not part of the discriminator
        unet.conv_norm_out = unet.conv_act = unet.conv_out = None
        channels = unet.mid_block.resnets[-1].conv2.out_channels  # the deepest width, for either UNet
        self.encoder = add_lora(encoder, rank, alpha)
        self.head = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.SiLU(), nn.Conv2d(channels, 1, 1))

    def forward(self, z_t: torch.Tensor, t_index: torch.Tensor, cond) -> torch.Tensor:
        if self.schedule is not None:
            z_t, cond = resshift.scale_input(z_t, t_index, self.schedule), cond.lq
        return self.head(self.encoder.encoder_features(z_t, t_index, cond))


class DFOSDRecipe:
    """Trains a DFOSD one-step generator (LoRA on a frozen diffusion prior) against a noise-aware discriminator."""

    ema_network = "generator"

    def __init__(self, config: DFOSDConfig, prior: SRModel | None = None, perceptual: nn.Module | None = None):
        # prior: as load_prior(config) gives it; its backbone becomes the generator (LoRA injected in place, so an
        # SD-sized UNet is not held twice)
        self.method_config = config
        prior = prior or load_prior(config)
        self.codec, self.scale, self.lr_multiple = prior.codec, prior.scale, prior.lr_multiple
        self.residual_shift = prior.family.startswith("resshift")
        self.family = "resshift_lr" if self.residual_shift else "vp_lr"
        T, lowest = prior.schedule.T, 0 if self.residual_shift else 1  # VP index 0 is x0 itself: no denoising
        if not lowest <= config.t_l < T:
            raise ValueError(f"dfosd t_l = {config.t_l}: give T_L in [{lowest}, {T - 1}] (the prior's timestep that "
                             "z_L is denoised from; configs/dfosd/pick_t_l.py measures a good one)")
        self.schedule = dataclasses.replace(prior.schedule, start=config.t_l, timesteps=None)
        self.parameterization, self.sigma_data = prior.parameterization, prior.sigma_data
        self.lr_scales = (self.scale,)  # lr is then {scale: LR}, at the prior's scale
        self.discriminator = (NoiseAwareDiscriminator(prior.backbone, config.lora_rank, config.lora_alpha,
                                                      self.schedule if self.residual_shift else None)
                              if config.discriminator != "none" else None)  # its own copy, before the LoRA below
        self.generator = add_lora(prior.backbone, config.lora_rank, config.lora_alpha)
        if hasattr(self.generator, "context"):  # an SD prior: the learnable condition embedding trains too
            self.generator.context.requires_grad_(True)
        if config.perceptual == "mse":
            perceptual = None
        elif perceptual is None:
            perceptual = _perceptual_loss(config)
        self.perceptual = perceptual
        self.chroma = ChromaLoss(2 * self.scale)  # pooled as the colour measure pools: 2 x scale
        self._train = self.networks()

    def networks(self) -> dict:
        nets = {"generator": self.generator}
        if self.discriminator is not None:
            nets["discriminator"] = self.discriminator
        return nets

    def learning_rate_scales(self) -> dict:
        return {"discriminator": self.method_config.disc_lr_scale}

    def bind(self, wrapped: dict) -> None:
        self._train = wrapped

    # ---- pieces, each tested on its own ----------------------------------------------------------------
    def generate(self, cond) -> torch.Tensor:
        """z_hat of Eq. 1: the generator's x0 from z_L = y at T_L."""
        t = torch.full((cond.y.shape[0],), self.method_config.t_l, dtype=torch.long, device=cond.y.device)
        denoiser = FAMILIES[self.family].denoiser(self._train["generator"], self.schedule, self.parameterization,
                                                  self.sigma_data)
        return denoiser(cond.y, t, cond)

    def judge_input(self, z: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None, t_index=None,
                    noise=None):
        """(F(z, t), t) at a random t in [0, T) (Eq. 4) for NAD; (z, 0) for the vanilla discriminator. F is the
        prior's forward process: VP's, or ResShift's towards y."""
        n = z.shape[0]
        if self.method_config.discriminator == "vanilla":
            return z, torch.zeros(n, dtype=torch.long, device=z.device)
        if t_index is None:
            t_index = torch.randint(0, self.schedule.T, (n,), generator=generator, device=z.device)
        if noise is None:
            noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        if self.residual_shift:
            return resshift.q_sample(z, y, t_index, noise, self.schedule), t_index
        return vp.q_sample(z, t_index, noise, self.schedule), t_index

    # ---- one training step -------------------------------------------------------------------------------
    def training_step(self, hr: torch.Tensor, lr, ctx) -> dict:
        cfg, g = self.method_config, ctx.generator
        self.codec.to(hr.device)
        with torch.no_grad():
            z_hr = self.codec.encode(hr * 2 - 1)
            cond = encode_condition(self.codec, lr[self.scale], self.scale)
        z_hat = self.generate(cond)
        sr = self.codec.decode(z_hat)  # [-1, 1]; gradients pass through a KL codec's frozen decoder
        losses = {"mse": F.mse_loss(sr, hr * 2 - 1)}
        if self.perceptual is not None:
            losses[cfg.perceptual] = cfg.perceptual_weight * self.perceptual.to(hr.device)(
                ((sr + 1) / 2).clamp(0, 1), hr).mean()
        if cfg.color_weight:
            losses["color"] = cfg.color_weight * self.chroma(sr, hr * 2 - 1).mean()
        if cfg.grid_weight:
            losses["grid"] = cfg.grid_weight * grid_excess(sr, self.codec.scale_factor).mean()
        if cfg.grid_ratio_weight:
            losses["grid_ratio"] = cfg.grid_ratio_weight * grid_ratio_excess((sr + 1) / 2,
                                                                             self.codec.scale_factor).mean()
        if self.discriminator is not None:
            z_t, t = self.judge_input(z_hat, cond.y, g)
            losses["gan"] = cfg.gan_weight * judged_generator_loss(self._train["discriminator"], z_t,
                                                                   "nonsaturating", t, cond)  # Eq. 2
        loss = sum(losses.values())
        ctx.update("generator", loss)
        logs = {"loss": loss.detach(), **{k: v.detach() for k, v in losses.items()}}
        if self.discriminator is not None:  # Eq. 3: real = HR latents, fake = the generator's, both at (t, eps)
            t = torch.randint(0, self.schedule.T, (z_hr.shape[0],), generator=g, device=hr.device)
            noise = torch.randn(z_hr.shape, generator=g, device=hr.device, dtype=z_hr.dtype)
            real_in, t_in = self.judge_input(z_hr, cond.y, g, t, noise)
            fake_in, _ = self.judge_input(z_hat.detach(), cond.y, g, t, noise)
            both = Condition(cond.lq.repeat(2, 1, 1, 1), cond.y.repeat(2, 1, 1, 1))
            real, fake = self._train["discriminator"](torch.cat([real_in, fake_in]), torch.cat([t_in, t_in]),
                                                      both).chunk(2)
            disc = discriminator_loss(real, fake, "nonsaturating", weight=1.0)
            ctx.update("discriminator", disc)
            logs["disc"] = disc.detach()
        return logs

    def sr_model(self, generator: nn.Module | None = None) -> SRModel:
        """The one-step model: the (EMA) generator on the `vp_lr` (`resshift_lr`) family, x_T = z_L, one step from
        T_L. The Trainer merges the LoRA into the weights before it exports."""
        return SRModel(generator or self.generator, self.codec, self.schedule, scale=self.scale, method="dfosd",
                       family=self.family, parameterization=self.parameterization, sigma_data=self.sigma_data,
                       steps=1, max_steps=1, lr_multiple=self.lr_multiple)


def _perceptual_loss(config: DFOSDConfig) -> nn.Module:
    """The perceptual term's network (frozen; images in [0, 1], one value per image)."""
    from ..losses import EADISTS
    from ..metrics import DISTS, LPIPS  # WeightsNotFoundError says to run `instantsr weights fetch`

    if config.perceptual == "lpips":
        return LPIPS(config.lpips_net)
    return EADISTS() if config.perceptual == "ea-dists" else DISTS()
