"""Decoder fine-tuning of a finished one-step model (YONOS-SR §3.3, for any family and codec).

The model's network and encoder are frozen; its own sampler makes the latent of each LR crop as inference does
(seeded noise for the families that draw it), and only the decoder learns, so that the decoded latent matches
the HR crop: L1 + LPIPS, the autoencoder's loss, with the paper's optional GAN term and (our addition) penalties
on the grid of the latent's stride: its power (`grid_weight`) and its ratio per block (`grid_ratio_weight`). The exported model is the same model with the tuned decoder.

- A KL codec (YONOS-SR, `train autoencoder`, a Stable Diffusion VAE): its `vae.decoder` is tuned.
- The pixel-unshuffle codec has no decoder: one is added (`PixelUnshuffleCodec(decoder_channels=...)`,
  pixel-shuffle then a small network at the output resolution that starts as the identity), so the first step
  starts from the model as it was. This is what removes the period-`factor` grid of pixel-shuffle.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..artifacts import grid_excess, grid_ratio_excess
from ..codecs import KLCodec, PixelUnshuffleCodec
from ..losses import discriminator_loss, judged_generator_loss
from ..model import SRModel
from ..nets.discriminators import PatchDiscriminator


@dataclass
class DecoderConfig:
    model: str = ""  # the one-step model to finish: a model or run folder (any family; a KL or pixel codec)
    steps: int = 0  # sampling steps that make the latents the decoder learns to decode; 0 = the model's own
    target: str = "hr"  # what L1 and LPIPS compare the decoded image with: hr (YONOS-SR's: the HR crop) or model
    #                     (ours, pixel-unshuffle only: the model's own pixel-shuffled output, so that the grid terms
    #                     take out the grid and nothing else moves: no smoothing toward HR, no colour learnt)
    lpips_weight: float = 1.0  # L1 + lpips_weight LPIPS(decoded, target), the autoencoder's loss
    lpips_net: str = "vgg"  # LPIPS backbone: vgg | alex (the metric's; AlexNet as a loss drew a mesh before)
    grid_weight: float = 0.0  # weight of the decoded image's grid, its pattern of the latent's stride beyond what
    #                           texture gives (artifacts.grid_excess); L1 + LPIPS alone barely lower it
    grid_ratio_weight: float = 0.0  # weight of artifacts.grid_ratio_excess: the grid's ratio above 1 per block, every
    #                                 block alike (grid_excess weighs by power, so textured blocks dominate it)
    gan_weight: float = 0.0  # PatchGAN generator-loss weight (the paper's optional GAN term); 0 = no discriminator
    gan_start: int = 0  # step from which the GAN terms are on (a decoder that already decodes well needs no wait)
    gan_loss: str = "hinge"  # hinge (LDM) | nonsaturating
    disc_channels: int = 64  # PatchGAN base width (pix2pix / LDM: 64)
    disc_layers: int = 3  # PatchGAN stride-2 layers (3: 70x70 patches)
    decoder_channels: int = 16  # pixel-unshuffle codec: width of the decoder added to it (16: at most 1.2x the
    #                             CPU time of the model without it; docs/bench/decoder/speed)
    decoder_layers: int = 3  # its 3x3 convolutions (3: a 7x7 receptive field, more than one 4-px grid period)

    def __post_init__(self):
        if self.gan_loss not in ("hinge", "nonsaturating"):
            raise ValueError(f"decoder gan_loss = {self.gan_loss!r}: choose hinge or nonsaturating")
        if self.target not in ("hr", "model"):
            raise ValueError(f"decoder target = {self.target!r}: choose hr or model")


def trainable_decoder(model: SRModel, config: DecoderConfig) -> nn.Module:
    """The part of `model.codec` that decoder fine-tuning trains, adding a learned decoder to a plain
    pixel-unshuffle codec (the rest of the model is frozen by the caller)."""
    codec = model.codec
    if isinstance(codec, PixelUnshuffleCodec):
        if codec.refiner is None:
            cfg = codec.config
            model.codec = codec = PixelUnshuffleCodec(cfg.factor, cfg.image_channels, config.decoder_channels,
                                                      config.decoder_layers)
        return codec.refiner
    if isinstance(codec, KLCodec):
        return codec.vae.decoder
    raise ValueError(f"{config.model}: a {type(codec).__name__} codec; decoder fine-tuning takes a pixel-unshuffle "
                     "or a KL codec (the official VQ-f4 decoder is kept as released)")


class DecoderRecipe:
    """Freezes a one-step model's network and encoder and fine-tunes its decoder on its own latents (see the
    module docstring). With `gan_weight` a PatchGAN judges the decoded images against the HR crops."""

    ema_network = "decoder"

    def __init__(self, config: DecoderConfig, lpips: nn.Module | None = None):
        if not config.model:
            raise ValueError("decoder fine-tuning needs the model to finish: --model RUN_DIR (a model or run folder)")
        self.method_config = config
        self.model = SRModel.from_pretrained(config.model).eval()
        self.steps = self.model.check_steps(config.steps or None)
        self.model.requires_grad_(False)
        if config.target == "model" and not isinstance(self.model.codec, PixelUnshuffleCodec):
            raise ValueError(f"{config.model}: decoder target = model needs a pixel-unshuffle codec (its own output "
                             "is pixel_shuffle of the latent); give target = hr")
        self.decoder = trainable_decoder(self.model, config).requires_grad_(True).train()
        self.lr_scales = (self.model.scale,)  # lr is then {scale: LR}, at the model's own scale whatever [train]
        if lpips is None and config.lpips_weight:
            from ..metrics import LPIPS

            lpips = LPIPS(config.lpips_net)  # WeightsNotFoundError says to run `instantsr weights fetch`
        self.lpips = lpips
        self.discriminator = (PatchDiscriminator(config.disc_channels, config.disc_layers)
                              if config.gan_weight else None)
        self._train = self.networks()

    def networks(self) -> dict:
        nets = {"decoder": self.decoder}
        if self.discriminator is not None:
            nets["discriminator"] = self.discriminator
        return nets

    def bind(self, wrapped: dict) -> None:
        self._train = wrapped

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """codec.decode with the (possibly DDP-wrapped) trainable decoder."""
        codec, decoder = self.model.codec, self._train["decoder"]
        if isinstance(codec, PixelUnshuffleCodec):
            x = torch.nn.functional.pixel_shuffle(z, codec.config.factor)
            return x + decoder(x)
        vae = codec.vae
        return decoder(vae.post_quant_conv(z / vae.config.scaling_factor))  # AutoencoderKL.decode's path

    def training_step(self, hr: torch.Tensor, lr, ctx) -> dict:
        model, cfg = self.model.to(hr.device), self.method_config
        with torch.no_grad():  # the frozen model's latent, as inference makes it
            cond = model.condition(lr[model.scale], ctx.generator)
            noise = torch.randn(cond.y.shape, generator=ctx.generator, device=hr.device, dtype=cond.y.dtype)
            z = model.sample(model.prior(cond, noise), cond, self.steps, generator=ctx.generator)
        out = self._decode(z)
        x = hr * 2 - 1
        ref = torch.nn.functional.pixel_shuffle(z, self.model.codec.config.factor) if cfg.target == "model" else x
        losses = {"l1": (out - ref).abs().mean()}
        if cfg.lpips_weight:
            losses["lpips"] = cfg.lpips_weight * self.lpips.to(hr.device)(((out + 1) / 2).clamp(0, 1),
                                                                          ((ref + 1) / 2).clamp(0, 1)).mean()
        if cfg.grid_weight:
            losses["grid"] = cfg.grid_weight * grid_excess(out, self.model.codec.scale_factor).mean()
        if cfg.grid_ratio_weight:
            losses["grid_ratio"] = cfg.grid_ratio_weight * grid_ratio_excess((out + 1) / 2,
                                                                             self.model.codec.scale_factor).mean()
        gan_on = self.discriminator is not None and ctx.step >= cfg.gan_start
        if gan_on:
            losses["gan"] = cfg.gan_weight * judged_generator_loss(self._train["discriminator"], out, cfg.gan_loss)
        elif self.discriminator is not None:
            losses["gan"] = torch.zeros((), device=hr.device)  # the same log columns before and after gan_start
        loss = sum(losses.values())
        ctx.update("decoder", loss)
        logs = {"loss": loss.detach(), **{k: v.detach() for k, v in losses.items()}}
        if self.discriminator is not None:
            disc_loss = torch.zeros((), device=hr.device)
            if gan_on:
                real, fake = self._train["discriminator"](torch.cat([x, out.detach()])).chunk(2)
                disc_loss = discriminator_loss(real, fake, cfg.gan_loss)
                ctx.update("discriminator", disc_loss)
            logs["disc"] = disc_loss.detach()
        return logs

    def sr_model(self, decoder: nn.Module | None = None) -> SRModel:
        """The model with the tuned decoder (the Trainer hands back the decoder with EMA weights)."""
        if decoder is not None and decoder is not self.decoder:
            self.decoder.load_state_dict(decoder.state_dict())
        return self.model
