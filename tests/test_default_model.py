"""The model shipped inside the package: loads with no argument, upscales the example, reference numbers."""

from __future__ import annotations

from pathlib import Path

import torch

from instantsr import cli
from instantsr.io import read_image
from instantsr.metrics import LPIPS, psnr
from instantsr.model import bicubic_upsample
from instantsr.pipeline import DEFAULT_MODEL_DIR, Upscaler

from .conftest import DATA, needs_shared

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
REALSR = DATA / "test" / "realsr"


def test_default_model_ships_and_matches_its_reference_numbers():
    up = Upscaler.from_pretrained()
    model = up.model
    assert model.steps == 1 and model.scale == 4 and model.num_passes() == 1
    # DFOSD on the ResShift teacher (issue 21): the teacher's UNet (stage 7 less its mid-block attention, issue 19)
    # with the LoRA merged, read from z_L at T_L = 11 with no noise
    assert (model.method, model.family, model.schedule.start) == ("dfosd", "resshift_lr", 11)
    assert sum(p.numel() for p in model.backbone.parameters()) == 2_497_712
    assert sum(f.stat().st_size for f in DEFAULT_MODEL_DIR.rglob("*") if f.is_file()) < 8e6  # a few MB
    lr, hr = (read_image(EXAMPLES / d / "aitzgorri.png").rgb for d in ("lr", "hr"))
    sr = up(lr, seed=0)
    assert sr.shape == hr.shape
    torch.testing.assert_close(up(lr, seed=1), sr, rtol=0, atol=0)  # no noise: any seed gives the same image
    # Measured when the model was shipped (issue 21): 27.039 dB on this one example (bicubic 27.282; the teacher
    # it replaced 27.131).
    assert abs(float(psnr(sr[None], hr[None])) - 27.039) < 0.01


@needs_shared("data", "test", "realsr")
def test_default_model_beats_bicubic_on_realsr_crops():
    # The first 6 RealSR x4 pairs, 96 px LR corners: LPIPS 0.259 against bicubic's 0.394 when shipped (issue 21;
    # the teacher before it 0.306); every crop improves, with PSNR-Y within a dB (26.89 against 26.74).
    names = sorted(p.name for p in (REALSR / "lr").iterdir())[:6]
    lr = torch.stack([read_image(REALSR / "lr" / n).rgb[:, :96, :96] for n in names])
    hr = torch.stack([read_image(REALSR / "hr" / n).rgb[:, :384, :384] for n in names])
    sr = Upscaler.from_pretrained().upscale_tensor(lr, seed=0)
    bicubic = bicubic_upsample(lr, 4).clamp(0, 1)
    lpips = LPIPS("alex")
    ours, theirs = lpips(sr, hr), lpips(bicubic, hr)
    assert (ours < theirs).all() and float(theirs.mean() - ours.mean()) > 0.1
    assert float(psnr(bicubic, hr).mean() - psnr(sr, hr).mean()) < 1.0


def test_upscale_cli_needs_no_model_argument(tmp_path):
    assert cli.main(["upscale", "-i", str(EXAMPLES / "lr" / "aitzgorri.png"), "-o", str(tmp_path)]) in (0, None)
    out = read_image(tmp_path / "aitzgorri.png")
    assert out.size == (256, 256)


def test_default_model_tiles_show_no_seam():
    # Issue 4's check: a smooth gradient upscaled with tiles and without differs by under 1/255 away from the
    # border (the tiled UNet runs exactly: nets/tiled_unet.py).
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 192), torch.linspace(0, 1, 192), indexing="ij")
    lr = torch.stack([0.1 + 0.8 * xx, 0.2 + 0.6 * yy, 0.5 + 0.3 * (xx - yy)])
    up = Upscaler.from_pretrained()
    whole, tiled = up(lr, seed=0), up(lr, seed=0, tile=64)
    assert (tiled - whole)[:, 16:-16, 16:-16].abs().max() < 1 / 255
