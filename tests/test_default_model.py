"""The model shipped inside the package: loads with no argument, upscales the example, reference numbers."""

from __future__ import annotations

from pathlib import Path

import torch

from instantsr import cli
from instantsr.io import read_image
from instantsr.metrics import LPIPS, psnr
from instantsr.model import bicubic_upsample
from instantsr.pipeline import DEFAULT_MODEL_DIR, Upscaler

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_default_model_ships_and_matches_its_reference_numbers():
    up = Upscaler.from_pretrained()
    model = up.model
    assert model.steps == 1 and model.scale == 4
    assert sum(p.numel() for p in model.backbone.parameters()) == 2_564_016
    assert sum(f.stat().st_size for f in DEFAULT_MODEL_DIR.rglob("*") if f.is_file()) < 8e6  # a few MB
    lr, hr = (read_image(EXAMPLES / d / "aitzgorri.png").rgb for d in ("lr", "hr"))
    sr = up(lr, seed=0)
    assert sr.shape == hr.shape
    torch.testing.assert_close(up(lr, seed=0), sr, rtol=0, atol=0)  # seeded: the same image twice
    # Measured when the model was shipped (MODEL_CARD.md): 26.756 dB, LPIPS 0.631 vs bicubic's 27.282 / 0.659.
    assert abs(float(psnr(sr[None], hr[None])) - 26.756) < 0.05
    bicubic = bicubic_upsample(lr[None], 4).clamp(0, 1)
    lpips = LPIPS("alex")
    assert float(lpips(sr[None], hr[None])) < float(lpips(bicubic, hr[None])) - 0.02


def test_upscale_cli_needs_no_model_argument(tmp_path):
    assert cli.main(["upscale", "-i", str(EXAMPLES / "lr" / "aitzgorri.png"), "-o", str(tmp_path)]) in (0, None)
    out = read_image(tmp_path / "aitzgorri.png")
    assert out.size == (256, 256)
