"""The training recipes, one module each, and the one table the CLI reads them from.

Each entry imports its module only when asked (`instantsr --help` stays instant) and gives the recipe's config
dataclass and class; `teacher` says the recipe distils a teacher given by `--teacher`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Method:
    load: Callable[[], tuple[type, type]]  # -> (config dataclass, recipe class), imported on call
    help: str  # one line for `instantsr train --help`
    teacher: bool = False  # needs --teacher RUN_DIR


def _resshift():
    from .resshift import ResShiftConfig, ResShiftRecipe

    return ResShiftConfig, ResShiftRecipe


def _sinsr():
    from .sinsr import SinSRConfig, SinSRRecipe

    return SinSRConfig, SinSRRecipe


def _rsd():
    from .rsd import RSDConfig, RSDRecipe

    return RSDConfig, RSDRecipe


def _yonos():
    from .yonos import YonosConfig, YonosRecipe

    return YonosConfig, YonosRecipe


def _decoder():
    from .decoder import DecoderConfig, DecoderRecipe

    return DecoderConfig, DecoderRecipe


def _dfosd():
    from .dfosd import DFOSDConfig, DFOSDRecipe

    return DFOSDConfig, DFOSDRecipe


def _autoencoder():
    from .autoencoder import AutoencoderConfig, AutoencoderRecipe

    return AutoencoderConfig, AutoencoderRecipe


METHODS: dict[str, Method] = {
    "resshift": Method(_resshift, "a ResShift teacher (residual shifting, x0-prediction)"),
    "sinsr": Method(_sinsr, "a one-step SinSR student of a ResShift teacher", teacher=True),
    "rsd": Method(_rsd, "a one-step RSD student of a ResShift teacher", teacher=True),
    "yonos": Method(_yonos, "a YONOS-SR VP latent model (v-prediction, DDIM) at --scale; with --teacher (one at "
                            "half the scale) by scale distillation"),
    "decoder": Method(_decoder, "fine-tune (or, on a pixel-unshuffle codec, add) a one-step model's decoder on its "
                                "frozen network's latents (L1 + LPIPS; --model RUN)"),
    "yonos-decoder": Method(_decoder, "the decoder method under its YONOS-SR name (configs of earlier runs)"),
    "dfosd": Method(_dfosd, "a DFOSD one-step generator: LoRA on a VP prior (--prior DIR), noise-aware "
                            "discriminator, MSE + EA-DISTS; no teacher"),
    "autoencoder": Method(_autoencoder, "a KL latent codec (for a model's `codec`)"),
}


def build_recipe(method: str, method_config, seed: int | None = None):
    """The recipe of `method` from its config dataclass; a distiller without a teacher is one clear line.

    With `seed` (the run's TrainConfig.seed) the networks' initial weights depend on it alone, not on whatever
    drew from torch's global RNG before; without it they come from the global RNG, as any torch module's."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    entry = METHODS[method]
    if entry.teacher and not getattr(method_config, "teacher", ""):
        raise ValueError(f"{method} needs a teacher: --teacher RUN_DIR (a run of `instantsr train resshift`)")
    recipe_cls = entry.load()[1]
    if seed is None:
        return recipe_cls(method_config)
    from ..train import seeded_init

    with seeded_init(seed):
        return recipe_cls(method_config)
