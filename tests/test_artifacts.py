"""The no-reference artifact measures of `instantsr.artifacts` (period-4 grid, colour shift) and their wiring into
`MetricSuite`, `instantsr eval` and `instantsr bench` (LR-only sets). Seeded, offline, a few seconds."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import pytest
import torch

from instantsr.artifacts import (bicubic_reference, chroma, color_shift, grid_excess, grid_ratio_excess,
                                 grid_strength, rgb_to_cbcr)
from instantsr.cli import main
from instantsr.degrade import quantize
from instantsr.evaluate import bicubic_baseline, evaluate_folder
from instantsr.imresize import imresize
from instantsr.io import read_image, save_image
from instantsr.metrics import HIGHER_IS_BETTER, MetricSuite

from .conftest import DATA, needs_shared, smooth_image

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hr" / "aitzgorri.png"  # 256x256, in the repository
REALSR_HR = DATA / "test" / "realsr" / "hr" / "Canon_005_LR4.png"  # 512x512


def pattern(period: int, rms_levels: float, h: int, w: int, seed: int = 1) -> torch.Tensor:
    """A zero-mean random period x period tile of RMS `rms_levels` (8-bit levels), the same in every channel,
    repeated over h x w from pixel (0, 0)."""
    g = torch.Generator().manual_seed(seed)
    tile = torch.randn(period, period, generator=g, dtype=torch.float64)
    tile = (tile - tile.mean()) / (tile - tile.mean()).pow(2).mean().sqrt() * rms_levels / 255
    reps = (math.ceil(h / period), math.ceil(w / period))
    return tile.repeat(*reps)[:h, :w].float().expand(3, h, w)


def read(x: torch.Tensor) -> tuple[float, float]:
    ratio, levels = grid_strength(x[None])
    return float(ratio[0]), float(levels[0])


# ---- grid --------------------------------------------------------------------------------------------------
def test_grid_excess_as_a_loss_takes_out_the_grid_and_not_the_texture():
    """The decoder's grid loss: higher on a photo with a grid, and its gradient (the baseline of periods 3 and 5
    fixed) removes the grid: a few plain gradient steps take the measured grid from 3 levels to under 1, while the
    photo's own detail (its difference from a blur) stays."""
    photo = read_image(EXAMPLE).rgb[None]
    x = (photo + pattern(4, 3.0, *photo.shape[-2:])).clamp(0, 1).requires_grad_(True)
    assert float(grid_excess(x.detach())) > 10 * float(grid_excess(photo))
    opt = torch.optim.SGD([x], lr=2e4)
    for _ in range(20):
        opt.zero_grad()
        grid_excess(x).sum().backward()
        opt.step()
    _, levels = grid_strength(x.detach())
    assert float(levels) < 1.0
    detail = lambda im: (im - torch.nn.functional.avg_pool2d(im, 5, 1, 2)).abs().mean()  # noqa: E731
    assert float(detail(x.detach())) > 0.8 * float(detail(photo))


def test_grid_ratio_excess_counts_flat_blocks_and_takes_their_grid_out():
    """The ratio loss weighs a flat block's faint grid as much as a textured block's strong one (grid_excess, power
    weighted, barely sees it), and a few gradient steps bring the measured median ratio down to about 1."""
    g = torch.Generator().manual_seed(0)
    flat = 0.5 + torch.randn(1, 3, 64, 128, generator=g) * 0.5 / 255  # a sky: half a level of noise
    texture = torch.rand(1, 3, 64, 128, generator=g) * 0.5 + 0.25
    grid = pattern(4, 1.0, 64, 128)  # one level
    x = torch.cat([flat, texture], -1) + torch.cat([grid, grid], -1)
    assert float(grid_ratio_excess(x)) > 10 * float(grid_ratio_excess(torch.cat([flat, texture], -1)))
    ratio_before, _ = grid_strength(x)
    assert float(ratio_before) > 1.4  # the median of 4 flat blocks (ratio about 3) and 4 textured ones (about 1)
    x = x.clone().requires_grad_(True)
    opt = torch.optim.SGD([x], lr=0.01)
    for _ in range(50):
        opt.zero_grad()
        grid_ratio_excess(x).sum().backward()
        opt.step()
    ratio_after, _ = grid_strength(x.detach())
    assert float(ratio_after) < 1.1, float(ratio_after)


