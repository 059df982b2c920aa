"""YONOS-SR scale distillation (Eq. 3, Algorithm 1): the student starts as the x2 teacher, both see the same z_t,
the target is the frozen teacher's x0_hat on the less degraded LR, and the loss is the v-weighted MSE to it."""

from __future__ import annotations

import json

import pytest
import torch

from instantsr.cli import main
from instantsr.data import degrade_collate, degrade_pairs
from instantsr.diffusion.vp import snr_plus_one_weight
from instantsr.methods.yonos import YonosConfig, YonosRecipe
from instantsr.model import encode_condition

from .conftest import smooth_image
from .test_train import losses, tiny_train_config


class Context:
    """A StepContext stand-in: a seeded generator; `update` keeps the loss."""

    def __init__(self, seed=0):
        self.generator = torch.Generator().manual_seed(seed)
        self.losses = []

    def update(self, name, loss):
        self.losses.append((name, loss))


@pytest.fixture
def teacher_x2(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "x2"
    YonosRecipe(YonosConfig(unet="tiny", scale=2)).sr_model().save_pretrained(folder)
    return folder


def record_inputs(net, into: list):
    """Keep (x_t, t_index, cond) of every forward call of `net`."""
    return net.register_forward_pre_hook(lambda m, args: into.append(tuple(args)))


def test_target_is_the_frozen_teachers_prediction_on_the_less_degraded_lr(teacher_x2):
    recipe = YonosRecipe(YonosConfig(unet="tiny", scale=4, teacher=str(teacher_x2)))
    assert recipe.lr_scales == (2, 4)
    for (k, a), b in zip(recipe.backbone.state_dict().items(), recipe.teacher.backbone.state_dict().values()):
        assert torch.equal(a, b), k  # the student starts as the teacher
    assert not any(p.requires_grad for p in recipe.teacher.parameters())
    assert all(p.requires_grad for p in recipe.backbone.parameters())

    items = [(smooth_image(32, 32, i), 100 + i) for i in range(2)]  # (HR crop, seed), as the dataset gives
    hr, lr = degrade_pairs(degrade_collate(items, scale=4), scale=(2, 4))  # the same kernels and noise draws
    seen_student, seen_teacher = [], []
    hooks = [record_inputs(recipe.backbone, seen_student), record_inputs(recipe.teacher.backbone, seen_teacher)]
    ctx = Context(seed=3)
    recipe.training_step(hr, lr, ctx)
    for h in hooks:
        h.remove()
    [(x_s, t_s, cond_s)], [(x_t, t_t, cond_t)] = seen_student, seen_teacher
    assert torch.equal(x_s, x_t) and torch.equal(t_s, t_t)  # one z_t, one t for both
    codec = recipe.codec
    torch.testing.assert_close(cond_t.y, encode_condition(codec, lr[2], 2).y)  # teacher: degraded by 2/N
    torch.testing.assert_close(cond_s.y, encode_condition(codec, lr[4], 4).y)  # student: by 1/N
    assert (cond_t.y - cond_s.y).abs().max() > 1e-3  # the two conditions differ: the test tells them apart

    # the loss, computed independently: (1 + alpha^2/sigma^2) ||student x0_hat - teacher x0_hat||^2 on that z_t
    with torch.no_grad():
        x0 = codec.encode(hr * 2 - 1)
        student = recipe.sr_model().denoiser
        target = recipe.teacher.denoiser(x_s, t_s, cond_t)
        mse = (student(x_s, t_s, cond_s) - target).pow(2).flatten(1).mean(1)
        expected = (snr_plus_one_weight(t_s, recipe.schedule, x0).reshape(-1) * mse).mean()
        plain = (snr_plus_one_weight(t_s, recipe.schedule, x0).reshape(-1)
                 * (student(x_s, t_s, cond_s) - x0).pow(2).flatten(1).mean(1)).mean()
    [(name, loss)] = ctx.losses
    assert name == "denoiser"
    torch.testing.assert_close(loss.detach(), expected)
    assert abs(float(plain) - float(expected)) > 1e-4  # not the raw-data loss (Eq. 2)


def test_a_teacher_of_the_wrong_scale_is_one_line(teacher_x2):
    with pytest.raises(ValueError, match="x8 student needs a x4 teacher"):
        YonosRecipe(YonosConfig(unet="tiny", scale=8, teacher=str(teacher_x2)))


@pytest.mark.slow
def test_train_yonos_x4_from_x2_through_the_cli(teacher_x2, hr_folder, tmp_path):
    config = tmp_path / "x4.toml"
    cfg = tiny_train_config(hr_folder, steps=4, checkpoint_every=4)
    config.write_text(f'[train]\ndata = "{hr_folder}"\nsteps = 4\nbatch_size = 2\ncrop = {cfg.crop}\n'
                      'num_workers = 0\ncheckpoint_every = 4\nlog_every = 1\n[yonos]\nunet = "tiny"\n')
    run = tmp_path / "x4"
    assert main(["train", "yonos", "--scale", "4", "--teacher", str(teacher_x2), "--config", str(config),
                 "--out", str(run)]) == 0
    assert len(losses(run)) == 4
    index = json.loads((run / "model" / "model_index.json").read_text())
    assert (index["method"], index["family"], index["scale"], index["steps"]) == ("yonos", "vp", 4, 1)


# ---- the Stable Diffusion path: a tiny random SD-layout folder ------------------------------------------
def test_sd_unet_starts_as_the_text_to_image_unet_and_trains_and_upscales(sd_folder, hr_folder, tmp_path):
    from diffusers import UNet2DConditionModel

    from instantsr.diffusion.family import Condition
    from instantsr.train import Trainer

    recipe = YonosRecipe(YonosConfig(sd=str(sd_folder), scale=4))
    net = recipe.backbone
    assert net.unet.conv_in.in_channels == 8 and not net.unet.conv_in.weight[:, 4:].any()
    sd = UNet2DConditionModel.from_pretrained(sd_folder / "unet")
    x, y, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    with torch.no_grad():  # y's inputs start at zero and the context at zeros: the SD UNet's own output
        torch.testing.assert_close(net(x, t, Condition(None, y)), sd(x, t, torch.zeros(2, 77, 16)).sample)
    assert recipe.codec.scale_factor == 2 and recipe.codec.config.scaling_factor == 0.18215

    run = tmp_path / "run"
    Trainer(recipe, tiny_train_config(hr_folder, steps=2, checkpoint_every=2), run, "yonos").run()
    assert len(losses(run)) == 2
    index = json.loads((run / "model" / "model_index.json").read_text())
    assert (index["backbone"], index["codec"]) == ("SDConditionalUNet", "KLCodec")
    lr_dir = tmp_path / "lr"
    from instantsr.io import read_image, save_image

    save_image(smooth_image(12, 16, 0), lr_dir / "im0.png")
    assert main(["upscale", "-i", str(lr_dir), "-o", str(tmp_path / "sr"), "-m", str(run)]) == 0
    assert read_image(tmp_path / "sr" / "im0.png").rgb.shape == (3, 48, 64)


def test_latent_scale_gives_the_codec_unit_variance_latents(hr_folder, tmp_path):
    """configs/yonos/latent_scale.py stores 1 / std of the latents as the codec's scaling_factor (SD's 0.18215)."""
    import subprocess
    import sys
    from pathlib import Path

    from instantsr.codecs import KLCodec
    from instantsr.data import HRCropDataset
    from instantsr.methods.autoencoder import AutoencoderConfig, build_autoencoder

    build_autoencoder(AutoencoderConfig(width="tiny", down=4, latent_channels=4)).save_pretrained(tmp_path / "ae")
    script = Path(__file__).parents[1] / "configs" / "yonos" / "latent_scale.py"
    subprocess.run([sys.executable, str(script), str(tmp_path / "ae"), str(hr_folder), "8"], check=True,
                   capture_output=True)
    codec = KLCodec.from_pretrained(tmp_path / "ae")
    assert codec.config.scaling_factor != 1.0 and codec.vae.config.scaling_factor == codec.config.scaling_factor
    dataset = HRCropDataset(hr_folder, crop=128, scales=(1.0, 0.75, 0.5))
    with torch.no_grad():  # the same 8 crops as the script draws: latents now of unit standard deviation
        picks = torch.randint(len(dataset), (8,), generator=torch.Generator().manual_seed(0)).tolist()
        z = codec.encode(torch.stack([dataset[(i, s)][0] for s, i in enumerate(picks)]) * 2 - 1)
    assert abs(float(z.std()) - 1) < 1e-3


def test_a_fixed_pixel_unshuffle_factor_gives_every_scale_one_latent_so_students_start_from_teachers(tmp_path):
    torch.manual_seed(0)
    x2 = YonosRecipe(YonosConfig(unet="tiny", scale=2, codec="pixel_unshuffle:4"))
    x2.sr_model().save_pretrained(tmp_path / "x2")
    assert x2.codec.config.factor == 4 and x2.backbone.config.latent_channels == 48
    x4 = YonosRecipe(YonosConfig(unet="tiny", scale=4, codec="pixel_unshuffle:4", teacher=str(tmp_path / "x2")))
    hr, lr = degrade_pairs(degrade_collate([(smooth_image(32, 32, 0), 1)], scale=4), scale=(2, 4))
    assert torch.isfinite(x4.training_step(hr, lr, Context())["loss"])
    warm = YonosRecipe(YonosConfig(unet="tiny", scale=8, codec="pixel_unshuffle:4", init=str(tmp_path / "x2")))
    for a, b in zip(warm.backbone.state_dict().values(), x2.backbone.state_dict().values()):
        assert torch.equal(a, b)  # init: a warm start from another model's backbone
    with pytest.raises(ValueError, match="pixel_unshuffle:F with a whole factor"):
        YonosRecipe(YonosConfig(unet="tiny", codec="pixel_unshuffle:four"))
