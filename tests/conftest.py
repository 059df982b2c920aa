"""Shared fixtures: tiny models and tiny image folders, built in place, seeded, offline; the `needs_shared` skip
and the `slow` marker (`pytest -m "not slow"`: the fast loop)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from instantsr.codecs import PixelUnshuffleCodec
from instantsr.diffusion.resshift import ResShiftSchedule
from instantsr.io import save_image
from instantsr.model import SRModel
from instantsr.nets.unet import ConditionalUNet

# The project's data folder beside the repository; INSTANTSR_SHARED points elsewhere (a missing path checks that
# the tests that need it skip).
SHARED = Path(os.environ.get("INSTANTSR_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
DATA = SHARED / "data"


def needs_shared(*parts: str) -> pytest.MarkDecorator:
    """Skip a test that reads SHARED/parts (the folder itself without parts) when it is not there, in one line."""
    path = SHARED.joinpath(*parts)
    reason = ("needs ../shared (the project's data folder beside the repository)" if not SHARED.is_dir()
              else f"needs {path} (missing from the shared data folder)")
    return pytest.mark.skipif(not path.exists(), reason=reason)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: an integration test of several seconds; -m 'not slow' leaves them out")


def smooth_image(h: int, w: int, seed: int) -> torch.Tensor:
    """A natural-ish test image: sums of random low-frequency waves and an edge, 3xHxW in [0, 1]."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((3, h, w))
    for c in range(3):
        for _ in range(4):
            fx, fy, ph = g.uniform(1, 12), g.uniform(1, 12), g.uniform(0, 6.3)
            img[c] += np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
    img += (xx > g.uniform(0.3, 0.7)) * 1.5
    img = (img - img.min()) / (img.max() - img.min())
    return torch.from_numpy(img).float()


@pytest.fixture
def hr_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "hr"
    for i in range(6):
        save_image(smooth_image(72, 80, i), folder / f"img{i}.png")
    return folder


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny one-step model folder (untrained), saved once per test module."""
    torch.manual_seed(0)
    model = SRModel(ConditionalUNet.from_preset("tiny", latent_channels=48), PixelUnshuffleCodec(4),
                    ResShiftSchedule(), scale=4, method="sinsr", steps=1, max_steps=1)
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    return folder


@pytest.fixture
def sd_folder(tmp_path):
    """unet/ and vae/ as a diffusers Stable Diffusion folder has them, tiny and random (no weights to fetch)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                         layers_per_block=1, attention_head_dim=4,
                         norm_num_groups=8).save_pretrained(tmp_path / "sd" / "unet")
    AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                  layers_per_block=1, scaling_factor=0.18215).save_pretrained(tmp_path / "sd" / "vae")
    return tmp_path / "sd"
