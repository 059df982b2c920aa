"""An SR model on disk and in memory: a codec, a backbone and the ResShift schedule, with how to run them.

On disk a model is a folder, laid out like a diffusers pipeline:

    MODEL/model_index.json        {"method": "sinsr", "scale": 4, "steps": 1, "schedule": {...}, ...}
    MODEL/backbone/config.json    + diffusion_pytorch_model.safetensors
    MODEL/codec/config.json       (+ weights when the codec has any)

`SRModel.restore(lq)` is the whole inference of one batch: bicubic-upsample, encode, sample in `steps`
network passes, decode. Tiling, batching and file handling live in `instantsr.pipeline`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .codecs import CODECS
from .diffusion.resshift import ResShiftDenoiser, ResShiftSchedule, sample_deterministic, sample_resshift
from .nets.unet import ConditionalUNet

BACKBONES: dict[str, type[nn.Module]] = {"ConditionalUNet": ConditionalUNet}
SAMPLERS = {"deterministic": sample_deterministic, "stochastic": sample_resshift}  # SinSR's ODE, ResShift's own


class ModelFolderError(ValueError):
    """A model folder that is missing, incomplete or of the wrong shape."""


def bicubic_upsample(lq: torch.Tensor, scale: int) -> torch.Tensor:
    """The y of ResShift: the LR image bicubic-upsampled to the HR size (torch bicubic, as ResShift does)."""
    return F.interpolate(lq, scale_factor=scale, mode="bicubic", align_corners=False)


def encode_condition(codec: nn.Module, lq: torch.Tensor, scale: int, noise_channels: int = 0,
                     generator: torch.Generator | None = None, encode=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, cond) for LR images in [0, 1]: the latent of the bicubic-upsampled LR, and the LR in [-1, 1]
    (followed by `noise_channels` of standard noise: the eps input of RSD's generator).

    `encode` replaces `codec.encode` (the pipeline passes a tiled one for large images)."""
    lq = lq * 2 - 1
    y = (encode or codec.encode)(bicubic_upsample(lq, scale))
    if noise_channels:
        eps = torch.randn((lq.shape[0], noise_channels, *lq.shape[-2:]), generator=generator, device=lq.device,
                          dtype=lq.dtype)
        lq = torch.cat([lq, eps], 1)
    return y, lq


def _load_component(cls, folder: Path) -> nn.Module:
    """A diffusers ModelMixin folder; parameter-free ones (pixel-unshuffle) have only a config.json."""
    if not any(folder.glob("*.safetensors")):
        return cls.from_config(cls.load_config(folder))
    return cls.from_pretrained(folder, local_files_only=True)


class SRModel(nn.Module):
    """codec + backbone + schedule. `restore` maps LR images in [0, 1] to SR images in [0, 1]."""

    def __init__(self, backbone: nn.Module, codec: nn.Module, schedule: ResShiftSchedule, scale: int = 4,
                 method: str = "resshift", steps: int = 15, sampler: str = "deterministic",
                 sigma_data: float | None = None, extra: dict | None = None):
        super().__init__()
        self.backbone, self.codec, self.schedule = backbone, codec, schedule
        self.scale, self.method, self.steps, self.sampler = scale, method, steps, sampler
        self.extra = dict(extra or {})  # method-specific facts kept in model_index.json (e.g. RSD noise input)
        self.sigma_data = sigma_data  # None: the backbone predicts x0 (paper); else EDM skip preconditioning
        self.denoiser = ResShiftDenoiser(backbone, schedule, sigma_data)

    @property
    def multiple(self) -> int:
        """LR sizes must be a multiple of this (the backbone's downsampling at latent resolution)."""
        m = getattr(self.backbone, "multiple", 1) * self.codec.scale_factor
        return max(1, m // self.scale)

    @property
    def noise_channels(self) -> int:
        """Extra noise inputs of the backbone (RSD's generator has one; teachers and SinSR none)."""
        return getattr(self.backbone.config, "extra_channels", 0) if hasattr(self.backbone, "config") else 0

    def condition(self, lq: torch.Tensor, generator: torch.Generator | None = None, encode=None):
        """(y, cond) of an LR batch in [0, 1]; see `encode_condition`."""
        return encode_condition(self.codec, lq, self.scale, self.noise_channels, generator, encode)

    @torch.no_grad()
    def sample(self, y: torch.Tensor, cond: torch.Tensor, steps: int | None = None, sampler: str | None = None,
               generator: torch.Generator | None = None, noise: torch.Tensor | None = None, denoiser=None):
        """x0 from the prior around y in `steps` network passes; `denoiser` replaces the model's own (the
        pipeline passes a tiled one)."""
        return SAMPLERS[sampler or self.sampler](denoiser or self.denoiser, y, self.schedule, noise=noise,
                                                 generator=generator, steps=steps or self.steps, cond=(cond, y))

    @torch.no_grad()
    def restore(self, lq: torch.Tensor, steps: int | None = None, sampler: str | None = None,
                generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """LR batch (N,3,h,w) in [0, 1] -> SR batch (N,3,h*scale,w*scale) in [0, 1]."""
        y, cond = self.condition(lq, generator)
        x0 = self.sample(y, cond, steps, sampler, generator, noise)
        return ((self.codec.decode(x0) + 1) / 2).clamp_(0, 1)

    # ---- folder I/O -----------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(folder / "backbone")
        self.codec.save_pretrained(folder / "codec")
        index = {
            "_class_name": "instantsr.SRModel",
            "method": self.method,
            "scale": self.scale,
            "steps": self.steps,
            "sampler": self.sampler,
            "sigma_data": self.sigma_data,
            "schedule": {k: v for k, v in asdict(self.schedule).items() if k != "timesteps"},
            "backbone": type(self.backbone).__name__,
            "codec": type(self.codec).__name__,
            **({"extra": self.extra} if self.extra else {}),
        }
        (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "SRModel":
        folder = Path(folder)
        index_file = folder / "model_index.json"
        if not index_file.is_file():
            raise ModelFolderError(f"{folder}: not an instantsr model folder (no model_index.json); "
                                   "pass the folder written by `instantsr train ... --out RUN` (RUN/model)")
        index = json.loads(index_file.read_text())
        try:
            backbone_cls, codec_cls = BACKBONES[index["backbone"]], CODECS[index["codec"]]
        except KeyError as e:
            raise ModelFolderError(f"{folder}: unknown component {e} in model_index.json") from None
        try:
            backbone = _load_component(backbone_cls, folder / "backbone")
            codec = _load_component(codec_cls, folder / "codec")
        except (OSError, ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelFolderError(f"{folder}: cannot load the model ({first})") from None
        model = cls(backbone, codec, ResShiftSchedule(**index["schedule"]), scale=index["scale"],
                    method=index["method"], steps=index["steps"], sampler=index.get("sampler", "deterministic"),
                    sigma_data=index.get("sigma_data"), extra=index.get("extra"))
        return model.to(device=device, dtype=dtype).eval()