@needs_shared("data", "test", "realsr", "hr", "Canon_005_LR4.png")
def test_grid_reads_a_4x4_pattern_on_a_photo_and_nothing_on_clean_or_bicubic():
    photo = read_image(REALSR_HR).rgb[:, :512, :512]
    clean_ratio, clean_levels = read(photo)
    ratio, levels = read((photo + pattern(4, 3.0, 512, 512)).clamp(0, 1))
    assert levels == pytest.approx(3.0, rel=0.15)
    assert ratio > clean_ratio + 1.0
    assert clean_levels < 0.5 and clean_ratio < 1.2
    # its bicubic x4 round trip (quantised LR, MATLAB imresize both ways, as `eval --baseline bicubic`)
    lr = quantize(imresize(photo[None], scale=0.25))[0]
    bic_ratio, bic_levels = read(bicubic_baseline(lr, (512, 512)))
    assert bic_levels < 0.5 and bic_ratio < 1.0


def test_grid_reads_the_pattern_amplitude_on_the_example_photo():
    photo = read_image(EXAMPLE).rgb
    h, w = photo.shape[-2:]
    clean_ratio, clean_levels = read(photo)
    assert clean_levels < 0.6 and 0.5 < clean_ratio < 1.2
    for amp in (2.0, 5.0):
        ratio, levels = read((photo + pattern(4, amp, h, w, seed=int(amp))).clamp(0, 1))
        assert levels == pytest.approx(amp, rel=0.15), amp
        assert ratio > clean_ratio + 0.5
    # period 8 finds an 8x8 tile with --grid-period 8
    ratio, levels = grid_strength((photo + pattern(8, 3.0, h, w)).clamp(0, 1)[None], period=8)
    assert float(levels[0]) == pytest.approx(3.0, rel=0.2)


@pytest.mark.parametrize("period", [3, 5])
def test_other_periods_do_not_read_as_a_4_grid(period):
    photo = read_image(EXAMPLE).rgb
    h, w = photo.shape[-2:]
    clean_ratio, clean_levels = read(photo)
    ratio, levels = read((photo + pattern(period, 3.0, h, w)).clamp(0, 1))
    assert levels < max(0.6, clean_levels + 0.2)
    assert ratio < clean_ratio
    # on a flat image with a little noise too
    g = torch.Generator().manual_seed(period)
    flat = 0.5 + 1 / 255 * torch.randn(3, 128, 128, generator=g) + pattern(period, 3.0, 128, 128)
    ratio, levels = read(flat)
    assert levels < 0.3 and ratio < 1.0
    # and a 4x4 one on that flat image reads at its amplitude, far above the noise
    ratio, levels = read(0.5 + 1 / 255 * torch.randn(3, 128, 128, generator=g) + pattern(4, 3.0, 128, 128))
    assert levels == pytest.approx(3.0, rel=0.1) and ratio > 5


def test_grid_noise_is_unbiased_batches_small_images_and_speed():
    g = torch.Generator().manual_seed(0)
    noise = 0.5 + 10 / 255 * torch.randn(2, 3, 256, 256, generator=g)  # white noise of 10 levels, no grid
    ratio, levels = grid_strength(noise)
    assert ratio.shape == levels.shape == (2,) and ratio.dtype == torch.float64
    assert torch.all((ratio - 1).abs() < 0.1) and torch.all(levels < 0.3)
    # smaller than one block: one block of the whole image; a side shorter than p + 1 after the high-pass: NaN
    small = 0.5 + pattern(4, 3.0, 20, 28)[None] + 1 / 255 * torch.randn(1, 3, 20, 28, generator=g)
    ratio, levels = grid_strength(small)
    assert float(levels[0]) == pytest.approx(3.0, rel=0.2) and float(ratio[0]) > 2
    ratio, levels = grid_strength(torch.rand(1, 3, 7, 64))
    assert math.isnan(ratio[0]) and math.isnan(levels[0])
    with pytest.raises(ValueError, match="NCHW"):
        grid_strength(torch.rand(3, 64, 64))
    big = torch.rand(1, 3, 2048, 2048, generator=g)
    grid_strength(big[..., :64, :64])
    t = time.perf_counter()
    grid_strength(big)
    assert time.perf_counter() - t < 3.0  # about 0.2 s on two busy cores: no per-pixel Python loops


