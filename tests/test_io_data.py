"""Image I/O round trips, datasets, codecs, the conditional UNet and the model folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from instantsr.codecs import KLCodec, PixelUnshuffleCodec
from instantsr.config import read_config, write_config
from instantsr.data import (EmptyFolderError, HRCropDataset, ImageFolder, PairedFolder, StepSampler, degrade_collate,
                            degrade_pairs)
from instantsr.degrade import make_lr
from instantsr.diffusion.resshift import ResShiftSchedule
from instantsr.io import ImageReadError, read_image, save_image
from instantsr.model import ModelFolderError, SRModel
from instantsr.nets.unet import ConditionalUNet, adapt_extra_channels
from instantsr.pipeline import Upscaler

from .conftest import smooth_image


# ---- io ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".png", ".bmp", ".webp"])
def test_8bit_round_trip_is_exact(tmp_path, suffix):
    arr = np.random.default_rng(0).integers(0, 256, (13, 17, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / f"a{suffix}", **({"lossless": True} if suffix == ".webp" else {}))
    img = read_image(tmp_path / f"a{suffix}")
    assert img.bits == 8 and not img.grey and img.alpha is None and img.size == (13, 17)
    save_image(img.rgb, tmp_path / f"b{suffix}")
    assert np.array_equal(np.array(Image.open(tmp_path / f"b{suffix}").convert("RGB")), arr)


def test_16bit_png_round_trip_is_exact(tmp_path):
    arr = np.random.default_rng(1).integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    rgb = torch.from_numpy(arr.astype(np.float32) / 65535).permute(2, 0, 1)
    save_image(rgb, tmp_path / "a.png", bits=16)
    img = read_image(tmp_path / "a.png")
    assert img.bits == 16
    assert np.array_equal((img.rgb.numpy() * 65535).round().astype(np.uint16).transpose(1, 2, 0), arr)


def test_grey_and_alpha_are_kept(tmp_path):
    grey = np.random.default_rng(2).integers(0, 256, (10, 12), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.grey and img.rgb.shape == (3, 10, 12) and torch.equal(img.rgb[0], img.rgb[2])
    save_image(img.rgb, tmp_path / "g2.png", grey=True)
    assert Image.open(tmp_path / "g2.png").mode == "L"
    assert np.array_equal(np.array(Image.open(tmp_path / "g2.png")), grey)

    rgba = np.random.default_rng(3).integers(0, 256, (10, 12, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.alpha is not None and img.alpha.shape == (1, 10, 12)
    save_image(img.rgb, tmp_path / "a2.png", alpha=img.alpha)
    assert np.array_equal(np.array(Image.open(tmp_path / "a2.png")), rgba)


def test_unreadable_files_raise_one_clear_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="bad.png: not a readable image"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.png")


def test_save_is_atomic(tmp_path, monkeypatch):
    save_image(torch.rand(3, 8, 8), tmp_path / "out.png")
    before = (tmp_path / "out.png").read_bytes()

    def broken_save(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        save_image(torch.rand(3, 8, 8), tmp_path / "out.png")
    assert (tmp_path / "out.png").read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temp file left


# ---- data -------------------------------------------------------------------------------------------------
def test_hr_crops_are_reproducible_and_small_images_padded(tmp_path):
    save_image(smooth_image(40, 50, 0), tmp_path / "hr" / "a.png")
    save_image(smooth_image(100, 90, 1), tmp_path / "hr" / "sub" / "b.png")  # sub-folders are searched
    (tmp_path / "hr" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.warns(UserWarning, match="broken.jpg"):
        ds = HRCropDataset(tmp_path / "hr", crop=64)
    assert len(ds) == 2
    with pytest.warns(UserWarning, match="reflect-padded"):
        a, seed = ds[(0, 7)]
    assert a.shape == (3, 64, 64) and seed == 7
    assert torch.equal(ds[(1, 5)][0], ds[(1, 5)][0]) and not torch.equal(ds[(1, 5)][0], ds[(1, 6)][0])


def _windows(image: torch.Tensor, size: int) -> torch.Tensor:
    """Every size x size window of a 3xHxW image, as a batch."""
    w = image.unfold(1, size, 1).unfold(2, size, 1)  # 3 x rows x cols x size x size
    return w.permute(1, 2, 0, 3, 4).reshape(-1, 3, size, size)


def test_multiscale_crops_are_downscaled_regions(tmp_path):
    image = torch.rand(3, 60, 72, generator=torch.Generator().manual_seed(0))
    save_image(image, tmp_path / "hr" / "a.png")
    image = (image * 255).round() / 255
    ds = HRCropDataset(tmp_path / "hr", crop=16, augment=False, scales=(0.5,))
    crop = ds[(0, 3)][0]
    assert crop.shape == (3, 16, 16)
    # a 32 px window of the image, downscaled by half (antialiased bicubic), and no other
    smaller = F.interpolate(_windows(image, 32), size=(16, 16), mode="bicubic", antialias=True).clamp(0, 1)
    err = (smaller - crop).abs().amax(dim=(1, 2, 3))
    assert float(err.min()) < 1e-6 and int((err < 1e-3).sum()) == 1
    # Scales that would leave no crop are skipped: at 0.2 the 60 px side is 12 px < 16, so 1.0 is used.
    ds = HRCropDataset(tmp_path / "hr", crop=16, augment=False, scales=(1.0, 0.2))
    for seed in range(4):
        assert float((_windows(image, 16) - ds[(0, seed)][0]).abs().amax(dim=(1, 2, 3)).min()) < 1e-6
    with pytest.raises(ValueError, match="HR scales"):
        HRCropDataset(tmp_path / "hr", scales=(1.5,))


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyFolderError, match="no images"):
        HRCropDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        ImageFolder(tmp_path / "nope")


def test_step_sampler_depends_only_on_step_and_rank():
    def first(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    full = first(StepSampler(10, 4, seed=1), 12)
    assert first(StepSampler(10, 4, seed=1, start_step=2), 4) == full[8:12]  # resume at step 2
    assert first(StepSampler(10, 4, seed=1, rank=1), 4) != full[:4]


def test_degrade_collate_gives_matching_pairs(hr_folder):
    ds = HRCropDataset(hr_folder, crop=64)
    items = [ds[(i, 100 + i)] for i in range(3)]
    batch = degrade_collate(items, scale=4)
    hr, lr = degrade_pairs(batch, "cpu", scale=4)
    assert hr.shape == (3, 3, 64, 64) and lr.shape == (3, 3, 16, 16)
    assert torch.equal(degrade_pairs(degrade_collate(items, scale=4), "cpu", scale=4)[1], lr)  # seeded by the items
    other = [ds[(i, 200 + i)] for i in range(3)]
    assert not torch.equal(degrade_pairs(degrade_collate(other, scale=4), "cpu", scale=4)[1], lr)
    # the kernels drawn in the worker are the ones degrade() would draw itself from the same stream
    hr_b, kernels, _ = degrade_collate(items, scale=4, preset="bicubic")
    assert kernels is None and torch.equal(degrade_pairs((hr_b, None, 0), "cpu", 4, "bicubic")[1],
                                           make_lr(hr_b, 4, "bicubic"))
    # clean_fraction: the first third of the batch gets bicubic LR, the rest the same Real-ESRGAN LR as before
    _, mixed = degrade_pairs(degrade_collate(items, scale=4), "cpu", scale=4, clean_fraction=1 / 3)
    assert torch.equal(mixed[:1], make_lr(hr[:1], 4, "bicubic")) and not torch.equal(mixed[:1], lr[:1])
    assert torch.equal(mixed[1:], lr[1:])
    with pytest.raises(ValueError, match="clean_fraction"):
        degrade_pairs(degrade_collate(items, scale=4), "cpu", scale=4, clean_fraction=-0.5)


def test_paired_folder_matches_stems(tmp_path):
    for name in ("a", "b", "c"):
        save_image(torch.rand(3, 8, 8), tmp_path / "lr" / f"{name}.png")
    for name in ("a", "b"):
        save_image(torch.rand(3, 32, 32), tmp_path / "hr" / f"{name}.png")
    with pytest.warns(UserWarning, match="no partner"):
        pairs = PairedFolder(tmp_path / "lr", tmp_path / "hr")
    name, lr, hr = pairs[1]
    assert len(pairs) == 2 and name == "b" and lr.shape == (3, 8, 8) and hr.shape == (3, 32, 32)


# ---- codecs, UNet, model folder ----------------------------------------------------------------------------
def test_pixel_unshuffle_codec_is_exact():
    codec = PixelUnshuffleCodec(factor=4)
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (2, 48, 8, 12) and codec.latent_channels == 48 and codec.scale_factor == 4
    assert torch.equal(codec.decode(z), x)


def test_kl_codec_shapes_and_folder_round_trip(tmp_path):
    codec = KLCodec(block_out_channels=(8, 16), latent_channels=4, layers_per_block=1, norm_num_groups=4).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (1, 4, 16, 16) and codec.scale_factor == 2
    assert codec.decode(z).shape == x.shape
    codec.save_pretrained(tmp_path / "kl")
    again = KLCodec.from_pretrained(tmp_path / "kl")
    torch.testing.assert_close(again.encode(x), z)


def test_extra_input_channels_start_with_no_effect():
    torch.manual_seed(0)
    net = ConditionalUNet.from_preset("tiny", latent_channels=48).eval()
    wider = adapt_extra_channels(net, 1).eval()
    x, lq, t = torch.randn(1, 48, 8, 8), torch.randn(1, 3, 8, 8), torch.tensor([3])
    with torch.no_grad():
        torch.testing.assert_close(wider(x, t, torch.cat([lq, torch.randn(1, 1, 8, 8)], 1)), net(x, t, lq))
        torch.testing.assert_close(wider(x, t, lq), net(x, t, lq))  # extra channels default to zeros
        assert net.encoder_features(x, t, lq).shape == (1, 32, 4, 4)


def test_model_folder_round_trip_and_clear_errors(tmp_path):
    torch.manual_seed(0)
    model = SRModel(ConditionalUNet.from_preset("tiny", latent_channels=48), PixelUnshuffleCodec(4),
                    ResShiftSchedule(), scale=4, method="sinsr", steps=1, max_steps=1).eval()
    model.save_pretrained(tmp_path / "m")
    again = SRModel.from_pretrained(tmp_path / "m")
    lq = torch.rand(1, 3, 12, 16)
    torch.testing.assert_close(Upscaler(again).upscale_tensor(lq, seed=3), Upscaler(model).upscale_tensor(lq, seed=3))
    assert again.steps == 1 and again.method == "sinsr" and again.multiple == 2
    with pytest.raises(ModelFolderError, match="not an instantsr model folder"):
        SRModel.from_pretrained(tmp_path)
    (tmp_path / "m" / "backbone" / "config.json").write_text(
        '{"_class_name": "ConditionalUNet", "latent_channels": 12}')
    with pytest.raises(ModelFolderError, match="cannot load the model"):
        SRModel.from_pretrained(tmp_path / "m")


def test_config_round_trip(tmp_path):
    cfg = {"method": "resshift", "train": {"steps": 3, "lr": 1e-4, "data": "a b", "flag": True},
           "resshift": {"levels": [1, 2]}}
    write_config(tmp_path / "c.toml", cfg)
    assert read_config(tmp_path / "c.toml") == cfg
    (tmp_path / "bad.toml").write_text("steps = = 3")
    with pytest.raises(ValueError, match="not valid TOML"):
        read_config(tmp_path / "bad.toml")
