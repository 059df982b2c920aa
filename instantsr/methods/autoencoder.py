"""A KL autoencoder (diffusers `AutoencoderKL`, wrapped as `KLCodec`) trained here, as LDM trains its first stage.

Loss per step, on HR crops x in [-1, 1] and their reconstruction x' = D(z), z ~ q(z | x):
    |x - x'|  +  lpips_weight LPIPS(x, x')  +  kl_weight KL(q(z | x) || N(0, I))
    (+ gan_weight G(D_patch(x')) from step `gan_start` on, with the PatchGAN D_patch trained alongside)
The L1 is a mean over pixel values and the KL a sum over the latent divided by the number of pixel values: the
same ratio of terms as LDM's summed losses, so LDM's kl_weight = 1e-6 means the same here. Unlike LDM the GAN
weight is fixed (no adaptive weight from the decoder's last-layer gradients).

The exported model, RUN/model, is a `KLCodec` folder (config.json + safetensors) holding the EMA weights: the
codec of a teacher with `[resshift] codec = "RUN/model"`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..codecs import KLCodec
from ..losses import discriminator_loss, judged_generator_loss
from ..nets.discriminators import PatchDiscriminator

# width preset -> (channels per level for up to 4 levels, res blocks per level, GroupNorm groups)
WIDTHS = {
    "tiny": ((16, 32, 32, 32), 1, 8),  # for tests
    "compact": ((32, 64, 64, 128), 1, 16),  # what 2 CPU cores train in 20 minutes (the YONOS-SR runs)
    "small": ((64, 128, 128, 256), 1, 32),
    "base": ((128, 256, 512, 512), 2, 32),  # LDM's KL-f4 / ResShift's VQ-f4: ch 128, ch_mult (1, 2, 4), 2 blocks
}


@dataclass
class AutoencoderConfig:
    latent_channels: int = 3  # latent channels (3 as LDM's KL-f4 and ResShift's VQ-f4; SD's f8 VAE has 4)
    down: int = 4  # spatial downsampling factor f: 2, 4 (ResShift's f4: 3 levels) or 8 (4 levels, as SD)
    width: str = "base"  # channel preset: tiny (tests) | compact | small | base (LDM f4: 128-256-512, 2 blocks)
    scaling_factor: float = 1.0  # KLCodec.encode multiplies latents by this (f4 models: 1; val.csv's latent_std
    #                              says what gives unit variance, SD-style, and configs/yonos/latent_scale.py
    #                              sets it after training)
    lpips_weight: float = 1.0  # weight of LPIPS(x, x') (LDM's perceptual_weight); 0 = L1 + KL only
    lpips_net: str = "vgg"  # LPIPS backbone: vgg (as LDM) | alex (cheaper)
    kl_weight: float = 1e-6  # weight of KL(q(z|x) || N(0, I)) (LDM: 1e-6; larger = smoother, less detailed latents)
    gan_weight: float = 0.0  # PatchGAN generator-loss weight; 0 = no discriminator at all (default). Try 0.1
    gan_start: int = 50001  # step from which the GAN terms are on (LDM: 50001); the discriminator waits till then
    gan_loss: str = "hinge"  # hinge (LDM) | nonsaturating
    disc_channels: int = 64  # PatchGAN base width (pix2pix / LDM NLayerDiscriminator: 64)
    disc_layers: int = 3  # PatchGAN stride-2 layers (3: 70x70 patches)

    def __post_init__(self):
        choices = {"width": tuple(WIDTHS), "down": (2, 4, 8), "lpips_net": ("vgg", "alex"),
                   "gan_loss": ("hinge", "nonsaturating")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"autoencoder {name} = {getattr(self, name)!r}: choose one of "
                                 + ", ".join(map(str, allowed)))


def build_autoencoder(config: AutoencoderConfig) -> KLCodec:
    """The untrained KLCodec of a config: `down` = 2^(levels - 1), widths from the preset."""
    widths, blocks, groups = WIDTHS[config.width]
    return KLCodec(block_out_channels=widths[: config.down.bit_length()], latent_channels=config.latent_channels,
                   layers_per_block=blocks, norm_num_groups=groups, scaling_factor=config.scaling_factor)


class AutoencoderRecipe:
    """Trains a KL autoencoder on HR crops (the LR half of each batch is unused)."""

    ema_network = "autoencoder"
    uses_lr = False

    def __init__(self, config: AutoencoderConfig, lpips: nn.Module | None = None):
        self.method_config = config
        self.autoencoder = build_autoencoder(config)
        self.discriminator = (PatchDiscriminator(config.disc_channels, config.disc_layers)
                              if config.gan_weight else None)
        if lpips is None and config.lpips_weight:
            from ..metrics import LPIPS

            lpips = LPIPS(config.lpips_net)  # WeightsNotFoundError says to run `instantsr weights fetch`
        self.lpips = lpips
        self._train = self.networks()

    def networks(self) -> dict:
        nets = {"autoencoder": self.autoencoder}
        if self.discriminator is not None:
            nets["discriminator"] = self.discriminator
        return nets

    def bind(self, wrapped: dict) -> None:
        self._train = wrapped

    def training_step(self, hr: torch.Tensor, lr: torch.Tensor, ctx) -> dict:
        cfg = self.method_config
        if hr.shape[-2] % cfg.down or hr.shape[-1] % cfg.down:
            raise ValueError(f"autoencoder: the crop ({hr.shape[-1]} px) must be a multiple of down = {cfg.down}")
        x = hr * 2 - 1
        rec, kl, z = self._train["autoencoder"](x, sample=True, generator=ctx.generator)
        losses = {"l1": (rec - x).abs().mean()}
        if cfg.lpips_weight:
            losses["lpips"] = cfg.lpips_weight * self.lpips.to(hr.device)((rec + 1) / 2, hr).mean()
        losses["kl"] = cfg.kl_weight * kl.mean() / x[0].numel()
        gan_on = self.discriminator is not None and ctx.step >= cfg.gan_start
        if gan_on:
            losses["gan"] = cfg.gan_weight * judged_generator_loss(self._train["discriminator"], rec, cfg.gan_loss)
        elif self.discriminator is not None:
            losses["gan"] = torch.zeros((), device=hr.device)  # same log columns before and after gan_start
        loss = sum(losses.values())
        ctx.update("autoencoder", loss)
        logs = {"loss": loss.detach(), **{k: v.detach() for k, v in losses.items()}}
        if self.discriminator is not None:
            disc = torch.zeros((), device=hr.device)
            if gan_on:
                # One pass over real and reconstructed (GroupNorm: no mixing between images), one DDP forward.
                real, fake = self._train["discriminator"](torch.cat([x, rec.detach()])).chunk(2)
                disc = discriminator_loss(real, fake, cfg.gan_loss)
                ctx.update("discriminator", disc)
            logs["disc"] = disc.detach()
        logs["latent_std"] = z.detach().float().std() * cfg.scaling_factor
        return logs

    def inference_model(self, net: KLCodec | None = None) -> KLCodec:
        """What RUN/model holds: the autoencoder itself (the Trainer passes it with EMA weights)."""
        return net if net is not None else self.autoencoder

    @torch.no_grad()
    def validate(self, model: KLCodec, cfg, lpips, device):
        """PSNR-Y (and LPIPS) of the reconstructions of the HR validation images; input | reconstruction strips."""
        from ..data import ImageFolder
        from ..metrics import psnr

        images = ImageFolder(cfg.val_hr)
        f = model.scale_factor
        rows, strips = [], []
        for i in range(min(cfg.val_images, len(images))):
            _, hr = images[i]
            hr = hr[None, :, : hr.shape[-2] // f * f, : hr.shape[-1] // f * f].to(device)
            z = model.encode(hr * 2 - 1)
            rec = ((model.decode(z) + 1) / 2).clamp(0, 1)
            row = {"psnr_y": float(psnr(rec, hr).mean())}
            if lpips is not None:
                row["lpips"] = float(lpips(rec, hr).mean())
            row["latent_std"] = float(z.float().std())  # of the scaled latents a teacher sees
            rows.append(row)
            if i < 4:
                strips.append((hr[0].cpu(), rec[0].cpu()))
        return rows, strips, ["input", "reconstruction"]