# ---- colour --------------------------------------------------------------------------------------------------
def test_color_shift_and_chroma():
    lr = read_image(EXAMPLE.parents[1] / "lr" / "aitzgorri.png").rgb[None]  # 64x64, the x4 LR of the example
    # bicubic reads about 0: torch's (the reference itself, in 8 bits) and MATLAB's (`eval --baseline bicubic`)
    assert float(color_shift(quantize(bicubic_reference(lr, 4)), lr, 4)[0]) < 0.1
    assert float(color_shift(bicubic_baseline(lr[0], (256, 256))[None], lr, 4)[0]) < 0.15
    # a constant shift of +k levels in B reads as its BT.601 chroma distance
    hr = 0.1 + 0.7 * smooth_image(128, 128, 3)  # away from 0 and 1: the shift is not clipped
    lr = quantize(imresize(hr[None], scale=0.25))
    sr = quantize(bicubic_reference(lr, 4))
    assert float(color_shift(sr, lr, 4)[0]) < 0.1
    k = 6.0
    shifted = sr.clone()
    shifted[:, 2] += k / 255
    cb, cr = 0.5 * k, -0.081312 * k  # BT.601: Cb = ... + 0.5 B, Cr = ... - 0.081312 B
    expected = math.hypot(cb, cr)
    assert float(color_shift(shifted, lr, 4)[0]) == pytest.approx(expected, abs=0.1)
    # a noisier SR image has no colour shift: only casts count after the 8x8 low-pass
    g = torch.Generator().manual_seed(0)
    noisy = (sr + 0.03 * torch.randn(sr.shape[-2:], generator=g)).clamp(0, 1)  # the same noise in R, G, B
    assert float(color_shift(noisy, lr, 4)[0]) < 0.3
    # an SR image cropped smaller than 4 x LR is compared with the reference cropped alike
    assert float(color_shift(shifted[..., :120, :124], lr, 4)[0]) == pytest.approx(expected, abs=0.1)
    with pytest.raises(ValueError, match="larger"):
        color_shift(torch.rand(1, 3, 132, 128), lr, 4)
    grey = smooth_image(32, 32, 0)[:1].expand(3, 32, 32)[None]
    assert float(chroma(grey)[0]) == 0
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1
    assert float(chroma(red)[0]) == pytest.approx(255 * math.hypot(-0.168736, 0.5), rel=1e-6)
    assert torch.allclose(rgb_to_cbcr(torch.ones(1, 3, 2, 2)), torch.zeros(1, 2, 2, 2), atol=1e-6)


def test_chroma_loss_costs_a_colour_cast_not_texture_or_grey():
    from instantsr.losses import ChromaLoss

    x = smooth_image(64, 64, 0)[None]
    loss = ChromaLoss(8)
    cast = x + torch.tensor([4.0, 0.0, -4.0]).view(1, 3, 1, 1) / 255  # a warm cast of 4 levels in R and B
    texture = x + 0.05 * torch.sign(torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0)))
    texture = texture + 0.05 * (torch.arange(64) % 2).view(1, 1, 1, 64) * 2 - 0.05  # grey, zero-mean per 8x8
    assert float(loss(x, x)) == 0.0
    # |dCb| + |dCr| of (4, 0, -4) levels: (0.168736 + 0.5) + (0.5 + 0.081312) = 1.25 x 4 levels
    assert float(loss(cast, x)) * 255 == pytest.approx(4 * 1.250048, rel=1e-4)
    assert float(loss(texture, x)) * 255 < 0.05  # grey texture has no chroma, whatever its mean
    cast.requires_grad_(True)
    loss(cast, x).sum().backward()
    assert cast.grad.abs().sum() > 0


def test_metric_suite_names_and_errors():
    lr = read_image(EXAMPLE.parents[1] / "lr" / "aitzgorri.png").rgb[None]
    sr = bicubic_baseline(lr[0], (256, 256))[None]
    suite = MetricSuite(["grid", "grid_levels", "color"])
    out = suite(sr, lr=lr)
    assert set(out) == {"grid", "grid_levels", "color"} and all(v.shape == (1,) for v in out.values())
    assert out["color"][0] < 0.15 and out["grid_levels"][0] < 0.5
    assert not any(HIGHER_IS_BETTER[m] for m in out)
    with pytest.raises(ValueError, match="need the LR"):
        suite(sr)
    assert set(MetricSuite(["grid"])(sr)) == {"grid"}  # no LR needed
    with pytest.raises(ValueError, match="grid period"):
        MetricSuite(["grid"], grid_period=1)


