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
    # the ResShift teacher at one step (stage 7 less its mid-block attention, issue 19), shipped again by issue 31:
    # no candidate met the bar on the validation split (MODEL_CARD.md, docs/decoder.md)
    assert (model.method, model.family, model.max_steps) == ("resshift", "resshift", 15)
    assert sum(p.numel() for p in model.backbone.parameters()) == 2_497_712
    assert model.codec.refiner is None
    assert sum(f.stat().st_size for f in DEFAULT_MODEL_DIR.rglob("*") if f.is_file()) < 8e6  # a few MB
    lr, hr = (read_image(EXAMPLES / d / "aitzgorri.png").rgb for d in ("lr", "hr"))
    sr = up(lr, seed=0)
    assert sr.shape == hr.shape
    torch.testing.assert_close(up(lr, seed=0), sr, rtol=0, atol=0)  # x_T's noise from the seed alone
    assert not torch.equal(up(lr, seed=1), sr)
    # Measured when the teacher was shipped (and again in issue 31): 27.131 dB on this one example (bicubic 27.282;
    # the DFOSD default of issue 21 27.039).
    assert abs(float(psnr(sr[None], hr[None])) - 27.131) < 0.01


@needs_shared("data", "test", "realsr")
def test_default_model_beats_bicubic_on_realsr_crops():
    # The first 6 RealSR x4 pairs, 96 px LR corners: LPIPS 0.304 against bicubic's 0.394 (issue 31; the DFOSD
    # default of issue 21 0.259); every crop improves, with PSNR-Y higher (27.04 against 26.74).
    names = sorted(p.name for p in (REALSR / "lr").iterdir())[:6]
    lr = torch.stack([read_image(REALSR / "lr" / n).rgb[:, :96, :96] for n in names])
    hr = torch.stack([read_image(REALSR / "hr" / n).rgb[:, :384, :384] for n in names])
    sr = Upscaler.from_pretrained().upscale_tensor(lr, seed=0)
    bicubic = bicubic_upsample(lr, 4).clamp(0, 1)
    lpips = LPIPS("alex")
    ours, theirs = lpips(sr, hr), lpips(bicubic, hr)
    assert (ours < theirs).all() and float(theirs.mean() - ours.mean()) > 0.08
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
