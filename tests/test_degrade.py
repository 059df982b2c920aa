"""Tests of instantsr.degrade: MATLAB imresize against a plain numpy port of basicsr's, JPEG against Pillow,
the Real-ESRGAN kernels and noise against their definitions, and the whole degradation's sizes, range,
determinism and blur."""

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.special
import torch
import torch.nn.functional as F
from PIL import Image

from instantsr.degrade import (
    PRESETS,
    BlurConfig,
    DegradationConfig,
    add_gaussian_noise,
    add_poisson_noise,
    avgpool_downscale,
    degrade,
    degrade_folder,
    draw_kernels,
    filter2d,
    make_lr,
    quantize,
    random_blur_kernel,
    random_final_sinc_kernel,
)
from instantsr.imresize import bicubic_upscale, imresize
from instantsr.io import read_image
from instantsr.jpeg import jpeg, jpeg_tables
from instantsr.kernels import (
    KERNEL_SIZES,
    Profile,
    bivariate_kernel,
    circular_lowpass_kernel,
)

from .conftest import DATA, needs_shared

SET5_IMAGE = DATA / "test" / "set5" / "hr" / "img_001.png"


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_image(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Random colours at a coarse grid, bilinearly enlarged: smooth, in [0, 1], on the 8-bit grid."""
    coarse = torch.rand(n, 3, h // 8 + 2, w // 8 + 2, generator=generator(seed))
    return quantize(F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False))


def textured_image() -> torch.Tensor:
    """A 96x96 natural crop from Set5 when the data is here, else a synthetic image with edges and texture."""
    if SET5_IMAGE.is_file():
        return read_image(SET5_IMAGE).rgb[None, :, 100:196, 100:196]
    blocks = torch.rand(1, 3, 12, 12, generator=generator(1)).repeat_interleave(8, -1).repeat_interleave(8, -2)
    return quantize(0.7 * blocks + 0.3 * torch.rand(1, 3, 96, 96, generator=generator(2)))


# ---------------------------------------------------------------------------------------------------------- #
# imresize against a straightforward numpy port of basicsr.utils.matlab_functions.imresize
# ---------------------------------------------------------------------------------------------------------- #


def reference_cubic(x):
    ax = np.abs(x)
    return (1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1) + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * (
        (ax > 1) & (ax <= 2)
    )


def reference_weights_indices(in_length, out_length, scale, antialiasing):
    kernel_width = 4.0
    if scale < 1 and antialiasing:
        kernel_width = kernel_width / scale
    x = np.linspace(1, out_length, out_length)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    p = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(p)[None, :]
    distance_to_center = u[:, None] - indices
    if scale < 1 and antialiasing:
        weights = scale * reference_cubic(distance_to_center * scale)
    else:
        weights = reference_cubic(distance_to_center)
    weights = weights / weights.sum(1, keepdims=True)
    zero_count = (weights == 0).sum(0)
    if zero_count[0] != 0:
        indices, weights = indices[:, 1 : p - 1], weights[:, 1 : p - 1]
    if zero_count[-1] != 0:
        indices, weights = indices[:, : p - 2], weights[:, : p - 2]
    sym_len_s = int(-indices.min() + 1)
    sym_len_e = int(indices.max() - in_length)
    indices = indices + sym_len_s - 1
    return weights, indices.astype(int), sym_len_s, sym_len_e


def reference_resize_axis(img, axis, out_length, scale, antialiasing):
    """Resize a CHW float64 array along axis 1 or 2, by symmetric padding and a loop over outputs."""
    in_length = img.shape[axis]
    weights, indices, sym_s, sym_e = reference_weights_indices(in_length, out_length, scale, antialiasing)
    pad = [(0, 0)] * 3
    pad[axis] = (max(sym_s, 0), max(sym_e, 0))
    padded = np.pad(img, pad, mode="symmetric")
    moved = np.moveaxis(padded, axis, 0)
    out = np.zeros((out_length,) + moved.shape[1:])
    taps = weights.shape[1]
    for i in range(out_length):
        start = indices[i, 0]
        out[i] = np.tensordot(weights[i], moved[start : start + taps], axes=(0, 0))
    return np.moveaxis(out, 0, axis)


def reference_imresize(img, scale, antialiasing=True):
    _, h, w = img.shape
    out = reference_resize_axis(img, 1, math.ceil(h * scale), scale, antialiasing)
    return reference_resize_axis(out, 2, math.ceil(w * scale), scale, antialiasing)


@pytest.mark.parametrize("scale", [1 / 4, 1 / 2, 1 / 3, 0.7, 2, 3, 4])
@pytest.mark.parametrize("antialias", [True, False])
def test_imresize_matches_basicsr_reference(scale, antialias):
    x = torch.rand(3, 23, 30, generator=generator(0), dtype=torch.float64)
    expected = reference_imresize(x.numpy(), scale, antialias)
    got = imresize(x.float(), scale=scale, antialias=antialias)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_imresize_sizes_and_batches():
    assert imresize(torch.rand(2, 3, 128, 128), scale=1 / 4).shape == (2, 3, 32, 32)
    assert imresize(torch.rand(3, 127, 64), scale=1 / 4).shape == (3, 32, 16)  # ceil, as MATLAB
    assert imresize(torch.rand(1, 3, 20, 30), size=(50, 7)).shape == (1, 3, 50, 7)
    assert bicubic_upscale(torch.rand(1, 3, 16, 24), 4).shape == (1, 3, 64, 96)
    batch = torch.rand(3, 3, 40, 36, generator=generator(1))
    one_by_one = torch.stack([imresize(image, scale=1 / 4) for image in batch])
    torch.testing.assert_close(imresize(batch, scale=1 / 4), one_by_one)
    with pytest.raises(ValueError):
        imresize(batch, scale=0.5, size=(20, 18))


@pytest.mark.parametrize("scale", [1 / 4, 4])
def test_imresize_keeps_a_constant_image_constant(scale):
    out = imresize(torch.full((1, 3, 64, 48), 0.37), scale=scale)
    torch.testing.assert_close(out, torch.full_like(out, 0.37), atol=1e-6, rtol=0)


def test_avgpool_downscale_is_the_block_mean():
    x = torch.rand(2, 3, 64, 48, generator=generator(2))
    out = avgpool_downscale(x, 8)
    assert out.shape == (2, 3, 8, 6)
    torch.testing.assert_close(out[1, 2, 3, 4], x[1, 2, 24:32, 32:40].mean())


# ---------------------------------------------------------------------------------------------------------- #
# JPEG
# ---------------------------------------------------------------------------------------------------------- #


def _pillow_jpeg(image: torch.Tensor, quality: int, path: Path) -> torch.Tensor:
    Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy()).save(path, quality=quality)
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return (10 * torch.log10(1 / (a - b).pow(2).mean())).item()


@needs_shared("data", "test", "set5", "hr", "img_001.png")
def test_jpeg_matches_libjpeg_through_pillow(tmp_path):
    # Not bit-equal (libjpeg works in integers and upsamples chroma with a triangle filter), but the same
    # codec: tables, subsampling and block DCT. Odd sizes exercise the macroblock padding.
    x = read_image(SET5_IMAGE).rgb[:, :250, :230]
    for quality in (10, 30, 60, 95):
        ours, pillow = jpeg(x[None], quality)[0], _pillow_jpeg(x, quality, tmp_path / f"q{quality}.jpg")
        assert ours.shape == x.shape and ours.dtype == x.dtype
        assert _psnr(ours, pillow) > 40  # measured 41.6-43.5 dB
        assert abs(_psnr(ours, x) - _psnr(pillow, x)) < 1.0  # the same loss of quality (measured <= 0.91 dB)
        torch.testing.assert_close(ours * 255, (ours * 255).round(), atol=1e-3, rtol=0)  # 8-bit levels


def test_jpeg_quality_per_image_and_monotone():
    x = quantize(0.8 * smooth_image(2, 40, 56, seed=3) + 0.2 * torch.rand(2, 3, 40, 56, generator=generator(4)))
    both = jpeg(x, torch.tensor([30, 90]))
    assert torch.equal(both[:1], jpeg(x[:1], 30)) and torch.equal(both[1:], jpeg(x[1:], 90))
    errors = [(jpeg(x, q) - x).abs().mean().item() for q in (10, 50, 90, 100)]
    assert errors == sorted(errors, reverse=True) and errors[0] > 1.5 * errors[-1]  # q100 still subsamples chroma
    assert not torch.equal(both[0], x[0])  # quality 30 does change the image


def test_jpeg_tables_are_libjpegs():
    luma, chroma = jpeg_tables(torch.tensor([50, 75, 100, 10]))
    assert luma[0, 0, 0] == 16 and chroma[0, 0, 0] == 17  # quality 50: the standard tables
    assert luma[1, 0, 0] == 8 and luma[1, 7, 7] == 50  # quality 75: floor((t * 50 + 50) / 100)
    assert luma[2].eq(1).all() and chroma[2].eq(1).all()
    assert luma[3, 0, 0] == 80 and luma[3].max() == 255  # quality 10: scale 500, clamped at 255


# ---------------------------------------------------------------------------------------------------------- #
# Kernels
# ---------------------------------------------------------------------------------------------------------- #


def kernel_covariance(kernel):
    size = kernel.shape[-1]
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    return torch.tensor(
        [[(kernel * x * x).sum(), (kernel * x * y).sum()], [(kernel * x * y).sum(), (kernel * y * y).sum()]]
    )


def test_gaussian_kernel_has_the_asked_covariance():
    iso = bivariate_kernel(21, 1.5)
    torch.testing.assert_close(iso.sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(kernel_covariance(iso), torch.eye(2, dtype=torch.float64) * 2.25, atol=1e-4, rtol=0)

    sigma_x, sigma_y, theta = 2.0, 0.8, 0.6
    c, s = math.cos(theta), math.sin(theta)
    rotation = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    expected = rotation @ torch.diag(torch.tensor([sigma_x**2, sigma_y**2], dtype=torch.float64)) @ rotation.T
    aniso = bivariate_kernel(21, sigma_x, sigma_y, theta)
    torch.testing.assert_close(kernel_covariance(aniso), expected, atol=1e-3, rtol=0)


def reference_bivariate(size, sigma_x, sigma_y, theta, profile, beta):
    """basicsr's mesh_grid / sigma_matrix2 / pdf formulas in numpy."""
    ax = np.arange(-size // 2 + 1.0, size // 2 + 1.0)
    xx, yy = np.meshgrid(ax, ax)
    grid = np.stack([xx, yy], -1)
    d = np.array([[sigma_x**2, 0], [0, sigma_y**2]])
    u = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    inverse_sigma = np.linalg.inv(u @ d @ u.T)
    q = np.sum(np.dot(grid, inverse_sigma) * grid, 2)
    kernel = {
        Profile.GAUSSIAN: lambda: np.exp(-0.5 * q),
        Profile.GENERALIZED: lambda: np.exp(-0.5 * np.power(q, beta)),
        Profile.PLATEAU: lambda: np.reciprocal(np.power(q, beta) + 1),
    }[profile]()
    return kernel / kernel.sum()


@pytest.mark.parametrize("profile,beta", [(Profile.GAUSSIAN, 1.0), (Profile.GENERALIZED, 0.7), (Profile.PLATEAU, 1.6)])
def test_kernels_match_basicsr_formulas(profile, beta):
    got = bivariate_kernel(15, 2.3, 0.9, -1.1, profile, beta)
    np.testing.assert_allclose(got.numpy(), reference_bivariate(15, 2.3, 0.9, -1.1, profile, beta), atol=1e-12)


def test_circular_lowpass_matches_scipy_bessel():
    size, cutoff = 13, 1.3
    ax = np.arange(size) - (size - 1) / 2
    r = np.hypot(*np.meshgrid(ax, ax))
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = cutoff * scipy.special.j1(cutoff * r) / (2 * np.pi * r)
    expected[size // 2, size // 2] = cutoff**2 / (4 * np.pi)
    np.testing.assert_allclose(circular_lowpass_kernel(cutoff, size).numpy(), expected / expected.sum(), atol=1e-12)


def test_random_kernels_are_normalised_odd_and_point_symmetric():
    g = generator(5)
    sizes = set()
    for blur in (BlurConfig(), BlurConfig(sigma_range=(0.2, 1.5))):
        for _ in range(150):
            kernel = random_blur_kernel(blur, g)
            size = kernel.shape[-1]
            sizes.add(size)
            assert kernel.shape == (size, size) and size in KERNEL_SIZES
            torch.testing.assert_close(kernel.sum(), torch.tensor(1.0, dtype=torch.float64))
            # k(-x) = k(x): correlation (what conv2d does) equals convolution.
            torch.testing.assert_close(kernel, kernel.flip(0, 1))
    assert sizes == set(KERNEL_SIZES)
    finals = [random_final_sinc_kernel(DegradationConfig(), g) for _ in range(200)]
    pulses = sum(k.shape == (1, 1) for k in finals)
    assert 20 <= pulses <= 65  # 1 - final_sinc_prob = 0.2 of 200
    assert all(torch.isclose(k.sum(), torch.tensor(1.0, dtype=torch.float64)) for k in finals)


def test_filter2d_matches_reflect_padded_conv_and_handles_tiny_images():
    x = torch.rand(2, 3, 30, 25, generator=generator(6))
    kernels = torch.stack([bivariate_kernel(7, 1.0), bivariate_kernel(7, 2.0, 0.5, 0.3)]).float()
    padded = F.pad(x, (3, 3, 3, 3), mode="reflect")
    expected = torch.stack([F.conv2d(padded[i : i + 1].transpose(0, 1), kernels[i][None, None]) for i in range(2)])
    torch.testing.assert_close(filter2d(x, kernels), expected.squeeze(2), atol=1e-6, rtol=0)
    tiny = torch.rand(2, 3, 4, 1, generator=generator(7))
    assert filter2d(tiny, torch.stack([bivariate_kernel(21, 3.0)] * 2)).shape == tiny.shape
    torch.testing.assert_close(filter2d(tiny, F.pad(torch.ones(1, 1), (10, 10, 10, 10))), tiny)


# ---------------------------------------------------------------------------------------------------------- #
# Noise
# ---------------------------------------------------------------------------------------------------------- #


def test_gaussian_noise_has_the_asked_std_and_gray_noise_is_shared():
    flat = torch.full((2, 3, 256, 256), 0.5)
    sigma = torch.tensor([10.0, 25.0])
    noisy = add_gaussian_noise(flat, sigma, torch.tensor([False, True]), generator(8))
    noise = noisy - flat
    torch.testing.assert_close(noise.std(dim=(1, 2, 3)), sigma / 255, rtol=0.02, atol=0)
    assert not torch.equal(noise[0, 0], noise[0, 1])
    assert torch.equal(noise[1, 0], noise[1, 1]) and torch.equal(noise[1, 0], noise[1, 2])


def test_poisson_noise_has_the_shot_noise_variance():
    # A ramp through all 256 levels: 256 photons per unit, so Var = value / 256 per pixel, times scale^2.
    ramp = (torch.arange(256.0) / 255).repeat(3, 256, 1)[None].repeat(2, 1, 1, 1)
    scale = torch.tensor([1.0, 2.0])
    noise = add_poisson_noise(ramp, scale, torch.tensor([False, False]), generator(9)) - ramp
    expected_var = ramp.mean() / 256 * scale**2
    torch.testing.assert_close(noise.pow(2).mean(dim=(1, 2, 3)), expected_var, rtol=0.03, atol=0)
    torch.testing.assert_close(noise.mean(), torch.tensor(0.0), atol=2e-4, rtol=0)
    gray = add_poisson_noise(ramp, scale, torch.tensor([True, True]), generator(9)) - ramp
    assert torch.equal(gray[:, 0], gray[:, 1])


# ---------------------------------------------------------------------------------------------------------- #
# The whole degradation and the presets
# ---------------------------------------------------------------------------------------------------------- #


def test_same_seed_same_lr_and_different_seed_different_lr():
    hr = smooth_image(3, 96, 96, seed=10)
    first = degrade(hr, DegradationConfig(), generator(11))
    assert torch.equal(first, degrade(hr, DegradationConfig(), generator(11)))
    assert not torch.equal(first, degrade(hr, DegradationConfig(), generator(12)))
    # drawing the kernels apart (as a DataLoader worker does) continues the same random stream
    g = generator(11)
    kernels = draw_kernels(3, DegradationConfig(), g)
    assert torch.equal(first, degrade(hr, DegradationConfig(), g, kernels))


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("preset", PRESETS)
def test_output_size_range_and_8bit_grid(scale, preset):
    hr = smooth_image(2, 99, 70, seed=scale)
    lr = make_lr(hr, scale, preset, generator(13))
    assert lr.shape == (2, 3, 99 // scale, 70 // scale)
    assert lr.min() >= 0 and lr.max() <= 1
    torch.testing.assert_close(lr * 255, (lr * 255).round(), atol=1e-4, rtol=0)


def test_bicubic_preset_is_matlab_bicubic_of_the_cropped_image():
    hr = smooth_image(1, 66, 50, seed=14)
    torch.testing.assert_close(make_lr(hr, 4, "bicubic"), quantize(imresize(hr[..., :64, :48], scale=1 / 4)))


def test_make_lr_rejects_bad_arguments():
    hr = smooth_image(1, 32, 32)
    with pytest.raises(ValueError):
        make_lr(hr, 4, "nearest")
    with pytest.raises(ValueError):
        make_lr(hr, 4, "realesrgan")  # no generator
    with pytest.raises(ValueError):
        make_lr(hr[..., :3, :3], 4, "bicubic")


def high_frequency_share(x):
    """Share of the spectral power beyond half the Nyquist frequency (on either axis)."""
    power = torch.fft.fft2(x - x.mean(dim=(-2, -1), keepdim=True)).abs() ** 2
    fy = torch.fft.fftfreq(x.shape[-2]).abs()[:, None]
    fx = torch.fft.fftfreq(x.shape[-1]).abs()[None, :]
    return (power * (torch.maximum(fy, fx) > 0.25)).sum() / power.sum()


def test_degraded_lr_is_blurrier_than_bicubic_lr_on_average():
    hr = textured_image()
    bicubic = high_frequency_share(make_lr(hr, 4, "bicubic"))
    degraded = torch.stack([high_frequency_share(make_lr(hr, 4, "realesrgan", generator(s))) for s in range(8)])
    assert degraded.mean() < 0.85 * bicubic


def test_first_blur_lowers_high_frequencies():
    hr = textured_image()
    g = generator(15)
    blurred = torch.cat([filter2d(hr, random_blur_kernel(BlurConfig(), g).float()) for _ in range(8)])
    assert high_frequency_share(blurred) < high_frequency_share(hr)


# ---------------------------------------------------------------------------------------------------------- #
# Folders
# ---------------------------------------------------------------------------------------------------------- #


def test_degrade_folder_writes_pairs_skips_unreadable_files_and_is_reproducible(tmp_path):
    hr_dir = tmp_path / "in"
    hr_dir.mkdir()
    for name, (h, w) in {"a": (50, 70), "b": (64, 64)}.items():
        image = (smooth_image(1, h, w, seed=h)[0] * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(image).save(hr_dir / f"{name}.png")
    (hr_dir / "broken.png").write_bytes(b"not an image")

    with pytest.warns(UserWarning, match="broken.png"):
        assert degrade_folder(hr_dir, tmp_path / "out1", scale=4, preset="realesrgan", seed=3) == 2
    with pytest.warns(UserWarning):
        degrade_folder(hr_dir, tmp_path / "out2", scale=4, preset="realesrgan", seed=3)

    assert read_image(tmp_path / "out1" / "hr" / "a.png").size == (48, 68)
    assert read_image(tmp_path / "out1" / "lr" / "a.png").size == (12, 17)
    assert read_image(tmp_path / "out1" / "lr" / "b.png").size == (16, 16)
    for name in ("hr/a.png", "lr/a.png", "lr/b.png"):
        assert (tmp_path / "out1" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes()
    assert not (tmp_path / "out1" / "lr" / "broken.png").exists()