# ---- eval and bench ----------------------------------------------------------------------------------------
@pytest.fixture
def sr_lr(tmp_path):
    """Two 32x32 LR crops of the example photo and their SR at x4: MATLAB bicubic (a), bicubic with a 4x4 grid of
    4 levels and a cast of +8 levels in B (b); and an SR image without an LR partner (c)."""
    photo = read_image(EXAMPLE.parents[1] / "lr" / "aitzgorri.png").rgb
    for name, (y, x) in zip("ab", ((0, 0), (32, 16))):
        lr = photo[:, y:y + 32, x:x + 32]
        save_image(lr, tmp_path / "lr" / f"{name}.png")
        sr = bicubic_baseline(lr, (128, 128))
        if name == "b":
            sr = sr + pattern(4, 4.0, 128, 128) + torch.tensor([0.0, 0.0, 8 / 255]).view(3, 1, 1)
        save_image(sr.clamp(0, 1), tmp_path / "sr" / f"{name}.png")
    save_image(smooth_image(128, 128, 5), tmp_path / "sr" / "c.png")
    return tmp_path


def test_eval_grid_and_color_without_hr(sr_lr, capsys):
    d = sr_lr
    code = main(["eval", "--sr", str(d / "sr"), "--lr", str(d / "lr"), "--baseline", "bicubic",
                 "--metrics", "grid,grid_levels,color", "--csv", str(d / "rows.csv")])
    assert code == 0
    out = capsys.readouterr()
    assert "| method | grid ↓ | grid_levels ↓ | color ↓ | images |" in out.out
    assert "c.png: no LR image of that name" in out.err
    rows = {(r["method"], r["image"]): r for r in csv.DictReader(open(d / "rows.csv"))}
    assert set(rows) == {("sr", "a.png"), ("sr", "b.png"), ("bicubic", "a.png"), ("bicubic", "b.png")}
    assert float(rows["sr", "a.png"]["color"]) < 0.2 and float(rows["bicubic", "a.png"]["color"]) < 0.2
    assert float(rows["sr", "b.png"]["color"]) == pytest.approx(8 * math.hypot(0.5, 0.081312), rel=0.1)
    assert float(rows["sr", "b.png"]["grid_levels"]) == pytest.approx(4.0, rel=0.2)
    assert float(rows["sr", "b.png"]["grid"]) > 2
    # bicubic without --hr upscales by the SR/LR ratio (x4 here): no grid, as the SR image a.png
    for key in (("sr", "a.png"), ("bicubic", "a.png"), ("bicubic", "b.png")):
        assert float(rows[key]["grid_levels"]) < 0.5 and float(rows[key]["grid"]) < 1.2, key
    # color without --lr: one line
    assert main(["eval", "--sr", str(d / "sr"), "--metrics", "grid,color"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs --lr" in err and len(err.splitlines()) == 1
    # grid alone needs no LR; c.png is scored too
    assert main(["eval", "--sr", str(d / "sr"), "--metrics", "grid", "--grid-period", "4"]) == 0
    assert "| sr |" in capsys.readouterr().out
    _, summary = evaluate_folder(d / "sr", None, ["grid"])
    assert summary["images"] == 3


def test_bench_on_lr_only(tmp_path, model_dir, capsys):
    for i in range(2):
        save_image(quantize(imresize((0.1 + 0.7 * smooth_image(64, 64, i))[None], scale=0.25))[0],
                   tmp_path / "lr" / f"im{i}.png")
    out = tmp_path / "out"
    code = main(["bench", "-m", f"tiny={model_dir}", "--lr", str(tmp_path / "lr"), "-o", str(out),
                 "--metrics", "grid,color", "--no-speed", "--crop", "8", "--fp32"])
    assert code == 0
    report = (out / "report.md").read_text()
    assert "grid ↓" in report and "color ↓" in report and "LR only" in report
    assert "| bicubic |" in report and "| tiny |" in report
    rows = {r["name"]: r for r in csv.DictReader(open(out / "bench.csv"))}
    assert float(rows["bicubic"]["color"]) < 0.5 and int(rows["bicubic"]["images"]) == 2
    assert float(rows["tiny"]["grid"]) > 0 and float(rows["tiny"]["color"]) >= 0
    assert (out / "strip.png").is_file()  # LR | bicubic | tiny, no HR column
    # a metric that needs the HR cannot run on LR alone: one line
    assert main(["bench", "--lr", str(tmp_path / "lr"), "-o", str(out), "--metrics", "psnr,grid",
                 "--no-speed"]) == 2
    assert "no-reference" in capsys.readouterr().err
