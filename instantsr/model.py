"""An SR model on disk and in memory: a codec, a backbone and a diffusion family's schedule, with how to run them.

On disk a model is a folder, laid out like a diffusers pipeline:

    MODEL/model_index.json        {"family": "resshift", "parameterization": "x0", "method": "sinsr", "scale": 4,
                                   "steps": 1, "max_steps": 1, "sampler": "deterministic", "schedule": {...}, ...}
    MODEL/backbone/config.json    + diffusion_pytorch_model.safetensors
    MODEL/codec/config.json       (+ weights when the codec has any)

The family (`instantsr.diffusion.family.FAMILIES`) decides the schedule, the denoiser wrapper, the samplers and
the prior; nothing else in instantsr tests for a family. The pieces of one inference are `condition` (encode the
bicubic-upsampled LR), `prior` (x_T), `sample` (`steps` network passes) and `decode`; `instantsr.pipeline.Upscaler`
is the one path that runs them on images, with padding, seeded noise and tiling.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, fields
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .codecs import CODECS
from .diffusion.family import FAMILIES, Condition


# The backbones a model folder may name, each imported when a folder names it: diffusers' UNet2DConditionModel
# imports its whole model registry (seconds), which our own UNet (nets/unet2d.py) does not need.
def _conditional_unet() -> type[nn.Module]:
    from .nets.unet import ConditionalUNet

    return ConditionalUNet


def _swin_unet() -> type[nn.Module]:
    from .nets.swin_unet import ResShiftSwinUNet

    return ResShiftSwinUNet


def _sd_unet() -> type[nn.Module]:
    from .nets.sd_unet import SDConditionalUNet

    return SDConditionalUNet


BACKBONES: dict[str, Callable[[], type[nn.Module]]] = {
    "ConditionalUNet": _conditional_unet, "ResShiftSwinUNet": _swin_unet, "SDConditionalUNet": _sd_unet}


class ModelFolderError(ValueError):
    """A model folder that is missing, incomplete or of the wrong shape."""


def bicubic_upsample(lq: torch.Tensor, scale: int) -> torch.Tensor:
    """The y of ResShift: the LR image bicubic-upsampled to the HR size (torch bicubic, as ResShift does)."""
    return F.interpolate(lq, scale_factor=scale, mode="bicubic", align_corners=False)


def model_folder(path: str | Path) -> Path:
    """A model folder, given as itself or as the run folder holding it (`instantsr train --out RUN`: RUN/model)."""
    path = Path(path)
    if not (path / "model_index.json").is_file() and (path / "model" / "model_index.json").is_file():
        return path / "model"
    return path


def encode_condition(codec: nn.Module, lq: torch.Tensor, scale: int, noise_channels: int = 0,
                     generator: torch.Generator | None = None, encode=None) -> Condition:
    """Condition(lq, y) of LR images in [0, 1]: the LR in [-1, 1] (followed by `noise_channels` of standard noise:
    the eps input of RSD's generator) and y, the latent of the bicubic-upsampled LR.

    `encode` replaces `codec.encode` (the pipeline passes a tiled one for large images)."""
    lq = lq * 2 - 1
    y = (encode or codec.encode)(bicubic_upsample(lq, scale))
    if noise_channels:
        eps = torch.randn((lq.shape[0], noise_channels, *lq.shape[-2:]), generator=generator, device=lq.device,
                          dtype=lq.dtype)
        lq = torch.cat([lq, eps], 1)
    return Condition(lq, y)


def _load_component(cls, folder: Path) -> nn.Module:
    """A diffusers-layout folder (`ModelMixin` or `nets.folder.FolderModule`); parameter-free ones
    (pixel-unshuffle) have only a config.json."""
    if not any(folder.glob("*.safetensors")):
        return cls.from_config(cls.load_config(folder))
    return cls.from_pretrained(folder, local_files_only=True)


class SRModel(nn.Module):
    """codec + backbone + a diffusion family's schedule; see the module docstring."""

    def __init__(self, backbone: nn.Module, codec: nn.Module, schedule, scale: int = 4, method: str = "resshift",
                 steps: int = 15, sampler: str | None = None, family: str = "resshift",
                 parameterization: str | None = None, sigma_data: float | None = None, max_steps: int | None = None,
                 lr_multiple: int = 1, extra: dict | None = None):
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"unknown diffusion family {family!r}; choose from {', '.join(FAMILIES)}")
        fam = FAMILIES[family]
        if not isinstance(schedule, fam.schedule):
            raise ValueError(f"family {family!r} takes a {fam.schedule.__name__}, not a {type(schedule).__name__}")
        parameterization = parameterization or fam.parameterizations[0]
        if parameterization not in fam.parameterizations:
            raise ValueError(f"family {family!r} predicts {' / '.join(fam.parameterizations)}, "
                             f"not {parameterization!r}")
        self.backbone, self.codec, self.schedule = backbone, codec, schedule
        self.family, self.parameterization, self.method, self.scale = family, parameterization, method, scale
        self.sampler = sampler or next(iter(fam.samplers))
        if self.sampler not in fam.samplers:
            raise ValueError(f"unknown sampler {self.sampler!r} for family {family!r}; choose from "
                             f"{', '.join(fam.samplers)}")
        self.max_steps = max_steps or schedule.max_steps  # a distilled student: its own steps; a teacher: any
        self.steps = steps
        self.check_steps(steps)
        self.lr_multiple = lr_multiple  # LR sizes are padded to this too (official ResShift/SinSR: 64)
        self.sigma_data = sigma_data  # ResShift only; None: the backbone predicts x0 (paper); see ResShiftDenoiser
        self.extra = dict(extra or {})  # method-specific facts kept in model_index.json
        self.denoiser = fam.denoiser(backbone, schedule, parameterization, sigma_data)

    # ---- what the pipeline, bench and CLI ask ------------------------------------------------------------
    @property
    def samplers(self) -> tuple[str, ...]:
        """The sampler names of the model's family (the first is its default)."""
        return tuple(FAMILIES[self.family].samplers)

    def check_steps(self, steps: int | None) -> int:
        """`steps` (None: the model's own), or a one-line ValueError when the model cannot run that many."""
        steps = self.steps if steps is None else int(steps)
        if not 1 <= steps <= self.max_steps:
            what = "a distilled model runs at its own step count" if self.max_steps == self.steps else \
                f"its schedule allows 1 to {self.max_steps}"
            raise ValueError(f"{self.method} model: {steps} steps is not possible ({what}: --steps {self.steps})")
        return steps

    def check_sampler(self, sampler: str | None) -> str:
        """`sampler` (None: the model's own), or a one-line ValueError naming the ones its family has."""
        sampler = sampler or self.sampler
        if sampler not in self.samplers:
            raise ValueError(f"{self.method} model: no sampler {sampler!r}; a {self.family} model samples with "
                             f"{', '.join(self.samplers)}, not {sampler!r} (--sampler {self.sampler} is its own)")
        return sampler

    def num_passes(self, steps: int | None = None) -> int:
        """Network passes of one sampling run at `steps` (None: the model's own)."""
        return len(self.schedule.respaced(self.check_steps(steps)).timesteps)

    @property
    def multiple(self) -> int:
        """LR sizes must be a multiple of this: the backbone's (at latent resolution) and `lr_multiple`."""
        latent = getattr(self.backbone, "multiple", 1) * self.codec.scale_factor
        return math.lcm(max(1, latent // math.gcd(latent, self.scale)), self.lr_multiple)

    @property
    def noise_channels(self) -> int:
        """Extra noise inputs of the backbone (RSD's generator has one; teachers and SinSR none)."""
        config = getattr(self.backbone, "config", None)
        return getattr(config, "extra_channels", 0) if config is not None else 0

    # ---- the pieces of one inference ---------------------------------------------------------------------
    def condition(self, lq: torch.Tensor, generator: torch.Generator | None = None, encode=None) -> Condition:
        """Condition(lq, y) of an LR batch in [0, 1]; see `encode_condition`."""
        return encode_condition(self.codec, lq, self.scale, self.noise_channels, generator, encode)

    def prior(self, cond: Condition, noise: torch.Tensor) -> torch.Tensor:
        """x_T from standard normal `noise` shaped like y (ignored by families that start from y itself)."""
        return FAMILIES[self.family].prior(cond, noise, self.schedule)

    @torch.no_grad()
    def sample(self, x: torch.Tensor, cond: Condition, steps: int | None = None, sampler: str | None = None,
               generator: torch.Generator | None = None, denoiser=None, progress: bool = False) -> torch.Tensor:
        """x0 from x = x_T in `steps` network passes; `denoiser` replaces the model's own (the pipeline passes a
        tiled one)."""
        name = self.check_sampler(sampler)
        return FAMILIES[self.family].samplers[name](denoiser or self.denoiser, x, self.schedule, cond, steps=self.check_steps(steps),
                              generator=generator, progress=progress)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Latent -> image in [0, 1]."""
        return ((self.codec.decode(x0) + 1) / 2).clamp_(0, 1)

    # ---- folder I/O -----------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(folder / "backbone")
        self.codec.save_pretrained(folder / "codec")
        index = {
            "_class_name": "instantsr.SRModel",
            "family": self.family,
            "parameterization": self.parameterization,
            "method": self.method,
            "scale": self.scale,
            "steps": self.steps,
            "max_steps": self.max_steps,
            "sampler": self.sampler,
            "sigma_data": self.sigma_data,
            "lr_multiple": self.lr_multiple,
            "schedule": {k: v for k, v in asdict(self.schedule).items() if k != "timesteps" and v is not None},
            "backbone": type(self.backbone).__name__,
            "codec": type(self.codec).__name__,
            **({"extra": self.extra} if self.extra else {}),
        }
        (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "SRModel":
        folder = model_folder(folder)
        index_file = folder / "model_index.json"
        if not index_file.is_file():
            raise ModelFolderError(f"{folder}: not an instantsr model folder (no model_index.json); "
                                   "pass the folder written by `instantsr train ... --out RUN` (RUN or RUN/model)")
        try:
            index = json.loads(index_file.read_text())
            if not isinstance(index, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelFolderError(f"{index_file}: broken ({str(e).splitlines()[0]})") from None
        # folders written before the seam: the ResShift family; a teacher samples at any step count
        family = index.get("family", "resshift")
        if family not in FAMILIES:
            raise ModelFolderError(f"{index_file}: unknown diffusion family {family!r} "
                                   f"(this instantsr knows {', '.join(FAMILIES)})")
        for key, table in (("backbone", BACKBONES), ("codec", CODECS)):
            if index.get(key) not in table:
                raise ModelFolderError(f"{index_file}: unknown {key} {index.get(key)!r} "
                                       f"(this instantsr knows {', '.join(table)})")
        schedule_cls = FAMILIES[family].schedule
        allowed = {f.name for f in fields(schedule_cls)} - {"timesteps"}
        given = index.get("schedule", {})
        if not isinstance(given, dict) or set(given) - allowed:
            wrong = sorted(set(given) - allowed) if isinstance(given, dict) else given
            raise ModelFolderError(f"{index_file}: 'schedule' has fields {wrong} that a {schedule_cls.__name__} "
                                   f"does not (it takes {', '.join(sorted(allowed))})")
        try:
            schedule = schedule_cls(**given)
            steps = int(index["steps"])
            max_steps = index.get("max_steps") or (None if index.get("method", "resshift") == "resshift" else steps)
            backbone = _load_component(BACKBONES[index["backbone"]](), folder / "backbone")
            codec = _load_component(CODECS[index["codec"]](), folder / "codec")
            model = cls(backbone, codec, schedule, scale=int(index["scale"]), method=index.get("method", family),
                        steps=steps, sampler=index.get("sampler"), family=family,
                        parameterization=index.get("parameterization"), sigma_data=index.get("sigma_data"),
                        max_steps=max_steps, lr_multiple=int(index.get("lr_multiple", 1)), extra=index.get("extra"))
        except KeyError as e:
            raise ModelFolderError(f"{index_file}: missing field {e}") from None
        except (OSError, ValueError, RuntimeError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelFolderError(f"{folder}: cannot load the model ({first})") from None
        for part in ("backbone", "codec"):
            _check_finite(getattr(model, part), folder / part)
        return model.to(device=device, dtype=dtype).eval()


def _check_finite(module: nn.Module, folder: Path) -> None:
    """A ModelFolderError naming the weights file when any tensor holds NaN or Inf: such a model would write
    black or noise images for every input, so it is refused at load, not discovered image after image."""
    bad = [name for name, t in module.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        files = sorted(folder.glob("*.safetensors"))
        where = files[0] if len(files) == 1 else folder
        raise ModelFolderError(f"{where}: {len(bad)} tensor(s) hold NaN or Inf (e.g. {bad[0]}); the file is "
                               "damaged, re-export or re-download it")
