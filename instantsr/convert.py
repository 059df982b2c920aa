"""`instantsr convert`: the official ResShift / SinSR checkpoints as an instantsr model folder.

The official release is a Swin-UNet (`resshift_realsrx4_s15_v1.pth`, `SinSR_v1.pth`) and ResShift's VQ-f4
autoencoder (`autoencoder_vq_f4.pth`), read here with `torch.load(weights_only=True)` (no code runs) and written
once as safetensors in our layout. The folder then runs as the official inference does (`sampler.py` of each
repo): reflect padding of the LR image to 64 px (`lq_size`), SinSR in one step at t = T (its `--one_step`),
ResShift v1 in 15 ancestral steps; the VQ decoder quantises first; nothing is tiled unless `--tile` asks.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from .codecs import VQF4Codec
from .diffusion.resshift import ResShiftSchedule
from .model import SRModel
from .nets.swin_unet import load_official

# The released checkpoints' settings (configs/realsr_swinunet_realesrgan256.yaml and configs/SinSR.yaml):
# The official inference (ResShift's and SinSR's inference.py, --chop_size 512) splits an LR image larger than
# 512 px into 512-px chops every 448 px and averages their outputs: recorded in the folder, the Upscaler does too.
OFFICIAL_CHOP = {"size": 512, "stride": 448}
# T=15, kappa 2, p 0.3, min_noise_level 0.04, etas_end 0.99, x4; LR images are reflect-padded to multiples of
# 64 (ResShift: the UNet's lq_size, 64; SinSR: 64), as the official samplers' padding_offset / desired_min_size.
OFFICIAL = {
    # method: (steps, sampler, max_steps, sqrt(eta_1) cap of that repo's schedule code, LR padding multiple:
    # ResShift's sampler pads to the UNet's lq_size, SinSR's to its desired_min_size, 64 whatever the config)
    "resshift": (15, "stochastic", 15, None, None),
    "sinsr": (1, "deterministic", 1, math.sqrt(0.001), 64),
}
OFFICIAL_SCHEDULE = dict(T=15, kappa=2.0, p=0.3, min_noise_level=0.04, etas_end=0.99)


def convert_official(unet: str | Path, autoencoder: str | Path, method: str, out: str | Path,
                     unet_config: dict | None = None, autoencoder_config: dict | None = None,
                     schedule: dict | None = None, scale: int = 4) -> SRModel:
    """Read the official files and write a model folder at `out` (atomically); returns the model.

    `unet_config` / `autoencoder_config` / `schedule` override the released realsr x4 settings (the official
    YAML's `model.params`, `autoencoder.params` with `ddconfig` flattened, `diffusion.params`)."""
    if method not in OFFICIAL:
        raise ValueError(f"--method {method!r}: choose {' or '.join(OFFICIAL)}")
    for path in (unet, autoencoder):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such file")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "model_index.json").is_file():
        raise ValueError(f"{out}: exists and is not a model folder; give a new or empty -o folder")
    steps, sampler, max_steps, cap, pad = OFFICIAL[method]
    backbone = load_official(unet, **(unet_config or {}))
    codec = VQF4Codec.from_official(str(autoencoder), **(autoencoder_config or {}))
    sched = ResShiftSchedule(**{**OFFICIAL_SCHEDULE, "start_cap": cap, **(schedule or {})})
    model = SRModel(backbone, codec, sched, scale=scale, method=method, steps=min(steps, sched.T), sampler=sampler,
                    max_steps=min(max_steps, sched.T), sigma_data=None, lr_multiple=pad or backbone.config.lq_size,
                    extra={"converted_from": {"unet": Path(unet).name, "autoencoder": Path(autoencoder).name},
                           "chop": dict(OFFICIAL_CHOP)})
    tmp = out.with_name(f".tmp_{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return model
