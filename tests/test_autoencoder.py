"""`instantsr train autoencoder`: a KL autoencoder trained by the one loop, exported as a KLCodec folder that a
ResShift teacher uses as its codec."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from instantsr.cli import main
from instantsr.codecs import KLCodec
from instantsr.config import read_config
from instantsr.methods.autoencoder import AutoencoderConfig, AutoencoderRecipe
from instantsr.model import SRModel
from instantsr.pipeline import Upscaler
from instantsr.train import TrainConfig, Trainer, last_checkpoint
from instantsr.weights import WeightsNotFoundError

TINY = AutoencoderConfig(width="tiny", lpips_net="alex")


def tiny_train_config(data: Path, **kw) -> TrainConfig:
    base = TrainConfig(data=str(data), steps=40, batch_size=4, crop=32, lr=1e-3, num_workers=0, log_every=1,
                       checkpoint_every=40, ema_decay=0.9)
    return replace(base, **kw)


def log_rows(run: Path) -> list[dict]:
    with open(run / "log.csv") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


@pytest.mark.slow
def test_loss_goes_down_and_the_export_is_the_ema_klcodec(hr_folder, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_train_config(hr_folder, val_hr=str(hr_folder), val_images=2, validate_every=40)
    Trainer(AutoencoderRecipe(TINY), cfg, run, "autoencoder").run()
    rows = log_rows(run)
    assert len(rows) == 40 and {"loss", "l1", "lpips", "kl", "latent_std"} <= set(rows[0])
    first, last = (sum(r["loss"] for r in rs) / len(rs) for rs in (rows[:3], rows[-10:]))
    assert last < 0.75 * first
    assert sum(r["l1"] for r in rows[-10:]) / 10 < 0.8 * rows[0]["l1"]  # the reconstruction itself improves
    assert read_config(run / "config.toml")["autoencoder"]["width"] == "tiny"

    codec = KLCodec.from_pretrained(run / "model", local_files_only=True)
    assert codec.latent_channels == 3 and codec.scale_factor == 4
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        z = codec.encode(x)
        assert z.shape == (2, 3, 8, 12) and codec.decode(z).shape == x.shape
    ckpt = last_checkpoint(run)
    ema, trained = load_file(ckpt / "ema.safetensors"), load_file(ckpt / "autoencoder.safetensors")
    exported = codec.state_dict()
    assert set(ema) == {k for k, p in codec.named_parameters()}
    for k in ema:
        torch.testing.assert_close(exported[k], ema[k], rtol=0, atol=0)
    assert any(not torch.equal(ema[k], trained[k]) for k in ema)  # EMA, not the last training weights

    with open(run / "val.csv") as f:
        val = list(csv.DictReader(f))
    assert len(val) == 1 and 10 < float(val[0]["psnr_y"]) < 60 and 0 <= float(val[0]["lpips"]) < 1
    assert (run / "val" / "step_0000040.png").is_file()


def test_a_teacher_trains_on_the_exported_codec(hr_folder, tmp_path, capsys):
    """Both runs through the CLI; the teacher's config names the autoencoder's RUN/model as its codec."""
    ae_run, teacher_run = tmp_path / "ae", tmp_path / "teacher"
    (tmp_path / "ae.toml").write_text(
        '[train]\nsteps = 2\nbatch_size = 2\ncrop = 32\nnum_workers = 0\n'
        '[autoencoder]\nwidth = "tiny"\nlpips_net = "alex"\nlatent_channels = 4\nscaling_factor = 0.5\n')
    assert main(["train", "autoencoder", "--data", str(hr_folder), "--out", str(ae_run),
                 "--config", str(tmp_path / "ae.toml")]) == 0
    (tmp_path / "teacher.toml").write_text(
        '[train]\nsteps = 1\nbatch_size = 2\ncrop = 32\nnum_workers = 0\ndegradation = "bicubic"\n'
        f'[resshift]\nunet = "tiny"\ncodec = "{ae_run / "model"}"\n')
    assert main(["train", "resshift", "--data", str(hr_folder), "--out", str(teacher_run),
                 "--config", str(tmp_path / "teacher.toml")]) == 0
    assert len(log_rows(teacher_run)) == 1
    teacher = SRModel.from_pretrained(teacher_run / "model")
    assert isinstance(teacher.codec, KLCodec)
    assert teacher.codec.latent_channels == 4 and teacher.codec.config.scaling_factor == 0.5
    ae = KLCodec.from_pretrained(ae_run / "model", local_files_only=True)
    for k, v in ae.state_dict().items():  # the teacher carries the autoencoder unchanged
        torch.testing.assert_close(teacher.codec.state_dict()[k], v, rtol=0, atol=0)
    out = Upscaler(teacher).upscale_tensor(torch.rand(1, 3, 16, 16), steps=2, seed=0)
    assert out.shape == (1, 3, 64, 64)


@pytest.mark.parametrize("gan_loss", ["hinge", "nonsaturating"])
def test_gan_is_off_before_gan_start_and_on_after(hr_folder, tmp_path, gan_loss):
    config = replace(TINY, lpips_weight=0.0, gan_weight=0.5, gan_start=2, gan_loss=gan_loss, disc_channels=8,
                     disc_layers=2)
    recipe = AutoencoderRecipe(config)
    assert set(recipe.networks()) == {"autoencoder", "discriminator"}
    start = {k: v.clone() for k, v in recipe.discriminator.state_dict().items()}
    run = tmp_path / "run"
    Trainer(recipe, tiny_train_config(hr_folder, steps=4, checkpoint_every=2, keep_checkpoints=5), run,
            "autoencoder").run()
    rows = log_rows(run)
    assert [r["gan"] == 0 and r["disc"] == 0 for r in rows] == [True, True, False, False]
    for r in rows:
        assert r["loss"] == pytest.approx(r["l1"] + r["kl"] + r["gan"], rel=1e-5)
    at_start, after = (load_file(run / "checkpoints" / f"step_{s:07d}" / "discriminator.safetensors") for s in (2, 4))
    assert all(torch.equal(at_start[k], start[k]) for k in start)  # untouched before gan_start
    assert any(not torch.equal(after[k], start[k]) for k in start)  # trained after
    # Without a GAN weight there is no discriminator at all.
    assert set(AutoencoderRecipe(replace(TINY, lpips_weight=0.0)).networks()) == {"autoencoder"}


def test_config_is_checked_and_missing_lpips_weights_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="down"):
        AutoencoderConfig(down=3)
    with pytest.raises(ValueError, match="width"):
        AutoencoderConfig(width="huge")
    codec = AutoencoderRecipe(replace(TINY, lpips_weight=0.0, down=8, latent_channels=4)).autoencoder
    assert codec.scale_factor == 8 and codec.latent_channels == 4
    monkeypatch.setenv("INSTANTSR_CACHE", str(tmp_path / "empty"))
    with pytest.raises(WeightsNotFoundError, match="instantsr weights fetch"):
        AutoencoderRecipe(TINY)
